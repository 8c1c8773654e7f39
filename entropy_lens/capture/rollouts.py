"""Trainers' rollout dumps: their formats, which checkpoint scores a step, and reading their rows.

Pure Python (pyarrow for Parquet files): ``entropy-lens score`` (:mod:`entropy_lens.capture.score_rollouts`)
reads rollouts through this module, and the names it registers are listed without importing torch.

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
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from entropy_lens.errors import UserError
from entropy_lens.registry import Registry


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
