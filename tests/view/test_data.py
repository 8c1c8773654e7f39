"""page_data on hand-built stores: the curves are the analysis' own, the sample is stratified, fits the
budget and is deterministic."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from entropy_lens.analysis.context import RunView
from entropy_lens.errors import UserError
from entropy_lens.view.data import json_size, page_data
from tests.view.stores import write_store


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("view") / "store")


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("view") / "large", n_steps=5, n_prompts=20, group=8, length=120)


def test_curves_equal_the_analysis_step_curves(small):
    view = RunView.open(small)
    page = page_data(view)
    ref = view.curves
    assert page["curves"]["step"] == ref["step"].to_list()
    np.testing.assert_allclose(page["curves"]["entropy"], ref["entropy"].to_numpy(), atol=1e-3)
    np.testing.assert_allclose(page["curves"]["accuracy"], ref["accuracy"].to_numpy(), atol=1e-3)
    assert page["curves"]["n_tokens"] == ref["n_tokens"].to_list()


def test_every_step_in_curves_heat_maps_and_prompts(small):
    page = page_data(RunView.open(small))
    steps = [0, 1, 2, 3]
    assert page["curves"]["step"] == steps
    assert page["heat"]["position_entropy"]["steps"] == steps
    assert sorted(set(page["prompts"]["step"])) == steps
    assert sorted(set(page["responses"]["step"])) == steps
    assert page["heat"]["position_abs_delta_p"]["steps"] == [0, 1, 2]  # the last step has no next checkpoint
    assert page["heat"]["category_entropy"]["rows"]


def test_token_arrays_are_columnar_and_carry_every_metric(small):
    page = page_data(RunView.open(small), samples_per_step=2)
    n = page["offsets"][-1]
    assert set(page["metrics"]) == {"entropy", "logprob", "sum_p2", "grad_norm", "delta_logp", "dH_real", "dH_pred",
                                    "varentropy"}
    assert all(len(v) == n for v in page["metrics"].values()) and len(page["token_ids"]) == n
    assert all(str(i) in page["strings"] for i in page["token_ids"])
    assert len(page["offsets"]) == page["shown"] + 1


def test_stratification_keeps_correct_and_incorrect(small):
    page = page_data(RunView.open(small), samples_per_step=2)
    r = page["responses"]
    for step in range(4):
        shown = {c for s, c, t in zip(r["step"], r["correct"], r["tok"]) if s == step and t >= 0}
        assert shown == {True, False}, step


def test_groups_hold_every_response_of_a_shown_prompt(small):
    page = page_data(RunView.open(small), samples_per_step=1)
    r = pl.DataFrame({k: r for k, r in page["responses"].items()})
    per_group = r.group_by("step", "prompt_id").agg(pl.len().alias("n"), (pl.col("tok") >= 0).sum().alias("shown"))
    assert (per_group["n"] == 4).all() and (per_group["shown"] >= 1).all()


def test_the_sample_fits_max_mb_and_says_how_many(large):
    view = RunView.open(large)
    full = page_data(view, samples_per_step=160, max_mb=100)
    assert full["shown"] == full["total"] == 5 * 20 * 8
    page = page_data(view, samples_per_step=160, max_mb=0.3)
    assert json_size(page) <= 0.3e6
    assert 5 <= page["shown"] < page["total"] == 800
    assert page["shown"] == 5 * page["per_step"]


def test_deterministic_given_a_seed(large):
    view = RunView.open(large)
    a, b = (json.dumps(page_data(view, samples_per_step=4, seed=3)) for _ in range(2))
    assert a == b
    assert json.dumps(page_data(view, samples_per_step=4, seed=4)) != a


def test_bad_settings_are_user_errors(small):
    view = RunView.open(small)
    with pytest.raises(UserError, match="samples-per-step"):
        page_data(view, samples_per_step=0)
    with pytest.raises(UserError, match="max-mb"):
        page_data(view, max_mb=0.001)
