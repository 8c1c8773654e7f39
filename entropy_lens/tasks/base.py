"""The types every task shares: a problem, a verdict, a verifier, an eval set, and the set's fingerprint.

Kept apart from :mod:`entropy_lens.tasks` (the registry and the loader) so that task modules and the
Math-Verify grader import these without importing the registry that lists them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Protocol, Sequence


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
    reward: float  # +1 correct, −1 otherwise (paper-notes §1.1)


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
