import math

import polars as pl
import pytest

from entropy_lens.analysis.updates import (
    delta_p_distribution,
    delta_p_histogram,
    significant_update_sets,
    token_updates,
    update_by_entropy_bin,
)

from tests.analysis.store_builders import make_samples, make_tokens, make_updates


def _store():
    tokens = make_tokens([
        dict(step=0, prompt_id=0, sample_id=0, entropy=[0.1, 0.2, 2.0, 0.3]),  # positive
        dict(step=0, prompt_id=0, sample_id=1, entropy=[3.0, 0.2, 0.1, 0.3]),  # negative
    ])
    samples = make_samples([dict(step=0, prompt_id=0, sample_id=0, correct=True),
                            dict(step=0, prompt_id=0, sample_id=1, correct=False)])
    updates = make_updates(tokens, {(0, 0, 0, 1): 0.5005, (0, 0, 0, 2): 0.7, (0, 0, 1, 0): 0.3})
    return tokens, samples, updates


def test_token_updates_columns():
    tokens, samples, updates = _store()
    df = token_updates(tokens=tokens, updates=updates, samples=samples).collect().sort("sample_id", "position")
    assert df["delta_p"].to_list() == pytest.approx([0, 5e-4, 0.2, 0, -0.2, 0, 0, 0], abs=1e-6)
    assert df["delta_logp"][2] == pytest.approx(math.log(0.7 / 0.5), abs=1e-6)
    assert df["grad_norm"][0] == pytest.approx(math.sqrt(1 - 1.0 + 0.25), abs=1e-6)


def test_delta_p_shares_exact():
    tokens, samples, updates = _store()
    df = delta_p_distribution(tokens=tokens, updates=updates, samples=samples, small=1e-3)
    r = {x["polarity"]: x for x in df.iter_rows(named=True)}
    assert r["positive"]["n"] == 4
    assert r["positive"]["share_small"] == 0.75 and r["positive"]["share_increase"] == 0.25
    assert r["positive"]["share_decrease"] == 0.0
    assert r["negative"]["share_decrease"] == 0.25 and r["negative"]["share_small"] == 0.75
    assert r["negative"]["q50"] == 0.0


def test_delta_p_histogram_bins():
    tokens, samples, updates = _store()
    df = delta_p_histogram(tokens=tokens, updates=updates, samples=samples, bins_per_decade=2)
    pos = df.filter(pl.col("polarity") == "positive")
    assert pos["share"].sum() == pytest.approx(1.0)
    inc = pos.filter(pl.col("direction") == "increase").sort("bin_low")
    assert inc["count"].to_list() == [1, 1]
    assert inc["bin_low"].to_list() == pytest.approx([10 ** -3.5, 0.1])  # 5e-4 and 0.2
    assert pos.filter(pl.col("direction") == "zero")["count"].to_list() == [2]
    neg = df.filter((pl.col("polarity") == "negative") & (pl.col("direction") == "decrease"))
    assert neg["bin_low"].to_list() == pytest.approx([0.1]) and neg["share"].to_list() == [0.25]


def test_update_by_entropy_bin_exact():
    tokens = make_tokens([dict(step=0, prompt_id=0, sample_id=0, entropy=[float(i) for i in range(10)],
                               probs=[0.2] * 10, sum_p2=0.1)])
    updates = make_updates(tokens, {(0, 0, 0, 9): 0.6})
    df = update_by_entropy_bin(tokens=tokens, updates=updates, n_bins=2, top_frac=0.1)
    assert df["entropy_bin"].to_list() == [0, 1]
    assert df["n"].to_list() == [5, 5]
    assert df["entropy_low"].to_list() == pytest.approx([0.0, 4.5])
    assert df["entropy_mean"].to_list() == pytest.approx([2.0, 7.0])
    assert df["mean_grad_norm"].to_list() == pytest.approx([math.sqrt(0.7)] * 2, abs=1e-6)
    assert df["share_significant"].to_list() == [0.0, 0.2]
    assert df["share_of_significant"].to_list() == [0.0, 1.0]
    assert df["mean_abs_delta_p"].to_list() == pytest.approx([0.0, 0.4 / 5], abs=1e-6)
    # without updates: entropy and gradient only
    df2 = update_by_entropy_bin(tokens=tokens, n_bins=2)
    assert "mean_abs_delta_p" not in df2.columns and df2["n"].to_list() == [5, 5]


def test_significant_update_sets():
    tokens, samples, updates = _store()
    df = significant_update_sets(tokens=tokens, updates=updates, samples=samples, top_frac=0.25)
    r = {x["set"]: x for x in df.iter_rows(named=True)}
    # 8 tokens; q0.75 of |Δp| ≈ 0.05 → top = the two |Δp| = 0.2 tokens
    assert r["all"]["n"] == 8 and r["top"]["n"] == 2
    assert r["top"]["entropy_mean"] == pytest.approx(2.5)
    assert r["reinforced"]["n"] == 1 and r["reinforced"]["entropy_mean"] == pytest.approx(2.0)
    assert r["suppressed"]["n"] == 1 and r["suppressed"]["entropy_mean"] == pytest.approx(3.0)
    assert r["top"]["diff_vs_rest"] == pytest.approx(2.5 - (0.1 + 0.2 + 0.3 + 0.2 + 0.1 + 0.3) / 6, abs=1e-6)
    assert r["top"]["ci_low"] < r["top"]["diff_vs_rest"] < r["top"]["ci_high"]
    # explicit tau
    df = significant_update_sets(tokens=tokens, updates=updates, samples=samples, tau=1e-4)
    assert {x["set"]: x["n"] for x in df.iter_rows(named=True)}["reinforced"] == 2
