"""The analysis side of the CLI runs without the models extra (torch, transformers, tokenizers, Math-Verify).

Each command runs in a fresh interpreter whose import system refuses those packages (and records every
attempt), on a small synthetic store written without torch: ``--help``, ``ls``, ``validate``, ``report`` and ``view``
must succeed without trying to import any of them, and a command that loads a model must say, in one line,
which extra to install.  ``test_fresh_venv_without_models`` (slow) checks the same in a real virtual
environment holding only the base dependencies.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "transformers", "tokenizers", "math_verify")
# A real import of a blocked package is recorded and fails; a probe (importlib.util.find_spec, as polars
# does to see what is installed) is told the package is absent, which is the truth without the extra.
RUNNER = f"""
import atexit, importlib.abc, json, sys, traceback
attempts = []
class NoModels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in {BLOCKED!r}:
            return None
        if any(f.filename == "<frozen importlib.util>" for f in traceback.extract_stack()):
            return None
        attempts.append(name)
        raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NoModels())
atexit.register(lambda: print("ATTEMPTS=" + json.dumps(sorted(set(attempts))), file=sys.stderr))
from entropy_lens.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory) -> Path:
    from benchmarks.bench_analysis import generate

    root = tmp_path_factory.mktemp("synthetic") / "store"
    generate(root, rows=6000, n_steps=6, seed=0)
    return root


def run_blocked(*argv: str) -> tuple[int, str, str, list[str]]:
    r = subprocess.run([sys.executable, "-c", RUNNER, *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    lines = r.stderr.strip().splitlines()
    attempts = json.loads(lines[-1].removeprefix("ATTEMPTS=")) if lines and lines[-1].startswith("ATTEMPTS=") else None
    return r.returncode, r.stdout, "\n".join(lines[:-1]), attempts


@pytest.mark.parametrize("argv", [["--help"], ["ls"], ["report", "--help"], ["view", "--help"], ["collect", "--help"]])
def test_help_and_ls_import_no_model_package(argv):
    code, out, err, attempts = run_blocked(*argv)
    assert code == 0, err
    assert attempts == [], attempts
    assert out.strip()


def test_validate_and_report_import_no_model_package(synthetic_store, tmp_path):
    code, out, err, attempts = run_blocked("validate", str(synthetic_store))
    assert (code, attempts) == (0, []), err
    assert "sweep store" in out and "tokens rows" in out
    code, out, err, attempts = run_blocked("report", str(synthetic_store), "--out", str(tmp_path / "report"))
    assert (code, attempts) == (0, []), err
    assert (tmp_path / "report" / "REPORT.md").is_file() and list((tmp_path / "report").rglob("*.png"))


def test_view_imports_no_model_package(synthetic_store, tmp_path):
    code, out, err, attempts = run_blocked("view", str(synthetic_store), "--out", str(tmp_path / "page.html"))
    assert (code, attempts) == (0, []), err
    assert "showing" in out and (tmp_path / "page.html").is_file()


@pytest.mark.parametrize("command", ["train", "collect", "score", "intervene"])
def test_model_commands_name_the_extra(command, synthetic_store, tmp_path):
    args = {"train": ["--out", str(tmp_path / "run")], "collect": [str(tmp_path)],
            "score": [str(tmp_path), "--rollouts", str(tmp_path), "--out", str(tmp_path / "s")], "intervene": [str(synthetic_store)]}[command]
    code, out, err, _ = run_blocked(command, *args)
    assert code == 2
    assert err.splitlines() == [f"entropy-lens {command}: error: entropy-lens {command} needs torch, which this "
                                "installation lacks; install the models extra: pip install 'entropy-lens[models]'"]


@pytest.mark.slow
def test_fresh_venv_without_models(tmp_path, synthetic_store):
    """``pip install entropy-lens`` (base dependencies only, from the index) validates and reports a store."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", str(ROOT)], check=True, timeout=1200)
    check = subprocess.run([py, "-c", "import importlib.util as u; print([m for m in %r if u.find_spec(m)])"
                            % (BLOCKED,)], capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "[]", "the base install pulled in a model package"
    cli = env_dir / "bin" / "entropy-lens"
    for argv in (["validate", str(synthetic_store)], ["report", str(synthetic_store), "--out", str(tmp_path / "r")]):
        r = subprocess.run([cli, *argv], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([cli, "train", "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 2 and "pip install 'entropy-lens[models]'" in r.stderr
