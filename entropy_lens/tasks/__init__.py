"""Verifiable tasks: problems with reference answers, and a verifier that grades a response.

A task is registered by name in :data:`TASKS`.  ``load_eval_set(spec)`` turns what a user passes as
``--dataset`` (a task name, or a JSONL/Parquet file of problems) into an :class:`EvalSet`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from entropy_lens.errors import UserError
from entropy_lens.registry import Registry
from entropy_lens.tasks.base import EvalSet, Problem, Verdict, Verifier, fingerprint

__all__ = ["TASKS", "EvalSet", "Problem", "Verdict", "Verifier", "fingerprint", "load_eval_set", "read_problems"]


TASKS: Registry[Callable[[], EvalSet]] = Registry("task")
# The built-in tasks, imported on first use: listing or checking a task name imports no task module.
TASKS.register_lazy("arith", "entropy_lens.tasks.arith:arith_eval_set")
TASKS.register_lazy("arith-long", "entropy_lens.tasks.arith:arith_long_eval_set")
TASKS.register_lazy("arith-wide", "entropy_lens.tasks.arith:arith_wide_eval_set")


def load_eval_set(spec: str, *, prompt_field: str = "prompt", answer_field: str = "answer") -> EvalSet:
    """A registered task name (``arith``) or a ``.jsonl``/``.parquet`` file with one problem a row.

    File problems are graded with Math-Verify (:mod:`entropy_lens.tasks.math`).
    """
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
