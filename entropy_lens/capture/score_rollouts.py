"""``entropy-lens score``: re-score the rollouts a training run already saved, teacher-forced.

A trainer's rollout dump holds the exact prompts and responses it trained on, but (at best) only
sequence-level scalars.  Re-reading each ``prompt + response`` once under the checkpoint that sampled it
gives back the per-token entropy, log-prob, Σp², Σp² log p and varentropy — without generating anything — in the same store that
``entropy-lens collect`` writes, so every analysis runs on it unchanged.  The dump formats, and which
checkpoint scores which step, are in :mod:`entropy_lens.capture.rollouts`.

Tokenisation reproduces what the trainer saw, as far as the text allows: dumps are decoded with
``skip_special_tokens=True``, so the EOS that ended a response is not in the text.  With
``--max-response-tokens`` (the trainer's response limit), a response shorter than the limit ended with EOS and
gets it back, so its token is scored as the trainer did; without it, responses are scored exactly as written.
Rows whose text does not survive ``decode(encode(x)) == x``, and string prompts that lack the chat template's
special tokens (verl strips them when it decodes ``input``), are counted and reported.

Grading keeps the stored reward; ``correct`` comes from Math-Verify on the stored text wherever the row has
an answer, else from the reward's sign.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from entropy_lens.capture.config import SamplingRecord, ScoreConfig
from entropy_lens.capture.rollouts import (
    MATCH_RULES,
    ROLLOUT_FORMATS,
    BadRow,
    Fields,
    MatchRule,
    Rollout,
    RolloutFormat,
    detect_format,
    format_files,
    read_rollouts,
)
from entropy_lens.capture.sampling import Response, encode_prompt, eos_token_ids
from entropy_lens.capture.scoring import score
from entropy_lens.capture.tables import grade_columns, layout_tables, vocab_table
from entropy_lens.checkpoints import Checkpoint, discover
from entropy_lens.errors import UserError
from entropy_lens.models import default_dtype, load_checkpoint, resolve_device
from entropy_lens.store import StoreWriter
from entropy_lens.tasks import Verdict

SHOW = 5  # file:line examples shown per problem in the summary


@dataclass
class ScoreSummary:
    out: Path
    format: str
    scored_by: dict[int, int]  # rollout step -> checkpoint step, for the steps written now
    skipped: list[int]  # already complete
    unmatched: dict[int, int]  # rollout step -> rows, no checkpoint
    match: str
    lag: int
    rows: int = 0
    tokens: int = 0
    seconds: float = 0.0
    bad_rows: list[BadRow] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)  # where
    untemplated: list[str] = field(default_factory=list)
    graded: int = 0
    disagreements: list[str] = field(default_factory=list)
    ungraded: int = 0  # neither a reward nor an answer

    def __str__(self) -> str:
        def ex(wheres: list[str]) -> str:
            return ", ".join(wheres[:SHOW]) + (", ..." if len(wheres) > SHOW else "")

        rate = self.tokens / self.seconds if self.seconds > 0 else 0.0
        lines = [f"scored {len(self.scored_by)} step(s) of {self.format} rollouts "
                 f"({self.rows:,} responses, {self.tokens:,} tokens, {rate:,.0f} tokens/s)"
                 f"{f', skipped {len(self.skipped)} already complete' if self.skipped else ''}; "
                 f"store: {self.out}"]
        if self.scored_by:
            pairs = ", ".join(f"{s}<-{c}" for s, c in sorted(self.scored_by.items()))
            lines.append(f"  checkpoints (rollout step<-checkpoint, {self.match}, lag {self.lag}): {pairs}")
        if self.unmatched:
            lines.append(f"  NOT SCORED: {sum(self.unmatched.values()):,} rollout(s) in {len(self.unmatched)} "
                         f"step(s) {sorted(self.unmatched)} have no checkpoint under --match {self.match} "
                         f"(policy step = step - {self.lag}); add the checkpoint or change --match/--policy-lag")
        if self.bad_rows:
            lines.append(f"  skipped {len(self.bad_rows)} malformed row(s): "
                         + "; ".join(f"{b.where} {b.why}" for b in self.bad_rows[:SHOW]))
        if self.mismatches:
            lines.append(f"  {len(self.mismatches)} row(s) do not re-encode to the same text "
                         f"(decode(encode(x)) != x; scored as re-encoded): {ex(self.mismatches)}")
        if self.untemplated:
            lines.append(f"  {len(self.untemplated)} text prompt(s) lack the chat template's special tokens "
                         f"(dumps decoded with skip_special_tokens drop them), so their tokens differ from "
                         f"training: {ex(self.untemplated)}")
        if self.graded:
            lines.append(f"  Math-Verify graded {self.graded:,} response(s) against their answers; "
                         f"{len(self.disagreements)} disagree with the stored reward (reward>0 vs correct)"
                         + (f": {ex(self.disagreements)}" if self.disagreements else ""))
        if self.ungraded:
            lines.append(f"  {self.ungraded} response(s) have neither a reward nor an answer: correct=false, "
                         "reward=NaN")
        return "\n".join(lines)


def fields_for(cfg: ScoreConfig, fmt: RolloutFormat) -> Fields:
    """The field names of ``fmt``'s rows, as renamed by the ``--*-field`` flags; named ones are required."""
    named = {k for k in ("prompt", "response", "answer", "reward", "step")
             if getattr(cfg, f"{k}_field") is not None}
    pick = {k: getattr(cfg, f"{k}_field") or getattr(fmt, k) for k in ("prompt", "response", "answer", "step")}
    reward = cfg.reward_field or fmt.reward
    return Fields(pick["prompt"], pick["response"], pick["answer"], reward, pick["step"], fmt.advantage,
                  frozenset(getattr(cfg, f"{k}_field") for k in named))


def settings(cfg: ScoreConfig, fmt: RolloutFormat, f: Fields, lag: int) -> dict:
    """The manifest settings of a ``score`` store: what must match for a re-run to resume it."""
    record = SamplingRecord(float(cfg.temperature), 1.0, cfg.max_response_tokens, cfg.chat_template)
    return {"rollouts": str(Path(cfg.rollouts).resolve()), "format": fmt.name, "prompt_field": f.prompt,
            "response_field": f.response, "answer_field": f.answer, "reward_field": f.reward,
            "step_field": f.step, "match": cfg.match, "policy_lag": lag,
            "max_response_tokens": cfg.max_response_tokens, "chat_template": cfg.chat_template,
            "skip_bad_rows": cfg.skip_bad_rows, "temperature": cfg.temperature,
            "entropy_temperature": cfg.temperature, "sampling": record.to_settings()}


# --------------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Inputs:
    """The checked flags of a ``score`` run."""

    path: Path  # --rollouts
    fmt: RolloutFormat
    rule: MatchRule
    lag: int
    fields: Fields
    files: list[Path]


def check_inputs(cfg: ScoreConfig) -> Inputs:
    """Every flag checked before anything is read or written; bad input is a UserError."""
    path = Path(cfg.rollouts)
    if not path.exists():
        raise UserError(f"{path}: no such rollout file or folder; check --rollouts")
    fmt = ROLLOUT_FORMATS.get(cfg.format) if cfg.format is not None else ROLLOUT_FORMATS.get(detect_format(path))
    rule = MATCH_RULES.get(cfg.match)
    if cfg.temperature <= 0:
        raise UserError(f"--temperature {cfg.temperature}: must be > 0")
    if cfg.batch_size < 1 or (cfg.max_response_tokens is not None and cfg.max_response_tokens < 1):
        raise UserError("--batch-size and --max-response-tokens must be at least 1")
    lag = fmt.policy_lag if cfg.policy_lag is None else cfg.policy_lag
    f = fields_for(cfg, fmt)
    files = format_files(fmt, path)
    if not files:
        raise UserError(f"{path}: no {fmt.name} rollout files ({fmt.description})")
    return Inputs(path, fmt, rule, lag, f, files)


@dataclass
class RolloutIndex:
    """Pass 1 over the dump: the files holding each step's rows, the number of rows per step, the bad rows."""

    files: dict[int, list[Path]] = field(default_factory=dict)
    rows: dict[int, int] = field(default_factory=dict)
    bad: list[BadRow] = field(default_factory=list)


def index_rollouts(inputs: Inputs, *, skip_bad_rows: bool) -> RolloutIndex:
    """Validate every row (stopping at the first bad one unless skipping) and index steps → files."""
    index = RolloutIndex()
    for file in tqdm(inputs.files, desc="reading rollouts", unit="file", file=sys.stderr, disable=None,
                     leave=False):
        for r in read_rollouts(file, inputs.fields):
            if isinstance(r, BadRow):
                if not skip_bad_rows:
                    raise UserError(f"{r.where}: malformed {inputs.fmt.name} rollout: {r.why}; fix or remove the "
                                    "row, or pass --skip-bad-rows")
                index.bad.append(r)
                continue
            if file not in index.files.setdefault(r.step, []):
                index.files[r.step].append(file)
            index.rows[r.step] = index.rows.get(r.step, 0) + 1
    if not index.rows:
        bad = index.bad
        raise UserError(f"{inputs.path}: no usable rollouts in {len(inputs.files)} file(s)"
                        + (f" ({len(bad)} malformed, e.g. {bad[0].where}: {bad[0].why})" if bad else ""))
    return index


def score_rollouts(cfg: ScoreConfig) -> ScoreSummary:
    """Run ``entropy-lens score``; see the module docstring.  Every input check happens before the store is
    opened, so bad input leaves nothing behind."""
    inputs = check_inputs(cfg)
    index = index_rollouts(inputs, skip_bad_rows=cfg.skip_bad_rows)
    checkpoints = {c.step: c for c in discover(cfg.checkpoints)}
    plan = {s: inputs.rule(sorted(checkpoints), s - inputs.lag) for s in sorted(index.rows)}
    if all(c is None for c in plan.values()):  # before the store exists: nothing is written
        raise UserError(f"{cfg.checkpoints}: no checkpoint scores any rollout: rollout steps {sorted(plan)} "
                        f"(policy step = step - {inputs.lag}) have none under --match {cfg.match} among checkpoint "
                        f"steps {sorted(checkpoints)}; add the checkpoints or change --match/--policy-lag")
    summary = ScoreSummary(Path(cfg.out), inputs.fmt.name, {}, [],
                           {s: index.rows[s] for s, c in plan.items() if c is None}, cfg.match, inputs.lag,
                           bad_rows=index.bad)
    device = resolve_device(cfg.device)

    t0 = time.perf_counter()
    with StoreWriter(cfg.out, kind="score", settings=settings(cfg, inputs.fmt, inputs.fields, inputs.lag)) as store:
        todo: dict[int, list[int]] = {}  # checkpoint step -> the rollout steps it scores
        for s, c in plan.items():
            if c is None:
                continue
            if store.is_complete(s):
                summary.skipped.append(s)
            else:
                todo.setdefault(c, []).append(s)
        scored_by = {int(k): v for k, v in store.manifest.get("info", {}).get("scored_by", {}).items()}
        store.update_info(checkpoints={str(c.step): str(c.path) for c in checkpoints.values()}, device=device,
                          unmatched_steps={str(s): n for s, n in summary.unmatched.items()})
        bar = tqdm(total=sum(len(v) for v in todo.values()), desc="steps", unit="step", file=sys.stderr,
                   disable=None)
        for c in sorted(todo):
            model, tokenizer = load_checkpoint(checkpoints[c].path, device=device, dtype=default_dtype(device))
            if not (store.root / "vocab.parquet").exists():
                store.write_table("vocab", vocab_table(tokenizer, model))
            for s in todo[c]:
                bar.set_postfix(step=s, checkpoint=c)
                rows = [r for file in index.files[s] for r in read_rollouts(file, inputs.fields, only_step=s)]
                rows = [r for r in rows if isinstance(r, Rollout)]
                tokens, samples = score_step(s, rows, model, tokenizer, cfg, inputs.fmt.name, summary)
                # Recorded before the step is listed complete: a kill in between leaves an entry that the
                # re-run rewrites with the same value, never a complete step without one.
                scored_by[s] = c
                store.update_info(scored_by={str(k): v for k, v in sorted(scored_by.items())})
                store.write_step(s, tokens=tokens, samples=samples)
                summary.scored_by[s] = c
                summary.rows += len(rows)
                summary.tokens += len(tokens["token_id"])
                bar.update()
            del model
        bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


# --------------------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------------------

def _template_markers(tokenizer) -> list[str]:
    """Special tokens the chat template writes around a user turn (empty when there is no template)."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                             add_generation_prompt=True)
    except Exception:
        return []
    return [t for t in tokenizer.all_special_tokens if t and t in text]


def encode_rollout_prompt(tokenizer, prompt: str | list, *, chat_template: bool, where: str) -> tuple[str, list[int]]:
    """(the text the model read, its token ids): message lists through the chat template with the
    generation prompt; text as is (``add_special_tokens=False``: it already carries any template), or through
    :func:`~entropy_lens.capture.sampling.encode_prompt` with ``chat_template``, as ``collect`` encodes."""
    if isinstance(prompt, list):
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(f"{where}: the prompt is a list of chat messages but the checkpoint's tokenizer has "
                            "no chat template; save the tokenizer with its template")
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return text, tokenizer(text, add_special_tokens=False)["input_ids"]
    if chat_template:
        ids = encode_prompt(tokenizer, prompt, chat_template=True)
        return tokenizer.decode(ids, skip_special_tokens=False), ids
    return prompt, tokenizer(prompt, add_special_tokens=False)["input_ids"]


@dataclass
class EncodedStep:
    """A step's rollouts as token ids: the distinct prompts (the text the model read, its ids) and one
    (prompt_id, sample_id) job and response per row."""

    prompts: list[tuple[str, list[int]]]
    jobs: list[tuple[int, int]]
    responses: list[Response]


def encode_step(rows: list[Rollout], model, tokenizer, cfg: ScoreConfig, summary: ScoreSummary) -> EncodedStep:
    """Encode a step's rows as the trainer saw them (module docstring).

    ``prompt_id`` is the index of the distinct prompt within the step (first appearance), ``sample_id`` the
    index of the response within its prompt's group, in file order.
    """
    eos = eos_token_ids(model, tokenizer)
    markers = [] if cfg.chat_template else _template_markers(tokenizer)
    pid_of: dict[str, int] = {}
    step = EncodedStep([], [], [])
    group_size: dict[int, int] = {}
    encoded: dict[str, tuple[str, list[int]]] = {}
    for r in rows:
        key = json.dumps(r.prompt, sort_keys=True)
        if key not in encoded:
            encoded[key] = encode_rollout_prompt(tokenizer, r.prompt, chat_template=cfg.chat_template,
                                                 where=r.where)
        text, ids = encoded[key]
        if text not in pid_of:  # one prompt is what the model read: a message list and its rendering are one
            pid_of[text] = len(step.prompts)
            step.prompts.append((text, ids))
        p = pid_of[text]
        ptext, pids = step.prompts[p]
        rids = tokenizer(r.response, add_special_tokens=False)["input_ids"]
        if (tokenizer.decode(pids, skip_special_tokens=False) != ptext
                or tokenizer.decode(rids, skip_special_tokens=False) != r.response):
            summary.mismatches.append(r.where)
        if markers and isinstance(r.prompt, str) and not any(m in r.prompt for m in markers):
            summary.untemplated.append(r.where)
        truncated = False
        if cfg.max_response_tokens is not None and not (rids and rids[-1] in eos):
            # Shorter than the limit: the trainer stopped at an EOS that the dump's decode dropped.
            if len(rids) < cfg.max_response_tokens and tokenizer.eos_token_id is not None:
                rids = rids + [tokenizer.eos_token_id]
            else:
                truncated = True
        step.jobs.append((p, group_size.get(p, 0)))
        group_size[p] = group_size.get(p, 0) + 1
        step.responses.append(Response(token_ids=rids, truncated=truncated))
    return step


def grade_rows(rows: list[Rollout], summary: ScoreSummary) -> list[Verdict]:
    """One verdict per row, on the stored text: Math-Verify against the row's answer where it has one (the
    stored reward, if any, is kept as the reward), else the stored reward's sign (NaN when there is none)."""
    from entropy_lens.tasks.math import count_boxed, extract_boxed, math_verify_answer

    verdicts = []
    for r in rows:
        if r.answer is not None:
            v = math_verify_answer(r.response, r.answer)
            verdicts.append(Verdict(v.answer, v.format_ok, v.correct, v.reward if r.reward is None else r.reward))
            summary.graded += 1
            if r.reward is not None and (r.reward > 0) != v.correct:
                summary.disagreements.append(r.where)
        else:
            correct = r.reward is not None and r.reward > 0
            reward = r.reward if r.reward is not None else float("nan")
            verdicts.append(Verdict(extract_boxed(r.response), count_boxed(r.response) == 1, correct, reward))
            summary.ungraded += r.reward is None
    return verdicts


def score_step(step: int, rows: list[Rollout], model, tokenizer, cfg: ScoreConfig, source: str,
               summary: ScoreSummary) -> tuple[dict, dict]:
    """Encode, teacher-force, grade and tabulate one rollout step."""
    enc = encode_step(rows, model, tokenizer, cfg, summary)
    stats = score(model, [enc.prompts[p][1] for p, _ in enc.jobs], [x.token_ids for x in enc.responses],
                  temperature=cfg.temperature, batch_size=cfg.batch_size)
    tokens, samples = layout_tables(step, enc.jobs, enc.responses, stats, [text for text, _ in enc.prompts],
                                    [r.response for r in rows], source=source)
    samples.update(grade_columns(grade_rows(rows, summary), [r.answer or "" for r in rows]))
    if any(r.advantage is not None for r in rows):
        lengths = [len(x.token_ids) for x in enc.responses]
        adv = [np.nan if r.advantage is None else r.advantage for r in rows]
        tokens["advantage"] = np.repeat(np.asarray(adv, np.float32), lengths)
    return tokens, samples
