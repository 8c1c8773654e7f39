"""The house's rules, checked on the source with ``ast``: import directions, no cycles, short functions.

Every import counts, module-level and function-local alike (``import x``, ``from x import y`` and relative
imports resolved against the importing module).  The rules (DESIGN.md, "Dependency direction"):

* ``analysis`` never imports plots, capture, train, report, ops or models (nor torch / transformers);
* ``plots`` never imports analysis, capture, train or report;
* ``capture`` never imports analysis, train or report;
* the trainer never imports the sweep driver (``capture.sweep``);
* ``view`` (the explorer) imports analysis and the store, never plots, capture, train, report, ops or models;
* ``store`` imports neither capture nor analysis; ``ops`` imports no store;
* ``integrations`` (peer trainers: TRL, verl) import capture, train, store and ops, never analysis, plots or report,
  and nothing in the package imports them (each pulls in an optional trainer library);
* no import cycle between the package's modules;
* no function longer than 150 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "entropy_lens"

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "entropy_lens.analysis": ("entropy_lens.plots", "entropy_lens.capture", "entropy_lens.train",
                              "entropy_lens.report", "entropy_lens.ops", "entropy_lens.models", "torch",
                              "transformers"),
    "entropy_lens.plots": ("entropy_lens.analysis", "entropy_lens.capture", "entropy_lens.train",
                           "entropy_lens.report"),
    "entropy_lens.capture": ("entropy_lens.analysis", "entropy_lens.train", "entropy_lens.report"),
    "entropy_lens.train": ("entropy_lens.capture.sweep",),
    "entropy_lens.store": ("entropy_lens.capture", "entropy_lens.analysis"),
    "entropy_lens.ops": ("entropy_lens.store",),
    "entropy_lens.integrations": ("entropy_lens.analysis", "entropy_lens.plots", "entropy_lens.report",
                                  "entropy_lens.cli"),
    "entropy_lens.view": ("entropy_lens.plots", "entropy_lens.capture", "entropy_lens.train", "entropy_lens.report",
                          "entropy_lens.ops", "entropy_lens.models", "torch", "transformers"),
}
MAX_FUNCTION_LINES = 150


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PKG.rglob("*.py"))}


def imported(name: str, tree: ast.Module, is_package: bool) -> set[str]:
    """Every module ``name`` imports, anywhere in the file (``from a import b`` counts ``a`` and ``a.b``)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    is_pkg = {m: (PKG.parent / m.replace(".", "/") / "__init__.py").is_file() for m in mods}
    return {m: imported(m, t, is_pkg[m]) for m, t in mods.items()}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_checker_sees_function_local_imports():
    tree = ast.parse("def f():\n    from entropy_lens.plots import style\n    import torch\n")
    found = imported("entropy_lens.analysis.x", tree, False)
    assert {"entropy_lens.plots", "entropy_lens.plots.style", "torch"} <= found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_import_directions(graph, layer):
    bad = sorted(f"{m} imports {i}" for m, imps in graph.items() if within(m, layer)
                 for i in imps for f in FORBIDDEN[layer] if within(i, f))
    assert not bad, "\n".join(bad)


def test_nothing_imports_the_integrations(graph):
    bad = sorted(f"{m} imports {i}" for m, imps in graph.items() if not within(m, "entropy_lens.integrations")
                 for i in imps if within(i, "entropy_lens.integrations"))
    assert not bad, "\n".join(bad)


def test_no_import_cycles(graph):
    internal = {m: {i for i in imps if i in graph and i != m} for m, imps in graph.items()}
    colour: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        colour[m] = 1
        stack.append(m)
        for n in sorted(internal[m]):
            if colour.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in colour:
                visit(n)
        stack.pop()
        colour[m] = 2

    for m in sorted(internal):
        if m not in colour:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_no_function_over_150_lines():
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "\n".join(long)
