"""``entropy-lens score``: re-score the rollouts a training run already saved, teacher-forced.

A trainer's rollout dump holds the exact prompts and responses it trained on, but (at best) only
sequence-level scalars.  Re-reading each ``prompt + response`` once under the checkpoint that sampled it
gives back the per-token entropy, log-prob and Σp² — without generating anything — in the same store that
``entropy-lens collect`` writes, so every analysis runs on it unchanged.

Formats (:data:`ROLLOUT_FORMATS`, detected from the files or named with ``--format``):

``verl``   ``trainer.rollout_data_dir``: ``{step}.jsonl``, rows ``input, output, gts, score, step``.  ``input``
           is the prompt *after* the chat template, so it is encoded as is (``add_special_tokens=False``).
``trl``    GRPOTrainer ``log_completions``: ``completions/completions_{step:05d}.parquet``, columns ``step,
           prompt, completion``, one column per reward function, ``advantage``.  A message-list prompt goes
           through the chat template (``add_generation_prompt=True``); the reward is the sum of the reward
           columns (unweighted: the weights are not logged); ``advantage`` is kept in ``tokens.advantage``.
``jsonl``  any other JSONL/Parquet: ``prompt, response, answer, reward, step`` (rename with the field flags).

Which checkpoint scores step ``s`` (:data:`MATCH_RULES`): the *policy step* of rollout step ``s`` is
``s − lag``.  verl and TRL number a step after the update that follows its rollouts (verl dumps step ``s``
after update ``s``; TRL logs at ``global_step`` after the optimizer step), so the weights that sampled
step ``s`` are those saved as step ``s − 1``: lag 1.  Plain JSONL has lag 0 (its step names the sampling
policy).  ``--policy-lag`` overrides it.  The default rule ``latest-before`` takes the latest checkpoint at
or before the policy step; ``nearest`` and ``exact`` are the alternatives.  Steps with no checkpoint are
counted and reported, never silently dropped.

Tokenisation reproduces what the trainer saw, as far as the text allows: dumps are decoded with
``skip_special_tokens=True``, so the EOS that ended a response is not in the text.  With
``--max-response-tokens`` (the trainer's response limit), a response shorter than the limit ended with EOS and
gets it back, so its token is scored as the trainer did; without it, responses are scored exactly as written.
Rows whose text does not survive ``decode(encode(x)) == x``, and string prompts that lack the chat template's
special tokens (verl strips them when it decodes ``input``), are counted and reported.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from entropy_lens.capture.sampling import Response, encode_prompt, eos_token_ids
from entropy_lens.capture.scoring import score
from entropy_lens.capture.sweep import build_tables, resolve_device, vocab_table
from entropy_lens.checkpoints import Checkpoint, discover
from entropy_lens.errors import UserError
from entropy_lens.models import load_checkpoint
from entropy_lens.registry import Registry
from entropy_lens.store import StoreWriter
from entropy_lens.tasks import EvalSet, Problem, Verdict

SHOW = 5  # file:line examples shown per problem in the summary


# --------------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RolloutFormat:
    """Where a trainer puts its rollout files and what it calls their fields.

    ``reward`` None means "sum every numeric column that is not a known field" (TRL's per-function columns);
    ``answer``/``reward`` fields are optional in the data unless named on the command line.
    """

    name: str
    description: str
    file_re: re.Pattern  # file names of this format; group 1 is the step
    subdirs: tuple[str, ...]  # looked in under the given folder, in order
    prompt: str
    response: str
    answer: str | None
    reward: str | None
    step: str
    policy_lag: int  # rollout step s was sampled by the weights saved as step s - policy_lag
    identifying_keys: tuple[str, ...] = ()  # a row with all of these is this format
    advantage: str | None = None


ROLLOUT_FORMATS: Registry[RolloutFormat] = Registry("rollout format")
for _fmt in (
    RolloutFormat("verl", "verl trainer.rollout_data_dir: {step}.jsonl with input, output, gts, score, step",
                  re.compile(r"^(\d+)\.jsonl$"), ("",), "input", "output", "gts", "score", "step", 1,
                  identifying_keys=("input", "output")),
    RolloutFormat("trl", "TRL GRPOTrainer log_completions: completions/completions_{step:05d}.parquet",
                  re.compile(r"^completions_(\d+)\.parquet$"), ("", "completions", "completions/train"),
                  "prompt", "completion", "answer", None, "step", 1, identifying_keys=("prompt", "completion"),
                  advantage="advantage"),
    RolloutFormat("jsonl", "plain JSONL or Parquet rows: prompt, response, answer, reward, step",
                  re.compile(r"^.*?(\d+)?\.(?:jsonl|parquet)$"), ("",), "prompt", "response", "answer", "reward",
                  "step", 0),
):
    ROLLOUT_FORMATS.register(_fmt.name)(_fmt)


def _natural_key(p: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))


def format_files(fmt: RolloutFormat, path: Path) -> list[Path]:
    """The files of ``fmt`` at ``path`` (one file, or a folder), in step order."""
    if path.is_file():
        return [path]
    for sub in fmt.subdirs:
        d = path / sub if sub else path
        files = sorted((f for f in d.glob("*") if f.is_file() and fmt.file_re.match(f.name)), key=_natural_key) \
            if d.is_dir() else []
        if files:
            return files
    return []


def _first_row(path: Path) -> dict | None:
    try:
        return next((row for _, row in _raw_rows(path) if isinstance(row, dict)), None)
    except UserError:
        return None


def detect_format(path: str | Path) -> str:
    """``verl`` for ``{step}.jsonl`` files whose rows have ``input``/``output``; ``trl`` for
    ``completions_N.parquet`` files (here, or under ``completions/``); ``jsonl`` for any other JSONL/Parquet."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such rollout file or folder; check --rollouts")
    for name in ("trl", "verl"):
        fmt = ROLLOUT_FORMATS.get(name)
        files = format_files(fmt, path)
        if files and fmt.file_re.match(files[0].name):
            row = _first_row(files[0])
            if row is None or all(k in row for k in fmt.identifying_keys):
                return name
    if format_files(ROLLOUT_FORMATS.get("jsonl"), path):
        return "jsonl"
    raise UserError(f"{path}: no rollout files found; expected verl {{step}}.jsonl files, TRL "
                    "completions/completions_N.parquet, or .jsonl/.parquet files")


# --------------------------------------------------------------------------------------------------------
# Checkpoint matching
# --------------------------------------------------------------------------------------------------------

MatchRule = Callable[[Sequence[int], int], "int | None"]
MATCH_RULES: Registry[MatchRule] = Registry("checkpoint match rule")


@MATCH_RULES.register("latest-before")
def latest_before(ckpt_steps: Sequence[int], policy_step: int) -> int | None:
    """The latest checkpoint at or before the policy step (the weights that sampled it, or the last saved)."""
    return max((c for c in ckpt_steps if c <= policy_step), default=None)


@MATCH_RULES.register("nearest")
def nearest(ckpt_steps: Sequence[int], policy_step: int) -> int | None:
    """The checkpoint closest to the policy step; on a tie, the earlier one."""
    return min(ckpt_steps, key=lambda c: (abs(c - policy_step), c), default=None)


@MATCH_RULES.register("exact")
def exact(ckpt_steps: Sequence[int], policy_step: int) -> int | None:
    """Only the checkpoint of exactly the policy step."""
    return policy_step if policy_step in ckpt_steps else None


# --------------------------------------------------------------------------------------------------------
# Reading rows
# --------------------------------------------------------------------------------------------------------

@dataclass
class Rollout:
    where: str  # "file:line" (Parquet: "file:row", 1-based)
    step: int
    prompt: str | list  # text, or a chat message list
    response: str  # text (a message-list completion is joined)
    answer: str | None
    reward: float | None
    advantage: float | None


@dataclass
class BadRow:
    where: str
    why: str


def _raw_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based line or row number, parsed row or a BadRow-reason string) for every non-blank row."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise UserError(f"{path}: unreadable Parquet file ({str(e).splitlines()[0] if str(e) else e!r})") \
                from None
        yield from enumerate(rows, 1)
        return
    try:
        handle = path.open(encoding="utf-8")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    with handle:
        try:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    yield lineno, f"not valid JSON ({e.msg})"
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text; is it really a .jsonl file?") from None


def _is_messages(x: Any) -> bool:
    return isinstance(x, list) and bool(x) and all(isinstance(m, dict) and "content" in m for m in x)


def _as_float(x: Any) -> float | None:
    """A number (bools count: some reward functions return them) as float; anything else None."""
    return float(x) if isinstance(x, (int, float)) else None


@dataclass(frozen=True)
class Fields:
    """The field names in use, and which were named on the command line (those must be present)."""

    prompt: str
    response: str
    answer: str | None
    reward: str | None
    step: str
    advantage: str | None
    required: frozenset[str]


def parse_row(row: Any, where: str, file_step: int | None, f: Fields) -> Rollout | BadRow:
    """Validate one raw row and pull out its fields."""
    if isinstance(row, str):
        return BadRow(where, row)
    if not isinstance(row, dict):
        return BadRow(where, f"expected a JSON object, got {type(row).__name__}")
    for name, flag in ((f.prompt, "--prompt-field"), (f.response, "--response-field"),
                       *((n, fl) for n, fl in ((f.answer, "--answer-field"), (f.reward, "--reward-field"),
                                               (f.step, "--step-field")) if n in f.required)):
        if row.get(name) is None:
            return BadRow(where, f"has no {name!r} field; name the right one with {flag}")
    prompt, response = row[f.prompt], row[f.response]
    if not (isinstance(prompt, str) or _is_messages(prompt)):
        return BadRow(where, f"{f.prompt!r} is neither text nor a list of chat messages")
    if isinstance(prompt, str) and not prompt:
        return BadRow(where, f"{f.prompt!r} is empty")
    if _is_messages(response):
        response = "".join(str(m["content"]) for m in response)
    if not isinstance(response, str):
        return BadRow(where, f"{f.response!r} is neither text nor a list of chat messages")
    step = row.get(f.step, file_step)
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        why = "has no step" if step is None else f"step {step!r} is not a non-negative integer"
        return BadRow(where, f"{why}; name the step column with --step-field")
    answer = row.get(f.answer) if f.answer else None
    if isinstance(answer, list):
        answer = answer[0] if answer else None
    reward: float | None
    if f.reward is not None:
        reward = _as_float(row.get(f.reward))
        if row.get(f.reward) is not None and reward is None:
            return BadRow(where, f"reward {f.reward!r} is not a number")
    else:  # TRL: one column per reward function; unscorable rows hold None/NaN
        known = {f.prompt, f.response, f.answer, f.step, f.advantage, "mode"}
        parts = [_as_float(v) for k, v in row.items() if k not in known and _as_float(v) is not None]
        finite = [v for v in parts if not math.isnan(v)]
        reward = float(sum(finite)) if finite else None
    advantage = _as_float(row.get(f.advantage)) if f.advantage else None
    return Rollout(where, step, prompt, response, None if answer is None else str(answer), reward, advantage)


def read_rollouts(path: Path, f: Fields, *, only_step: int | None = None) -> Iterator[Rollout | BadRow]:
    m = re.search(r"(\d+)\.(?:jsonl|parquet)$", path.name)
    file_step = int(m.group(1)) if m else None
    for n, row in _raw_rows(path):
        r = parse_row(row, f"{path}:{n}", file_step, f)
        if only_step is None or (isinstance(r, Rollout) and r.step == only_step):
            yield r


# --------------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------------

@dataclass
class ScoreConfig:
    """Settings of ``entropy-lens score``: teacher-force the rollouts a training run saved (verl, TRL, JSONL)
    under the checkpoint that sampled them, and store per-token entropy as ``collect`` does."""

    checkpoints: str = field(metadata={"help": "Folder of checkpoints (checkpoint-N/, global_step_N/actor/"
                                               "huggingface/, step_N/, or one HF folder).", "positional": True})
    rollouts: str = field(metadata={"help": "Rollout dump: a file, or a folder of per-step files (verl "
                                            "rollout_data_dir, TRL output_dir or its completions/)."})
    out: str = field(metadata={"help": "Store directory to write (resumed if it exists)."})
    format: str | None = field(default=None, metadata={"help": "verl, trl or jsonl; detected from the files "
                                                               "when not given."})
    prompt_field: str | None = field(default=None, metadata={"help": "Prompt column (default: verl input, "
                                                                     "trl/jsonl prompt)."})
    response_field: str | None = field(default=None, metadata={"help": "Response column (default: verl output, "
                                                                         "trl completion, jsonl response)."})
    answer_field: str | None = field(default=None, metadata={"help": "Reference-answer column, graded with "
                                                                     "Math-Verify (default: verl gts, else answer; "
                                                                     "optional unless named)."})
    reward_field: str | None = field(default=None, metadata={"help": "Stored-reward column (default: verl score, "
                                                                     "jsonl reward, trl the sum of the reward "
                                                                     "columns)."})
    step_field: str | None = field(default=None, metadata={"help": "Rollout-step column (default: step, else the "
                                                                   "number in the file name)."})
    match: str = field(default="latest-before", metadata={"help": "Which checkpoint scores a step: latest-before "
                                                                  "(latest at or before its policy step), nearest, "
                                                                  "exact."})
    policy_lag: int | None = field(default=None, metadata={"help": "Policy step = rollout step - lag (default: "
                                                                   "1 for verl and trl, whose step s was sampled "
                                                                   "by checkpoint s-1; 0 for jsonl)."})
    max_response_tokens: int | None = field(default=None, metadata={
        "help": "The trainer's response limit (verl data.max_response_length, TRL max_completion_length): "
                "shorter responses ended with EOS, which dumps drop, and get it back; longer are truncated."})
    chat_template: bool = field(default=False, metadata={"help": "Also wrap text prompts in the chat template "
                                                                 "(for dumps that kept the raw question). "
                                                                 "Message-list prompts always are."})
    skip_bad_rows: bool = field(default=False, metadata={"help": "Skip and count malformed rows instead of "
                                                                 "stopping at the first."})
    temperature: float = field(default=1.0, metadata={"help": "The trainer's sampling temperature: entropy and "
                                                               "log-probs are of softmax(logits / T)."})
    batch_size: int = field(default=64, metadata={"help": "Sequences per scoring batch."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, or auto (cuda when available)."})


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


def _fields(cfg: ScoreConfig, fmt: RolloutFormat) -> Fields:
    named = {k for k in ("prompt", "response", "answer", "reward", "step")
             if getattr(cfg, f"{k}_field") is not None}
    pick = {k: getattr(cfg, f"{k}_field") or getattr(fmt, k) for k in ("prompt", "response", "answer", "step")}
    reward = cfg.reward_field or fmt.reward
    return Fields(pick["prompt"], pick["response"], pick["answer"], reward, pick["step"], fmt.advantage,
                  frozenset(getattr(cfg, f"{k}_field") for k in named))


def _settings(cfg: ScoreConfig, fmt: RolloutFormat, f: Fields, lag: int) -> dict:
    return {"rollouts": str(Path(cfg.rollouts).resolve()), "format": fmt.name, "prompt_field": f.prompt,
            "response_field": f.response, "answer_field": f.answer, "reward_field": f.reward,
            "step_field": f.step, "match": cfg.match, "policy_lag": lag,
            "max_response_tokens": cfg.max_response_tokens, "chat_template": cfg.chat_template,
            "skip_bad_rows": cfg.skip_bad_rows, "temperature": cfg.temperature,
            "entropy_temperature": cfg.temperature}


def score_rollouts(cfg: ScoreConfig) -> ScoreSummary:
    """Run ``entropy-lens score``; see the module docstring.  Every input check happens before the store is
    opened, so bad input leaves nothing behind."""
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
    f = _fields(cfg, fmt)
    files = format_files(fmt, path)
    if not files:
        raise UserError(f"{path}: no {fmt.name} rollout files ({fmt.description})")

    # Pass 1: validate every row (stop at the first bad one unless skipping) and index steps -> files.
    step_files: dict[int, list[Path]] = {}
    step_rows: dict[int, int] = {}
    bad: list[BadRow] = []
    for file in tqdm(files, desc="reading rollouts", unit="file", file=sys.stderr, disable=None, leave=False):
        for r in read_rollouts(file, f):
            if isinstance(r, BadRow):
                if not cfg.skip_bad_rows:
                    raise UserError(f"{r.where}: malformed {fmt.name} rollout: {r.why}; fix or remove the row, "
                                    "or pass --skip-bad-rows")
                bad.append(r)
                continue
            if file not in step_files.setdefault(r.step, []):
                step_files[r.step].append(file)
            step_rows[r.step] = step_rows.get(r.step, 0) + 1
    if not step_rows:
        raise UserError(f"{path}: no usable rollouts in {len(files)} file(s)"
                        + (f" ({len(bad)} malformed, e.g. {bad[0].where}: {bad[0].why})" if bad else ""))

    checkpoints = {c.step: c for c in discover(cfg.checkpoints)}
    plan = {s: rule(sorted(checkpoints), s - lag) for s in sorted(step_rows)}
    summary = ScoreSummary(Path(cfg.out), fmt.name, {}, [], {s: step_rows[s] for s, c in plan.items() if c is None},
                           cfg.match, lag, bad_rows=bad)
    device = resolve_device(cfg.device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32

    t0 = time.perf_counter()
    with StoreWriter(cfg.out, kind="score", settings=_settings(cfg, fmt, f, lag)) as store:
        todo: dict[int, list[int]] = {}
        for s, c in plan.items():
            if c is None:
                continue
            if store.is_complete(s):
                summary.skipped.append(s)
            else:
                todo.setdefault(c, []).append(s)
        info = store.manifest.get("info", {})
        scored_by = {int(k): v for k, v in info.get("scored_by", {}).items()}
        store.update_info(checkpoints={str(c.step): str(c.path) for c in checkpoints.values()}, device=device,
                          unmatched_steps={str(s): n for s, n in summary.unmatched.items()})
        bar = tqdm(total=sum(len(v) for v in todo.values()), desc="steps", unit="step", file=sys.stderr,
                   disable=None)
        for c in sorted(todo):
            ckpt: Checkpoint = checkpoints[c]
            model, tokenizer = load_checkpoint(ckpt.path, device=device, dtype=dtype)
            if not (store.root / "vocab.parquet").exists():
                store.write_table("vocab", vocab_table(tokenizer, model))
            for s in todo[c]:
                bar.set_postfix(step=s, checkpoint=c)
                rows = [r for file in step_files[s] for r in read_rollouts(file, f, only_step=s)]
                rows = [r for r in rows if isinstance(r, Rollout)]
                tokens, samples = score_step(s, rows, model, tokenizer, cfg, fmt.name, summary)
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


def _no_verdict(response: str, gold: str) -> Verdict:
    # build_tables grades the re-decoded text; grading is redone on the stored text in score_step.
    return Verdict(answer=None, format_ok=False, correct=False, reward=0.0)


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


def score_step(step: int, rows: list[Rollout], model, tokenizer, cfg: ScoreConfig, source: str,
               summary: ScoreSummary) -> tuple[dict, dict]:
    """Encode, teacher-force, grade and tabulate one rollout step.

    ``prompt_id`` is the index of the distinct prompt within the step (first appearance), ``sample_id`` the
    index of the response within its prompt's group, in file order.
    """
    from entropy_lens.tasks.math import count_boxed, extract_boxed, math_verify_answer

    eos = eos_token_ids(model, tokenizer)
    markers = [] if cfg.chat_template else _template_markers(tokenizer)
    pid_of: dict[str, int] = {}
    prompts: list[tuple[str, list[int]]] = []
    golds: list[str] = []
    jobs, responses = [], []
    group_size: dict[int, int] = {}
    encoded: dict[str, tuple[str, list[int]]] = {}
    for r in rows:
        key = json.dumps(r.prompt, sort_keys=True)
        if key not in encoded:
            encoded[key] = encode_rollout_prompt(tokenizer, r.prompt, chat_template=cfg.chat_template,
                                                 where=r.where)
        text, ids = encoded[key]
        if text not in pid_of:  # one prompt is what the model read: a message list and its rendering are one
            pid_of[text] = len(prompts)
            prompts.append((text, ids))
            golds.append(r.answer or "")
        p = pid_of[text]
        ptext, pids = prompts[p]
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
        jobs.append((p, group_size.get(p, 0)))
        group_size[p] = group_size.get(p, 0) + 1
        responses.append(Response(token_ids=rids, truncated=truncated))

    stats = score(model, [prompts[p][1] for p, _ in jobs], [x.token_ids for x in responses],
                  temperature=cfg.temperature, batch_size=cfg.batch_size)
    problems = [Problem(i, text, gold) for i, ((text, _), gold) in enumerate(zip(prompts, golds))]
    tokens, samples = build_tables(step, jobs, responses, stats, EvalSet(source, problems, _no_verdict, ""),
                                   tokenizer, source=source)

    # The stored reward is kept; correctness comes from Math-Verify on the stored text where an answer exists.
    cols = {k: [] for k in ("text", "answer", "format_ok", "correct", "reward", "gold")}
    for r in rows:
        if r.answer is not None:
            v = math_verify_answer(r.response, r.answer)
            answer, format_ok, correct = v.answer, v.format_ok, v.correct
            reward = v.reward if r.reward is None else r.reward
            summary.graded += 1
            if r.reward is not None and (r.reward > 0) != correct:
                summary.disagreements.append(r.where)
        else:
            answer, format_ok = extract_boxed(r.response), count_boxed(r.response) == 1
            correct = r.reward is not None and r.reward > 0
            reward = r.reward if r.reward is not None else float("nan")
            summary.ungraded += r.reward is None
        for k, val in (("text", r.response), ("answer", answer), ("format_ok", format_ok), ("correct", correct),
                       ("reward", reward), ("gold", r.answer or "")):
            cols[k].append(val)
    samples.update(cols)
    if any(r.advantage is not None for r in rows):
        lengths = [len(x.token_ids) for x in responses]
        adv = [np.nan if r.advantage is None else r.advantage for r in rows]
        tokens["advantage"] = np.repeat(np.asarray(adv, np.float32), lengths)
    return tokens, samples
