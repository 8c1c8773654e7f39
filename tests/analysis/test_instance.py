import math

import numpy as np
import polars as pl
import pytest

from entropy_lens.analysis.instance import PPL_BUCKETINGS, ppl_bucket_updates, ppl_buckets, ppl_weights
from entropy_lens.errors import UnknownNameError

from tests.analysis.store_builders import make_samples, make_tokens, make_updates

GROUPS = {
    (0, 0): [1.0, 1.1, 1.2, 1.3, 5.0],          # 5.0 is an IQR outlier
    (0, 1): [2.0, 2.0, 2.0, 2.0],               # σ = 0 → 1
    (1, 0): list(np.random.default_rng(3).normal(1.5, 0.4, 8)),
}


def _samples():
    rows = []
    for (step, pid), vals in GROUPS.items():
        rows += [dict(step=step, prompt_id=pid, sample_id=i, logppl=v, correct=i % 2 == 0) for i, v in enumerate(vals)]
    return make_samples(rows)


def naive_w_ppl(values):
    """The released code's calculate_ppl, one group, in plain Python."""
    x = np.asarray(values, dtype=np.float64)
    q1, q3 = np.quantile(x, 0.25), np.quantile(x, 0.75)  # linear, like torch.quantile
    iqr = q3 - q1
    inl = [v for v in x if q1 - 1.5 * iqr <= v <= q3 + 1.5 * iqr] or list(x)
    mu = sum(inl) / len(inl)
    sd = math.sqrt(sum((v - mu) ** 2 for v in inl) / len(inl))
    if sd <= 1e-6:
        sd = 1.0
    return [(v - mu) / sd for v in x]


def test_w_ppl_matches_naive_loop():
    s = _samples()
    df = ppl_weights(samples=s)
    stored = s.collect()  # float32-rounded logppl, as the oracle must see it
    for (step, pid) in GROUPS:
        vals = stored.filter((pl.col("step") == step) & (pl.col("prompt_id") == pid)).sort("sample_id")["logppl"].cast(pl.Float64).to_list()
        got = df.filter((pl.col("step") == step) & (pl.col("prompt_id") == pid)).sort("sample_id")["w_ppl"].to_list()
        assert got == pytest.approx(naive_w_ppl(vals), rel=1e-9, abs=1e-9)


def test_w_ppl_hand_values():
    df = ppl_weights(samples=_samples()).filter(pl.col("step") == 0)
    g0 = df.filter(pl.col("prompt_id") == 0).sort("sample_id")
    # Q1 = 1.1, Q3 = 1.3 → inliers 1.0..1.3, μ = 1.15, σ = sqrt(0.0125); the outlier keeps a weight
    assert g0["inlier"].to_list() == [True, True, True, True, False]
    assert g0["mu"][0] == pytest.approx(1.15, abs=1e-6)
    assert g0["sigma"][0] == pytest.approx(math.sqrt(0.0125), abs=1e-6)
    assert g0["w_ppl"][4] == pytest.approx((5.0 - 1.15) / math.sqrt(0.0125), rel=1e-5)
    g1 = df.filter(pl.col("prompt_id") == 1)
    assert g1["sigma"].to_list() == [1.0] * 4 and g1["w_ppl"].to_list() == [0.0] * 4


def test_buckets():
    b = ppl_buckets(samples=_samples(), bucketing="group_z").filter((pl.col("step") == 0) & (pl.col("prompt_id") == 0))
    assert b.sort("sample_id")["ppl_bucket"].to_list() == ["low", "mid", "mid", "high", "high"]
    s = make_samples([dict(step=0, prompt_id=0, sample_id=i, logppl=v) for i, v in enumerate([6, 5, 4, 3, 2, 1])])
    q = ppl_buckets(samples=s, bucketing="quantile", n_bins=3).sort("sample_id")
    assert q["ppl_bucket"].to_list() == ["high", "high", "mid", "mid", "low", "low"]
    assert {"group_z", "quantile"} <= set(PPL_BUCKETINGS.names())
    with pytest.raises(UnknownNameError, match="did you mean"):
        ppl_buckets(samples=s, bucketing="quantiles")


def test_ppl_bucket_updates_share():
    # one group, logPPL 1..4 → w ≈ [-1.34, -0.45, 0.45, 1.34] → low, mid, mid, high
    samples = make_samples([dict(step=0, prompt_id=0, sample_id=i, logppl=float(i + 1), correct=i < 2) for i in range(4)])
    tokens = make_tokens([dict(step=0, prompt_id=0, sample_id=i, entropy=[float(j) for j in range(10)]) for i in range(4)])
    updates = make_updates(tokens, {(0, 0, 0, 9): 0.9, (0, 0, 3, 9): 0.6})
    df = ppl_bucket_updates(tokens=tokens, updates=updates, samples=samples, top_frac=0.025)
    r = {x["ppl_bucket"]: x for x in df.iter_rows(named=True)}
    assert df["ppl_bucket"].to_list() == ["low", "mid", "high"]
    assert r["low"]["share_top"] == 1.0 and r["high"]["share_top"] == 0.0
    assert r["low"]["share_tokens"] == 0.25 and r["low"]["enrichment"] == 4.0
    assert (r["mid"]["n_samples"], r["mid"]["accuracy"]) == (2, 0.5)
    # high-entropy = entropy ≥ per-step q0.8 (= 7.2) → positions 8, 9 in each sample
    assert r["low"]["n_high_entropy"] == 2
    assert r["low"]["mean_abs_delta_p_high_entropy"] == pytest.approx(0.2, abs=1e-6)
    assert r["high"]["mean_abs_delta_p_high_entropy"] == pytest.approx(0.05, abs=1e-6)
