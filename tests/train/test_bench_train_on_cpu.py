"""benchmarks/bench_train.py runs end to end (slow: opt in with -m slow; --vs-trl needs the bench extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train.py"


def run(*flags: str) -> str:
    out = subprocess.run([sys.executable, str(BENCH), "--checkpoint", "/nonexistent", "--threads", "1", *flags],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_standalone_prints_the_step_split():
    text = run("--repeats", "1", "--minibatches", "2")
    assert "sampling (static):" in text and "update:" in text
    assert "RL step:" in text and "sample " in text and "other " in text
    assert "fp32 matmul floor of the embedded step: sample " in text and "GFLOP/s measured" in text


@pytest.mark.slow
def test_vs_trl_prints_a_paired_ratio():
    pytest.importorskip("trl")
    text = run("--vs-trl", "--repeats", "1", "--warmup", "0", "--minibatches", "2")
    assert "TRL GRPOTrainer step (2 optimizer steps per generation batch)" in text
    assert "ratio entropy-lens / TRL:" in text and "median of 1 paired runs" in text
    assert "generate " in text and "rewards and π_old " in text and "fp32 matmul floor" in text
