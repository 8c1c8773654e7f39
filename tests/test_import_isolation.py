"""analysis/, plots/ and view/ must never pull in torch or transformers (DESIGN.md: dependency direction).

One fresh interpreter imports every module of both packages in turn and checks ``sys.modules`` after each
import, so the first offending module is named.
"""

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules(pkg: str) -> list[str]:
    path = ROOT / "entropy_lens" / pkg
    return [f"entropy_lens.{pkg}"] + [f"entropy_lens.{pkg}.{m.name}" for m in pkgutil.iter_modules([str(path)])]


def test_analysis_plots_and_view_never_import_torch():
    modules = _modules("analysis") + _modules("plots") + _modules("view")
    assert len(modules) > 10
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "    bad = [x for x in ('torch', 'transformers') if x in sys.modules]\n"
        "    assert not bad, f'{m} imported {bad}'\n"
        "print('ok', len(" + repr(modules) + "))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")
