"""The shell commands a Markdown file documents, and the recipes of a Makefile, as data for tests.

:func:`commands_in` reads a Markdown file the way a reader copies from it:

* **shell code blocks**: fenced blocks tagged ``bash``, ``sh``, ``shell``, ``console`` or ``zsh``; untagged
  fenced blocks and 4-space indented blocks when one of their lines starts like a command (:data:`PROGRAMS`).
  Every line of such a block is a command (except a JSON row, one that starts with ``{`` or ``[``; in a
  ``console`` block, only the ``$ `` lines), so a new tool in a block cannot slip past a test.  A line ending
  in ``\\`` continues on the next; so does a line indented deeper than its command that starts with ``[`` or
  ``--`` (a synopsis wrapped without backslashes).  ``# comments`` are dropped as the shell drops them (a
  ``#`` that starts a word, outside quotes); the comment is kept beside the command (``make train  # = ...``
  says what the target is equivalent to);
* **inline code spans** that are commands: they start with one of :data:`PROGRAMS`, name a script of
  ``benchmarks/``, or are a flag (``--x ...``).

Each command is normalised to its words joined by one space (a word holding whitespace or quotes is
shell-quoted), which is the key a test's table uses.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

#: First words that make a line a command of this project (or of one the README tells the user to run).
PROGRAMS = ("entropy-lens", ".venv/bin/entropy-lens", "make", "time", "python", "python3", ".venv/bin/python",
            "pip", ".venv/bin/pip", "bash")
SHELL_TAGS = ("bash", "sh", "shell", "console", "zsh")
#: An inline span naming a benchmark script (``benchmarks/bench_ops.py``, ``bench_analysis.py --rows 1e8``).
BENCH_SCRIPT = re.compile(r"^(?:benchmarks/)?(?:bench_\w+\.py|check_\w+\.py|gpu_check\.(?:sh|py))(?:\s|$)")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


@dataclass(frozen=True)
class Found:
    text: str  # the normalised command
    doc: str  # the file, relative to the repository
    line: int  # 1-based line of its first word
    where: str  # "block" or "inline"
    comment: str = ""  # the trailing comment, without "#"

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: `{self.text}`"


def split_comment(line: str) -> tuple[str, str]:
    """``code  # comment`` → ``("code", "comment")``: ``#`` starts a comment where it starts a word outside
    quotes, as in the shell."""
    quote = None
    prev = " "
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = None
        elif c == "\\":
            i += 2
            prev = "x"
            continue
        elif c in "'\"":
            quote = c
        elif c == "#" and prev.isspace():
            return line[:i].rstrip(), line[i + 1:].strip()
        prev = c
        i += 1
    return line.rstrip(), ""


def normalise(code: str) -> str:
    words = shlex.split(code)
    return " ".join(shlex.quote(w) if re.search(r"[\s'\"]", w) else w for w in words)


def _starts_like_command(code: str) -> bool:
    first = code.split(maxsplit=1)[0] if code.strip() else ""
    return first in PROGRAMS


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """A block's (line number, text) lines → (line number, code, comment) commands, continuations joined."""
    out: list[dict] = []
    for no, raw in lines:
        code, comment = split_comment(raw)
        stripped = code.strip()
        if not stripped:  # blank, or a comment line
            continue
        indent = len(raw) - len(raw.lstrip())
        words = stripped.removesuffix("\\").strip()
        last = out[-1] if out else None
        if last and (last["open"] or (indent > last["indent"] and stripped.startswith(("[", "--")))):
            last["code"] += " " + words
            last["comment"] = " ".join(x for x in (last["comment"], comment) if x)
            last["open"] = stripped.endswith("\\")
            continue
        out.append(dict(no=no, code=words, comment=comment, indent=indent, open=stripped.endswith("\\")))
    return [(d["no"], d["code"], d["comment"]) for d in out]


def _blocks(text: str) -> tuple[list[tuple[str | None, list[tuple[int, str]]]], list[tuple[int, str]]]:
    """(fenced blocks as (tag, lines), indented blocks as (None, lines)) and the prose lines."""
    blocks: list[tuple[str | None, list[tuple[int, str]]]] = []
    prose: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    prev_blank = True
    while i < len(lines):
        line = lines[i]
        m = _FENCE.match(line)
        if m:
            fence, tag = m.group(2), m.group(3).lower()
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence[:3]):
                body.append((i + 1, lines[i]))
                i += 1
            blocks.append((tag, body))
            i += 1
            prev_blank = False
            continue
        if prev_blank and line.startswith("    ") and line.strip():
            body = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append((i + 1, lines[i][4:]))
                i += 1
            blocks.append((None, body))
            prev_blank = True
            continue
        prose.append((i + 1, line))
        prev_blank = not line.strip()
        i += 1
    return blocks, prose


def commands_in(path: Path, root: Path) -> list[Found]:
    """Every command ``path`` documents, in file order (see the module docstring)."""
    doc = str(path.relative_to(root))
    blocks, prose = _blocks(path.read_text())
    found: list[Found] = []
    for tag, body in blocks:
        if tag == "console":  # `$ command` lines; the rest is output
            body = [(no, line.replace("$ ", "", 1)) for no, line in body if line.lstrip().startswith("$ ")]
        else:
            body = [(no, re.sub(r"^(\s*)\$ ", r"\1", line)) for no, line in body]
        logical = _logical_lines(body)
        shell = tag in SHELL_TAGS or (tag in ("", None) and any(_starts_like_command(c) for _, c, _ in logical))
        if shell:  # every line is a command, except the JSON rows an example shows between them
            found += [Found(normalise(code), doc, no, "block", comment) for no, code, comment in logical
                      if not code.startswith(("{", "["))]
    # inline spans: join the prose back (a span may wrap), remembering where each line starts
    starts, joined = [], ""
    for no, line in prose:
        starts.append((len(joined), no))
        joined += line + "\n"
    for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", joined, flags=re.S):
        span = " ".join(m.group(2).split())
        if not span:
            continue
        if _starts_like_command(span) or BENCH_SCRIPT.match(span) or re.match(r"^--[a-z]", span):
            no = max(n for off, n in starts if off <= m.start())
            found.append(Found(normalise(span), doc, no, "inline"))
    return sorted(found, key=lambda f: f.line)


def code_blocks(path: Path, tag: str) -> list[str]:
    """The text of every fenced block of ``path`` tagged ``tag`` (``python``)."""
    blocks, _ = _blocks(path.read_text())
    return ["\n".join(line for _, line in body) for t, body in blocks if t == tag]


# ------------------------------------------------------------------------------------------- Makefile
@dataclass(frozen=True)
class Makefile:
    variables: dict[str, str]
    recipes: dict[str, list[str]]  # target -> recipe lines, variables expanded
    prerequisites: dict[str, list[str]]


def read_makefile(path: Path) -> Makefile:
    """The variables (``?=``, ``:=``, ``=``), and each rule's prerequisites and recipe, ``$(VAR)`` expanded."""
    variables: dict[str, str] = {}
    raw: dict[str, list[str]] = {}
    prereqs: dict[str, list[str]] = {}
    target = None
    for line in path.read_text().splitlines():
        if line.startswith("\t"):
            if target is not None:
                raw[target].append(line[1:].strip())
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            target = None if not line.strip() else target
            continue
        m = re.match(r"^([A-Za-z_][\w]*)\s*(\?=|:=|=)\s*(.*)$", line)
        if m:
            variables.setdefault(m.group(1), m.group(3).strip()) if m.group(2) == "?=" else \
                variables.__setitem__(m.group(1), m.group(3).strip())
            target = None
            continue
        m = re.match(r"^([^:=\s][^:=]*):(?!=)\s*(.*)$", line)
        if m and m.group(1).startswith("."):  # .PHONY and other special targets
            target = None
            continue
        if m:
            for t in m.group(1).split():
                raw[t] = []
                prereqs[t] = m.group(2).split()
            target = m.group(1).split()[-1]

    def expand(s: str) -> str:
        for _ in range(10):
            s2 = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), ""), s)
            if s2 == s:
                break
            s = s2
        return s

    return Makefile({k: expand(v) for k, v in variables.items()},
                    {t: [expand(r) for r in rs] for t, rs in raw.items()},
                    {t: [expand(p) for p in ps] for t, ps in prereqs.items()})
