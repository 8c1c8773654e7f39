"""Verifiable tasks: problems with reference answers, and a verifier that grades a response.

A task is registered by name in :data:`TASKS`.  ``load_eval_set(spec)`` turns what a user passes as
``--dataset`` (a task name, or a JSONL/Parquet file of problems) into an :class:`EvalSet`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from entropy_lens.errors import UserError
from entropy_lens.registry import Registry


@dataclass(frozen=True)
class Problem:
    prompt_id: int
    prompt: str
    answer: str  # the reference ("gold") answer


@dataclass(frozen=True)
class Verdict:
    answer: str | None  # the parsed final answer, None when the response has none
    format_ok: bool  # exactly one parsable final answer in the expected format
    correct: bool
    reward: float  # +1 correct, −1 otherwise (PAPER.md §1.1)


class Verifier(Protocol):
    def __call__(self, response: str, gold: str) -> Verdict: ...


@dataclass(frozen=True)
class EvalSet:
    name: str
    problems: Sequence[Problem]
    verify: Verifier
    fingerprint: str  # sha256 of the problems, recorded in the store's manifest


def fingerprint(problems: Sequence[Problem]) -> str:
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([p.prompt_id, p.prompt, p.answer]).encode())
    return h.hexdigest()[:16]


TASKS: Registry[Callable[[], EvalSet]] = Registry("task")


def load_eval_set(spec: str, *, prompt_field: str = "prompt", answer_field: str = "answer") -> EvalSet:
    """A registered task name (``arith``) or a ``.jsonl``/``.parquet`` file with one problem a row.

    File problems are graded with Math-Verify (:mod:`entropy_lens.tasks.math`).
    """
    import entropy_lens.tasks.arith  # noqa: F401  (registers the built-in tasks)

    path = Path(spec)
    if spec in TASKS:
        return TASKS.get(spec)()
    if not path.exists():
        if path.suffix in (".jsonl", ".json", ".parquet"):
            raise UserError(f"{spec}: no such dataset file; check the path")
        TASKS.get(spec)  # raises the "did you mean" error for an unknown task name
    from entropy_lens.tasks.math import math_verify_answer

    problems = read_problems(path, prompt_field=prompt_field, answer_field=answer_field)
    return EvalSet(name=path.name, problems=problems, verify=math_verify_answer, fingerprint=fingerprint(problems))


def read_problems(path: Path, *, prompt_field: str, answer_field: str) -> list[Problem]:
    """Rows of a JSONL or Parquet file → problems; a malformed row is a :class:`UserError` naming its line."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise UserError(f"{path}: unreadable Parquet file ({e})") from None
        where = "row"
    elif path.suffix in (".jsonl", ".json"):
        rows = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove that line") from None
        where = "line"
    else:
        raise UserError(f"{path}: unsupported dataset format {path.suffix!r}; give a .jsonl or .parquet file")
    problems = []
    for i, row in enumerate(rows):
        for field, flag in ((prompt_field, "--prompt-field"), (answer_field, "--answer-field")):
            if not isinstance(row, dict) or field not in row:
                raise UserError(f"{path}: {where} {i + 1} has no {field!r} field; "
                                f"fix the data or name the right column with {flag}")
        problems.append(Problem(prompt_id=i, prompt=str(row[prompt_field]), answer=str(row[answer_field])))
    if not problems:
        raise UserError(f"{path}: the dataset has no problems")
    return problems
