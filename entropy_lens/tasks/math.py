r"""Math answers graded with Math-Verify: the reward of paper-notes §1.1.

The final answer of a response is the content of its **last** ``\boxed{...}`` (or ``\fbox{...}``); it is
checked against the reference answer with HuggingFace Math-Verify, the reference wrapped as
``\boxed{gold}``: +1 if equivalent, −1 otherwise (no box, a truncated box, a timeout or an error included).

:func:`math_verify_answer` never raises and never hangs.  Math-Verify's own timeouts use ``SIGALRM``, which
only works in the main thread, so:

* in the main thread the check runs in-process with Math-Verify's timeouts (:data:`PARSE_TIMEOUT_S`,
  :data:`COMPARE_TIMEOUT_S`);
* in any other thread it is sent to a helper process (one per concurrently checking thread, started on first
  use, reused) that runs the same check in *its* main thread; if no reply comes within
  :data:`HARD_TIMEOUT_S` the process is killed and the check counts as a timeout.  (A thread could not be
  stopped, and sympy's runaway arithmetic would keep burning a core and the GIL.)

Timeouts and errors are counted in :data:`VERIFY_STATS` (process-wide, thread-safe; read a copy with
:func:`verify_stats`, zero it with :func:`reset_verify_stats`):

``checks``      verdicts given by Math-Verify (the fast path excluded)
``fast_path``   verdicts given by normalised string equality, without sympy
``timeouts``    checks in which some parse or comparison timed out (soft or hard); the pair is then unequal
``hard_kills``  of those, checks whose helper process had to be killed
``errors``      checks that failed in the helper machinery (broken pipe, process failed to start, …)
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from itertools import product
from pathlib import Path

from entropy_lens.tasks.base import Verdict

PARSE_TIMEOUT_S = 3  # Math-Verify's parsing_timeout, per parse (signal.alarm: whole seconds)
COMPARE_TIMEOUT_S = 3  # Math-Verify's timeout_seconds, per (gold, answer) candidate pair
HARD_TIMEOUT_S = 10.0  # wall-clock limit on one check in a helper process (non-main threads)
WORKER_STARTUP_TIMEOUT_S = 120.0  # a helper process imports sympy and Math-Verify before its first check

# --------------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_WS = " \t\n\r\f\v"


def _matching_braces(text: str) -> dict[int, int]:
    r"""Index of each ``{`` → index of its ``}``, unmatched ones absent; a backslash escapes one character."""
    match: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            match[stack.pop()] = i
        i += 1
    return match


def _boxes(text: str) -> list[str | None]:
    r"""The argument of each ``\boxed``/``\fbox`` in order; None for an unbalanced ``{...``.

    A macro with no argument at all (end of text, ``$`` or ``}`` next) is not a box.  Without braces the
    argument is the run of characters up to the next whitespace or ``$`` (``\boxed 5`` → ``5``).  A box
    nested in another is listed too, after it.
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    match: dict[int, int] | None = None
    out: list[str | None] = []
    n = len(text)
    for m in _BOX_RE.finditer(text):
        j = m.end()
        while j < n and text[j] in _WS:
            j += 1
        if j < n and text[j] == "{":
            if match is None:
                match = _matching_braces(text)
            end = match.get(j)
            out.append(None if end is None else text[j + 1:end])
        elif j > m.end():  # "\boxed 5": one whitespace-delimited token
            k = j
            while k < n and text[k] not in _WS and text[k] not in "$}":
                k += 1
            if k > j:
                out.append(text[j:k])
    return out


def extract_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` / ``\fbox{...}`` in ``text``, exactly as written.

    Nested braces are matched, escaped ones (``\{``, ``\}``) skipped.  None when there is no box or when the
    last one is unbalanced (a truncated response); for nested boxes the innermost, last-opened one wins.
    """
    boxes = _boxes(text)
    return boxes[-1] if boxes else None


def count_boxed(text: str) -> int:
    """How many balanced boxed answers ``text`` holds (nested ones included)."""
    return sum(b is not None for b in _boxes(text))


# --------------------------------------------------------------------------------------------------------
# Fast path: normalised string equality
# --------------------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\\[A-Za-z]+|\\.|\s+|[^\\\s]+", re.DOTALL)
_CONTROL_WORD = re.compile(r"\\[A-Za-z]+")
_DROP = {"\\left", "\\right", "\\displaystyle"}
_RENAME = {"\\dfrac": "\\frac", "\\tfrac": "\\frac"}


def normalise(answer: str) -> str:
    r"""A purely typographic normal form for the fast path: outer ``$``, ``\left``/``\right``/``\displaystyle``
    and insignificant whitespace removed, ``\dfrac``/``\tfrac`` → ``\frac``.

    Deliberately conservative, so that equal normal forms never disagree with Math-Verify: a space is kept
    between digits (Math-Verify rejects ``1 000`` = ``1000``) and after a control word before a letter
    (``\le q`` is not ``\leq``); a final ``.`` and ``\,`` are kept (Math-Verify rejects ``5.`` = ``5`` and
    ``1\,000`` = ``1000``).
    """
    tokens = _TOKEN_RE.findall(answer.strip().strip("$").strip())
    out: list[str] = []
    for i, t in enumerate(tokens):
        if t[0].isspace():
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if out and nxt and ((_CONTROL_WORD.fullmatch(out[-1]) and nxt[0].isalpha())
                                or (out[-1][-1].isdigit() and nxt[0].isdigit())):
                out.append(" ")
        elif t not in _DROP:
            out.append(_RENAME.get(t, t))
    return "".join(out)


# --------------------------------------------------------------------------------------------------------
# Math-Verify check (main thread only: its timeouts use SIGALRM)
# --------------------------------------------------------------------------------------------------------


def _boxed_gold(gold: str) -> str:
    return gold if "\\boxed" in gold else "\\boxed{" + gold + "}"


def _math_equal(gold: str, answer: str) -> tuple[bool, bool]:
    r"""(equivalent, timed out): Math-Verify on ``\boxed{gold}`` vs ``\boxed{answer}``, in the main thread.

    Same semantics as ``math_verify.verify(parse(gold), parse(answer))`` with its default error handling
    (a failing or timed-out candidate pair is unequal, the others are still tried), but timeouts are seen.
    """
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    timed_out = False

    def parsed(latex: str) -> list:
        nonlocal timed_out
        try:
            return parse(latex, parsing_timeout=PARSE_TIMEOUT_S, raise_on_error=True)
        except TimeoutException:
            timed_out = True
        except Exception:
            pass
        return []

    gold_p = parsed(_boxed_gold(gold))
    answer_p = parsed("\\boxed{" + answer + "}") if gold_p else []
    for g, a in product(gold_p, answer_p):
        try:
            # ORDER: verify(gold, target).  It is asymmetric (e.g. a gold "x=2" accepts a bare "2").
            if verify(g, a, timeout_seconds=COMPARE_TIMEOUT_S, raise_on_error=True):
                return True, timed_out
        except TimeoutException:
            timed_out = True
        except Exception:
            pass
    return False, timed_out


# --------------------------------------------------------------------------------------------------------
# Helper processes, for checks from threads other than the main one
# --------------------------------------------------------------------------------------------------------


def _serve() -> None:
    """A helper process's loop: ``[gold, answer]`` a JSON line on stdin → ``[equal, timed_out]`` on stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C; we exit when stdin closes
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a stray print cannot corrupt the protocol
    import math_verify  # noqa: F401  (imported before "ready": the first check's clock excludes it)

    reply.write("ready\n")
    for line in sys.stdin:
        gold, answer = json.loads(line)
        reply.write(json.dumps(_math_equal(gold, answer)) + "\n")


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the directory holding the entropy_lens package
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from entropy_lens.tasks.math import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self._buf = b""
        if self.readline(time.monotonic() + WORKER_STARTUP_TIMEOUT_S) != "ready":
            self.kill()
            raise RuntimeError("Math-Verify helper process did not start")

    def readline(self, deadline: float) -> str | None:
        """The next reply line, or None at the deadline; EOFError if the process died."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def ask(self, gold: str, answer: str) -> tuple[bool, bool] | None:
        """(equal, timed out), or None at :data:`HARD_TIMEOUT_S`."""
        self.proc.stdin.write((json.dumps([gold, answer]) + "\n").encode())
        self.proc.stdin.flush()
        line = self.readline(time.monotonic() + HARD_TIMEOUT_S)
        if line is None:
            return None
        equal, timed_out = json.loads(line)
        return bool(equal), bool(timed_out)

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass


_IDLE: list[_Worker] = []
_IDLE_LOCK = threading.Lock()


@atexit.register
def _close_workers() -> None:
    with _IDLE_LOCK:
        workers, _IDLE[:] = list(_IDLE), []
    for w in workers:
        w.kill()


def _math_equal_in_worker(gold: str, answer: str) -> tuple[bool, bool, bool, bool]:
    """(equal, timed out, killed, error) from a helper process."""
    with _IDLE_LOCK:
        w = _IDLE.pop() if _IDLE else None
    try:
        w = w or _Worker()
        res = w.ask(gold, answer)
    except Exception:
        if w is not None:
            w.kill()
        return False, False, False, True
    if res is None:
        w.kill()
        return False, True, True, False
    with _IDLE_LOCK:
        _IDLE.append(w)
    return res[0], res[1], False, False


# --------------------------------------------------------------------------------------------------------
# The verifier
# --------------------------------------------------------------------------------------------------------

VERIFY_STATS: dict[str, int] = {"checks": 0, "fast_path": 0, "timeouts": 0, "hard_kills": 0, "errors": 0}
_STATS_LOCK = threading.Lock()


def verify_stats() -> dict[str, int]:
    """A snapshot of :data:`VERIFY_STATS`."""
    with _STATS_LOCK:
        return dict(VERIFY_STATS)


def reset_verify_stats() -> None:
    with _STATS_LOCK:
        for k in VERIFY_STATS:
            VERIFY_STATS[k] = 0


def _count(**deltas: int) -> None:
    with _STATS_LOCK:
        for k, v in deltas.items():
            VERIFY_STATS[k] += int(v)


def answers_equal(gold: str, answer: str) -> bool:
    """Whether ``answer`` is equivalent to ``gold``: fast path, then Math-Verify (never raises or hangs)."""
    try:
        gold_answer = extract_boxed(gold) if "\\boxed" in gold else gold
        g = normalise(gold_answer if gold_answer is not None else gold)
        if g and g == normalise(answer):
            _count(fast_path=1)
            return True
        if threading.current_thread() is threading.main_thread():
            equal, timed_out = _math_equal(gold, answer)
            killed = error = False
        else:
            equal, timed_out, killed, error = _math_equal_in_worker(gold, answer)
        _count(checks=1, timeouts=timed_out, hard_kills=killed, errors=error)
        return equal
    except Exception:
        _count(checks=1, errors=1)
        return False


def math_verify_answer(response: str, gold: str) -> Verdict:
    r"""Grade ``response`` against ``gold`` (a :class:`~entropy_lens.tasks.Verifier`).

    ``answer`` is the last boxed answer (None → incorrect); ``format_ok`` requires exactly one boxed answer;
    ``correct`` is Math-Verify equivalence of ``\boxed{gold}`` (gold as is if it already has a ``\boxed``)
    and the answer, independent of ``format_ok``; reward +1 if correct, −1 otherwise.
    """
    try:
        answer = extract_boxed(response)
        if answer is None:
            return Verdict(answer=None, format_ok=False, correct=False, reward=-1.0)
        format_ok = count_boxed(response) == 1
        correct = answers_equal(gold, answer)
        return Verdict(answer=answer, format_ok=format_ok, correct=correct, reward=1.0 if correct else -1.0)
    except Exception:  # extraction is plain string code; this is a last line of defence
        _count(errors=1)
        return Verdict(answer=None, format_ok=False, correct=False, reward=-1.0)
