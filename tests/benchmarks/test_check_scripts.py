"""benchmarks/check_two_stages.py's rule and benchmarks/bench_decoders.py end to end."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary(boundary=20, ci=(18, 22), clear=True, rising=0.006, plateau=0.001):
    slope = lambda e: {"estimate": e, "ci": [None, None]}  # noqa: E731
    return {"boundary": boundary, "ci": list(ci) if ci else None, "clear": clear,
            "accuracy": {"rising_slope": slope(rising), "plateau_slope": slope(plateau),
                         "ratio": None if rising in (0, None) else plateau / rising}}


@pytest.mark.parametrize("kw, ok, why", [
    ({}, True, "meets the rule"),
    ({"ci": (10, 31)}, False, "CI spans 21 > 20 steps"),
    ({"plateau": 0.0021}, False, "accuracy ratio 0.35 > 0.33"),
    ({"rising": -0.006, "plateau": -0.0001}, False, "held-out accuracy does not rise before the break"),
    ({"clear": False}, False, "no clear break"),
])
def test_two_stage_rule(kw, ok, why):
    assert load("check_two_stages").verdict(summary(**kw), 20, 1 / 3) == (ok, why)


def test_bench_decoders_runs_and_matches_scoring():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "bench_decoders.py"), "--checkpoint", "/nonexistent",
                          "--prompts", "2", "--repeats", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "qwen2" in out.stdout and "hf-cache" in out.stdout and "ratio hf-cache / qwen2" in out.stdout
    devs = [float(line.rsplit(" ", 1)[1]) for line in out.stdout.splitlines() if "teacher-forced" in line]
    assert len(devs) == 2 and max(devs) < 1e-4


@pytest.mark.parametrize("backend, same", [("hf", True), ("static", False)])
def test_bench_collect_pads_the_vocabulary_and_both_pipelines_agree(backend, same):
    """hf draws generate's random numbers (the same responses as the naive pipeline); static its own, so its
    entropies are checked against a dense teacher-forced pass instead."""
    out = subprocess.run([sys.executable, str(BENCHMARKS / "bench_collect.py"), "--vocab", "3000", "--prompts", "2",
                          "--samples", "2", "--max-new-tokens", "6", "--backend", backend],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "vocab 3,000" in out.stdout and f"same responses in both: {same}" in out.stdout
    dh = float(out.stdout.rsplit("=", 1)[1].split()[0])
    assert dh < 1e-4 and "× peak memory" in out.stdout
