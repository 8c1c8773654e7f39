"""`entropy-lens stages`: planted breaks are found with calibrated intervals, a straight line has none.

Every curve goes through the command line as a user would run it: a ``steps.parquet`` file written per
curve, ``entropy-lens stages FILE --json``, the printed object parsed.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from entropy_lens.cli import main

KEYS = {"boundary", "ci", "detector", "column", "rising_slope", "plateau_slope", "n_steps", "clear", "p_value"}


def write_steps(path, entropy, step=None, **extra):
    step = np.arange(len(entropy)) if step is None else step
    pl.DataFrame({"step": step, "entropy": entropy, **extra}).write_parquet(path)
    return path


def stages_json(capsys, *argv) -> dict:
    assert main(["stages", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def planted(rng, tau, sd, n=90, slope=-0.003):
    x = np.arange(n, dtype=float)
    return 0.24 + slope * x + (slope / 6 - slope) * np.maximum(0.0, x - tau) + rng.normal(0, sd, n)


@pytest.mark.parametrize("sd", [0.004, 0.008])
def test_planted_breaks_through_the_cli(tmp_path, capsys, sd):
    """Breaks at 20, 30, 45 of 90 steps, the plateau slope a sixth of the rising one: the 95% CI covers the
    planted break in ≥ 85% of curves and the median error is ≤ 3 steps."""
    rng = np.random.default_rng(11)
    covered, errors = [], []
    for tau in (20, 30, 45):
        for i in range(30):
            out = stages_json(capsys, write_steps(tmp_path / f"s{tau}_{i}.parquet", planted(rng, tau, sd)))
            assert KEYS <= set(out) and out["detector"] == "segmented" and out["column"] == "entropy"
            assert out["n_steps"] == 90 and out["clear"]
            covered.append(out["ci"][0] <= tau <= out["ci"][1])
            errors.append(abs(out["boundary"] - tau))
    assert np.mean(covered) >= 0.85, np.mean(covered)
    assert np.median(errors) <= 3


def test_a_straight_line_has_no_clear_break(tmp_path, capsys):
    rng = np.random.default_rng(5)
    clear = [stages_json(capsys, write_steps(tmp_path / f"l{i}.parquet", 0.24 - 0.002 * np.arange(90)
                                                + rng.normal(0, 0.006, 90)))["clear"] for i in range(60)]
    assert np.mean(clear) <= 0.1
    assert main(["stages", str(tmp_path / "l0.parquet")]) == 0
    text = capsys.readouterr().out
    assert "No clear break in entropy over 90 steps" in text or "Rising → plateau break" in text


def test_json_slopes_and_accuracy_ratio(tmp_path, capsys):
    x = np.arange(60.0)
    entropy = 0.3 - 0.004 * x + 0.0036 * np.maximum(0.0, x - 25)  # exact hinge at 25
    acc = np.where(x % 10 == 0, np.where(x < 25, 0.2 + 0.012 * x, 0.5 + 0.002 * (x - 25)), np.nan)
    out = stages_json(capsys, write_steps(tmp_path / "s.parquet", entropy, eval_accuracy=acc))
    assert out["boundary"] == 25 and out["ci"] == [25, 25] and out["clear"]
    assert out["rising_slope"]["estimate"] == pytest.approx(-0.004)
    assert out["plateau_slope"]["estimate"] == pytest.approx(-0.0004)
    assert out["accuracy"]["column"] == "eval_accuracy"
    assert out["accuracy"]["ratio"] == pytest.approx(0.002 / 0.012)


def test_other_detector_and_column(tmp_path, capsys):
    x = np.arange(60.0)
    f = write_steps(tmp_path / "s.parquet", 0.3 - 0.004 * x + 0.0036 * np.maximum(0.0, x - 25), reward=0.01 * x)
    out = stages_json(capsys, f, "--detector", "knee")
    assert out["detector"] == "knee" and out["ci"] is None and out["p_value"] is None
    assert abs(out["boundary"] - 25) <= 3
    assert stages_json(capsys, f, "--column", "reward")["column"] == "reward"


@pytest.mark.parametrize("argv, message", [
    (["/nonexistent/run"], "not a store, a steps.parquet file"),
    (["{tmp}/s.parquet", "--column", "entropyy"], "did you mean 'entropy'?"),
    (["{tmp}/s.parquet", "--detector", "kneee"], "unknown stage detector 'kneee'; did you mean 'knee'"),
    (["{tmp}/short.parquet"], "needs at least 7 steps"),
    (["{tmp}/nostep.parquet"], "no 'step' column"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    write_steps(tmp_path / "s.parquet", np.linspace(1, 0, 30))
    write_steps(tmp_path / "short.parquet", np.linspace(1, 0, 5))
    pl.DataFrame({"entropy": [1.0, 0.5]}).write_parquet(tmp_path / "nostep.parquet")
    assert main(["stages", *[a.format(tmp=tmp_path) for a in argv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
