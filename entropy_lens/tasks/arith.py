"""``arith``: the synthetic verifiable task of the embedded default.

A problem is a chain of integer operations evaluated left to right; a response works it one operation per
line and ends with a final-answer marker::

    prompt:   "Q: 12+7-5\\n"
    response: "12+7=19\\n19-5=14\\nA: 14"

The reward parses the final answer (``A: <int>``) and compares it exactly with the reference: +1 if equal,
−1 otherwise.  Defects are possible and detectable, as in paper-notes §2.1 C: a response with no marker or
with two markers is a *format violation* (``format_ok`` false); filler words are *irrelevant content*; a
few CJK characters are in the vocabulary so that *language mixing* can happen too.  :func:`sft_target`
plants these (and, when asked, arithmetic slips) in the warm-up data so that RL has something to remove.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from entropy_lens.tasks.base import EvalSet, Problem, Verdict, fingerprint

ANSWER_MARKER = "A: "
_ANSWER_RE = re.compile(r"A:\s*(-?\d+)")
FILLER_WORDS = ("hmm", "so", "well", "ok", "the", "um", "and", "wait")
CJK_NOISE = "的是了在"
# Every character the task, its responses and its defects can use: the character tokenizer's alphabet.
ALPHABET = "0123456789+-*= \nQA:" + "abcdefghijklmnopqrstuvwxyz" + CJK_NOISE


@dataclass(frozen=True)
class ArithTask:
    """A family of left-to-right arithmetic chains.

    Args:
        min_ops, max_ops: number of operations per problem (difficulty level), drawn uniformly.
        max_operand: operands are drawn from 0..max_operand; ``*`` takes a right operand in 2..5.
        ops: operators to draw from.
    """

    min_ops: int = 2
    max_ops: int = 3
    max_operand: int = 20
    ops: tuple[str, ...] = ("+", "-", "*")

    def sample(self, rng: random.Random, prompt_id: int) -> Problem:
        n_ops = rng.randint(self.min_ops, self.max_ops)
        terms = [str(rng.randint(0, self.max_operand))]
        for _ in range(n_ops):
            op = rng.choice(self.ops)
            b = rng.randint(2, 5) if op == "*" else rng.randint(0, self.max_operand)
            terms += [op, str(b)]
        expr = "".join(terms)
        return Problem(prompt_id=prompt_id, prompt=f"Q: {expr}\n", answer=str(solve(expr)[-1][2]))

    def problems(self, n: int, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        return [self.sample(rng, i) for i in range(n)]


def parse_chain(expr: str) -> tuple[int, list[tuple[str, int]]]:
    """``"12+7-5"`` → ``(12, [("+", 7), ("-", 5)])``."""
    tokens = re.findall(r"\d+|[+\-*]", expr)
    first, rest = int(tokens[0]), tokens[1:]
    return first, [(rest[i], int(rest[i + 1])) for i in range(0, len(rest), 2)]


def apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def solve(expr: str) -> list[tuple[int, str, int]]:
    """The scratchpad lines as (lhs, "op rhs", result) — the last result is the answer."""
    acc, chain = parse_chain(expr)
    lines = []
    for op, b in chain:
        out = apply(acc, op, b)
        lines.append((acc, f"{op}{b}", out))
        acc = out
    return lines


def solution_text(problem: Problem) -> str:
    """The clean worked solution for a problem."""
    lines = solve(problem.prompt.removeprefix("Q: ").strip())
    return "".join(f"{a}{opb}={out}\n" for a, opb, out in lines) + f"{ANSWER_MARKER}{lines[-1][2]}"


@dataclass(frozen=True)
class Noise:
    """How the SFT warm-up targets are corrupted (per problem unless stated).

    Args:
        slip: per scratchpad line, chance of an off-by-one error that then propagates down the chain.
        no_marker: chance the final-answer marker is missing (a format violation).
        double_answer: chance of a second, different final answer (a format violation).
        filler: chance of a line of filler words (irrelevant content).
        cjk: chance of a CJK character in a line (language mixing).

    The embedded default plants format violations often (29% of the targets: 0.2 × 0.85 with no marker,
    0.15 × 0.8 with two) and no slips, so that its rising stage has defects to remove, as the paper's does
    (paper-notes §2.1 C), and removing them is most of what RL gains: the post-SFT samples are 23–30%
    unformatted, RL drops that to 2–4% within ~20 steps while accuracy rises fast, then accuracy grows slowly
    (what other rates did, slips included: the docstring of :mod:`entropy_lens.train.grpo`).
    """

    slip: float = 0.0
    no_marker: float = 0.2
    double_answer: float = 0.15
    filler: float = 0.08
    cjk: float = 0.03
    fillers: tuple[str, ...] = field(default=FILLER_WORDS)


def sft_target(problem: Problem, rng: random.Random, noise: Noise = Noise()) -> str:
    """A noisy worked solution: the warm-up data that leaves the model imperfect (see :class:`Noise`)."""
    acc, chain = parse_chain(problem.prompt.removeprefix("Q: ").strip())
    lines = []
    for op, b in chain:
        out = apply(acc, op, b)
        if rng.random() < noise.slip:
            out += rng.choice((-1, 1))
        line = f"{acc}{op}{b}={out}"
        if rng.random() < noise.cjk:
            line += rng.choice(CJK_NOISE)
        lines.append(line)
        if rng.random() < noise.filler:
            lines.append(" ".join(rng.choice(noise.fillers) for _ in range(rng.randint(2, 5))))
        acc = out
    if rng.random() < noise.double_answer:
        lines.append(f"{ANSWER_MARKER}{acc + rng.choice((-2, -1, 1, 2))}")
    if rng.random() >= noise.no_marker:
        lines.append(f"{ANSWER_MARKER}{acc}")
    return "\n".join(lines)


def verify(response: str, gold: str) -> Verdict:
    """Exact match on the parsed final answer.

    ``format_ok`` requires exactly one ``A: <int>`` marker and nothing after it; the parsed answer is the
    last marker's; ``correct`` requires both a good format and the right number.
    """
    matches = list(_ANSWER_RE.finditer(response))
    if not matches:
        return Verdict(answer=None, format_ok=False, correct=False, reward=-1.0)
    last = matches[-1]
    format_ok = len(matches) == 1 and not response[last.end():].strip()
    answer = last.group(1)
    correct = format_ok and int(answer) == int(gold)
    return Verdict(answer=answer, format_ok=format_ok, correct=correct, reward=1.0 if correct else -1.0)


DEFAULT_TASK = ArithTask()
EVAL_SEED = 1234  # held-out problems; training draws from other seeds
# The out-of-domain benchmark of Table 1: chains of exactly 4 operations, longer than any the trainer draws
# (2–3).  A clean solution is 29–52 tokens (characters, plus EOS; 5,000 drawn problems), so it fits the
# trainer's max_new_tokens = 64 with room for a slip or a filler line; 5 operations would reach 60.
LONG_TASK = ArithTask(min_ops=4, max_ops=4)
LONG_EVAL_SEED = 4321
# The second out-of-domain benchmark: chains as long as training's, operands up to 40 instead of 20.  The
# tiny model drops the fourth operation of arith-long almost always (Acc near 3% for every checkpoint), so
# that column cannot separate methods; wider operands can (the post-SFT model scores 0.09 at T = 1 here).
WIDE_TASK = ArithTask(max_operand=40)
WIDE_EVAL_SEED = 5321


def arith_eval_set(n: int = 64) -> EvalSet:
    """The embedded default's held-out eval set: 64 problems of 2–3 operations."""
    problems = DEFAULT_TASK.problems(n, seed=EVAL_SEED)
    return EvalSet(name="arith", problems=problems, verify=verify, fingerprint=fingerprint(problems))


def arith_long_eval_set(n: int = 64) -> EvalSet:
    """Held-out out-of-domain eval set (Table 1): 64 problems of exactly 4 operations, a longer chain than
    training's 2–3, with its own seed."""
    problems = LONG_TASK.problems(n, seed=LONG_EVAL_SEED)
    return EvalSet(name="arith-long", problems=problems, verify=verify, fingerprint=fingerprint(problems))


def arith_wide_eval_set(n: int = 64) -> EvalSet:
    """Held-out out-of-domain eval set (Table 1): 64 problems of 2–3 operations with operands up to 40,
    twice training's range, with its own seed."""
    problems = WIDE_TASK.problems(n, seed=WIDE_EVAL_SEED)
    return EvalSet(name="arith-wide", problems=problems, verify=verify, fingerprint=fingerprint(problems))
