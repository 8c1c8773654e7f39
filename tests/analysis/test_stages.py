import numpy as np
import polars as pl
import pytest

from entropy_lens.analysis.stages import (
    STAGE_DETECTORS,
    StageBoundary,
    detect_stage_boundary,
    label_stages,
    step_curves,
)
from entropy_lens.errors import UnknownNameError


def planted_curves(knee=30, n=100, noise=0.004, spacing=1):
    rng = np.random.default_rng(0)
    s = np.arange(n) * spacing
    k = knee
    late = (s - k) / k  # plateau slopes ~1.5-2% of the rising slopes
    h = np.where(s <= k, 1.0 - 0.7 * s / k, 0.3 - 0.015 * late) + rng.normal(0, noise, n)
    acc = np.where(s <= k, 0.1 + 0.5 * s / k, 0.6 + 0.01 * late) + rng.normal(0, noise, n)
    return pl.DataFrame({"step": s, "entropy": h, "accuracy": acc})


@pytest.mark.parametrize("detector", ["segmented", "knee", "slope"])
def test_planted_knee_found(detector):
    b = detect_stage_boundary(planted_curves(), detector)
    assert isinstance(b, StageBoundary) and b.detector == detector
    assert abs(b.step - 30) <= 2, b


@pytest.mark.parametrize("detector", ["knee", "slope"])
def test_planted_knee_with_checkpoint_spacing(detector):
    b = detect_stage_boundary(planted_curves(knee=300, n=60, spacing=10, noise=0.002), detector)
    assert abs(b.step - 300) <= 20, b


def test_manual_override_and_registry():
    b = detect_stage_boundary(planted_curves(), "knee", boundary=200)
    assert (b.step, b.detector) == (200, "manual")
    assert {"knee", "slope"} <= set(STAGE_DETECTORS.names())
    with pytest.raises(UnknownNameError, match="did you mean 'knee'"):
        detect_stage_boundary(planted_curves(), "kneee")


def test_label_stages():
    df = label_stages(pl.DataFrame({"step": [0, 10, 20, 30]}), StageBoundary(20, "manual"))
    assert df["stage"].to_list() == ["rising", "rising", "plateau", "plateau"]


def test_step_curves_from_tokens_and_samples(tiny_store):
    tokens, samples = tiny_store
    c = step_curves(tokens=tokens, samples=samples)
    assert c["step"].to_list() == [0, 1]
    assert c["entropy"].to_list() == pytest.approx([21 / 6, 10.5 / 5])
    assert c["accuracy"].to_list() == pytest.approx([0.5, 2 / 3])
    assert c["n_tokens"].to_list() == [6, 5]
    assert c["n_samples"].to_list() == [2, 3]


def test_step_curves_prefers_steps_table(tiny_store):
    tokens, samples = tiny_store
    steps = pl.LazyFrame({"step": [0, 1], "entropy": [9.0, None], "accuracy": [0.25, 0.75], "eval_accuracy": [None, 0.4]},
                         schema={"step": pl.Int32, "entropy": pl.Float64, "accuracy": pl.Float64, "eval_accuracy": pl.Float64})
    c = step_curves(tokens=tokens, samples=samples, steps=steps)
    assert c["entropy"].to_list() == pytest.approx([9.0, 10.5 / 5])  # null in steps → token mean
    assert c["accuracy"].to_list() == pytest.approx([0.25, 0.75])
    assert c["eval_accuracy"].to_list() == [None, 0.4]


def test_missing_column_is_a_user_error(tiny_store):
    from entropy_lens.errors import UserError

    tokens, samples = tiny_store
    with pytest.raises(UserError, match="lacks column"):
        step_curves(tokens=tokens.drop("entropy"))
    with pytest.raises(UserError, match="at least one"):
        step_curves()
