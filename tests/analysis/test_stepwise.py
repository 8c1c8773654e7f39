"""The step-at-a-time Δp machinery: row-for-row pairing of tokens and updates (with its fall-back to the
join), exact per-step quantiles, the Store view, and results equal to the plain join's."""

import math

import numpy as np
import polars as pl
import pytest

import entropy_lens
import entropy_lens.analysis.stepwise as stepwise
from entropy_lens.analysis.frames import with_updates
from entropy_lens.analysis.stepwise import quantiles_linear
from entropy_lens.analysis.position import _region_means, u_shape_summary, update_by_position
from entropy_lens.analysis.stats import bootstrap_ci, bootstrap_cis
from entropy_lens.analysis.updates import (
    _entropy_bin_expr,
    _entropy_bins,
    delta_p_distribution,
    significant_update_sets,
    update_by_entropy_bin,
)
from entropy_lens.store import StepPairs, StoreWriter

KEY = ["step", "prompt_id", "sample_id", "position"]


def _random_store(seed=0, steps=(0, 10, 20), n_resp=6):
    rng = np.random.default_rng(seed)
    toks, smps = [], []
    for step in steps:
        for i in range(n_resp):
            L = int(rng.integers(3, 30))
            lp = -rng.exponential(0.6, L)
            toks.append(pl.DataFrame({
                "step": [step] * L, "prompt_id": [i // 2] * L, "sample_id": [i % 2] * L, "position": list(range(L)),
                "rel_position": [t / L for t in range(L)], "token_id": rng.integers(0, 50, L).tolist(),
                "logprob": lp.tolist(), "entropy": rng.gamma(1.0, 1.0, L).tolist(), "sum_p2": (np.exp(lp) ** 2).tolist(),
            }))
            smps.append(dict(step=step, prompt_id=i // 2, sample_id=i % 2, correct=bool(rng.random() < 0.5)))
    schema = dict(step=pl.Int32, prompt_id=pl.Int32, sample_id=pl.Int32, position=pl.Int32, rel_position=pl.Float32,
                  token_id=pl.Int32, logprob=pl.Float32, entropy=pl.Float32, sum_p2=pl.Float32)
    tokens = pl.concat(toks).cast(schema)
    updates = tokens.select(*KEY, (pl.col("step") + 10).alias("next_step"),
                            (pl.col("logprob") + pl.Series(rng.normal(0, 0.3, tokens.height))).clip(upper_bound=0.0)
                            .cast(pl.Float32).alias("logprob_next"))
    samples = pl.DataFrame(smps).cast({"step": pl.Int32, "prompt_id": pl.Int32, "sample_id": pl.Int32})
    return tokens, updates, samples


def _joined(tokens, updates):
    return tokens.join(updates.select(*KEY, "logprob_next"), on=KEY, how="inner")


def test_quantiles_linear_matches_polars_bit_for_bit():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 1000, 5000):
        x = np.round(rng.normal(size=n), 2)  # ties
        qs = [0.0, 0.001, 0.01, 0.25, 0.5, 0.8, 0.99, 0.999, 1.0, float(rng.random())]
        want = [pl.Series(x).quantile(q, interpolation="linear") for q in qs]
        assert quantiles_linear(x, qs) == want
    assert quantiles_linear(np.empty(0), [0.5]) == [None]



def _same(a, b) -> bool:
    """Equal lists of floats, NaN equal to NaN (bit-for-bit otherwise)."""
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def test_quantiles_linear_sort_path_and_in_place(monkeypatch):
    """Above SORT_ABOVE values (with several qs) are sorted, below partitioned: both bit for bit as polars on
    the Float64 cast, NaN last; the input is sorted in place only when asked and writable."""
    rng = np.random.default_rng(8)
    qs = [0.0, 0.001, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999, 1.0, float(rng.random())]
    x = np.round(rng.normal(size=stepwise.SORT_ABOVE + 3), 3).astype(np.float32)  # the real threshold; ties
    x[::100_003] = np.nan
    want = [pl.Series(x).cast(pl.Float64).quantile(q, interpolation="linear") for q in qs]
    assert _same(quantiles_linear(x, qs), want)
    monkeypatch.setattr(stepwise, "SORT_ABOVE", 8)
    for n in (1, 2, 7, 8, 9, 100, 1001):
        for dtype in (np.float32, np.float64):
            x = np.round(rng.normal(size=n), 1).astype(dtype)
            if n > 50:
                x[::13] = np.nan
            want = [pl.Series(x).cast(pl.Float64).quantile(q, interpolation="linear") for q in qs]
            before = x.copy()
            assert _same(quantiles_linear(x, qs), want)
            assert np.array_equal(x, before, equal_nan=True)  # not asked: untouched
            x.flags.writeable = False
            assert _same(quantiles_linear(x, qs, overwrite_input=True), want)  # read-only: copied
            x = x.copy()
            assert _same(quantiles_linear(x, qs, overwrite_input=True), want)
            assert n < 8 or np.array_equal(x, np.sort(before), equal_nan=True)  # sorted in place


@pytest.mark.parametrize("dtype", [pl.Float32, pl.Float64])
def test_entropy_bins_equal_the_polars_expression(dtype):
    """numpy binning (a comparison per edge up to 16 inner edges, a binary search beyond) = the polars
    expression, for ties with the edges and null entropies; one bin: all rows in bin 0.  NaN entropies go to
    bin 0 (polars would order NaN above every edge; the numpy path has always put them in bin 0)."""
    rng = np.random.default_rng(9)
    h = pl.Series("entropy", np.round(rng.gamma(1.0, 1.0, 5000), 1)).cast(dtype)  # ties with the edges
    h = h.scatter([3, 70], None).scatter([5, 6], float("nan"))
    clean = h.drop_nulls().drop_nans().cast(pl.Float64)
    for n_bins in (1, 2, 10, 17, 18, 40):
        edges = [clean.quantile(i / n_bins, "linear") for i in range(n_bins + 1)]
        got = _entropy_bins(h, edges)
        want = h.to_frame().select(_entropy_bin_expr(edges)).to_series() if n_bins > 1 else pl.Series([0] * h.len())
        want = want.scatter([5, 6], 0)  # the NaN rows
        assert got.dtype == pl.Int64 and got.to_list() == want.to_list(), n_bins
    assert _entropy_bins(h, [0.0, 0.5, float("nan"), 9.0]).to_list() == \
        h.to_frame().select(_entropy_bin_expr([0.0, 0.5, float("nan"), 9.0])).to_series().to_list()


@pytest.mark.parametrize("sort_above", [stepwise.SORT_ABOVE, 16])
def test_update_by_entropy_bin_and_quantiles_against_the_join(monkeypatch, sort_above):
    """Edges, bin counts, significant counts and Δp quantiles equal a plain polars computation on the join,
    both with partial sorts (small inputs) and full sorts (SORT_ABOVE lowered); any number of bins."""
    monkeypatch.setattr(stepwise, "SORT_ABOVE", sort_above)
    tokens, updates, samples = _random_store(seed=10, steps=(0, 10, 20, 30), n_resp=8)
    j = _joined(tokens, updates).join(samples, on=["step", "prompt_id", "sample_id"])
    j = j.with_columns((pl.col("logprob_next").cast(pl.Float64).exp() - pl.col("logprob").cast(pl.Float64).exp()).alias("dp"))
    j = j.with_columns(pl.col("dp").abs().alias("adp"))
    j = j.with_columns(((pl.col("adp") >= pl.col("adp").quantile(0.9, "linear").over("step")) & (pl.col("adp") > 0)).alias("top"))
    for n_bins in (1, 3, 20):
        got = update_by_entropy_bin(tokens=tokens.lazy(), updates=updates.lazy(), n_bins=n_bins, top_frac=0.1,
                                    boundary=20, stage="rising")
        rising = j.filter(pl.col("step") < 20)
        edges = [rising["entropy"].cast(pl.Float64).quantile(i / n_bins, "linear") for i in range(n_bins + 1)]
        naive = (rising.with_columns(_entropy_bin_expr(edges)).group_by("entropy_bin")
                 .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("top").sum().cast(pl.Int64).alias("sig")).sort("entropy_bin"))
        assert got["entropy_bin"].to_list() == naive["entropy_bin"].to_list()
        assert got["n"].to_list() == naive["n"].to_list()
        assert got["entropy_low"].to_list() == [edges[i] for i in naive["entropy_bin"]]
        assert got["entropy_high"].to_list() == [edges[i + 1] for i in naive["entropy_bin"]]
        assert (got["share_significant"] * got["n"]).round().cast(pl.Int64).to_list() == naive["sig"].to_list()
    qs = (0.001, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999)
    dist = delta_p_distribution(tokens=tokens.lazy(), updates=updates.lazy(), samples=samples.lazy(), boundary=20)
    assert dist.height == 4
    for row in dist.iter_rows(named=True):
        g = j.filter((pl.col("correct") == (row["polarity"] == "positive"))
                     & ((pl.col("step") < 20) == (row["stage"] == "rising")))["dp"]
        assert row["n"] == g.len()
        assert [row[c] for c in ("q0_1", "q1", "q25", "q50", "q75", "q99", "q99_9")] == [g.quantile(q, "linear") for q in qs]

def test_pairing_aligned_and_misaligned_steps_give_the_join():
    tokens, updates, _ = _random_store()
    # step 10: a row missing; step 20: rows shuffled; step 30: only in tokens
    u10 = updates.filter(pl.col("step") == 10)
    u = pl.concat([updates.filter(pl.col("step") == 0), u10.slice(1), updates.filter(pl.col("step") == 20).sample(
        fraction=1.0, shuffle=True, seed=3)])
    t = pl.concat([tokens, tokens.filter(pl.col("step") == 0).with_columns(pl.lit(30, pl.Int32).alias("step"))])
    pairs = StepPairs(t.lazy(), u.lazy())
    assert pairs.steps == [0, 10, 20]
    want = _joined(t, u)
    for s in pairs.steps:
        got = pairs.frame(s, [*KEY, "logprob"])
        exp = want.filter(pl.col("step") == s).select(*KEY, "logprob", "logprob_next")
        assert got.sort(KEY).equals(exp.sort(KEY))
        assert pairs.frame(s, [*KEY, "logprob"]).sort(KEY).equals(exp.sort(KEY))  # second read: verdict remembered
    assert pairs._aligned == {0: True, 10: False, 20: False}
    lazy_view = with_updates(t.lazy(), u.lazy()).collect()
    assert lazy_view.height == want.height
    assert lazy_view.select(KEY).sort(KEY).equals(want.select(KEY).sort(KEY))


def test_store_view_and_functions_equal_the_join(tmp_path):
    tokens, updates, samples = _random_store(seed=2)
    with StoreWriter(tmp_path, kind="sweep", settings={}) as w:
        for s in (0, 10, 20):  # the last step has no updates
            tables = dict(tokens=tokens.filter(pl.col("step") == s).to_arrow())
            if s != 20:
                tables["updates"] = updates.filter(pl.col("step") == s).to_arrow()
            w.write_step(s, **tables)
    store = entropy_lens.open(tmp_path)
    view = store.tokens_with_updates().collect()
    want = _joined(tokens, updates.filter(pl.col("step") != 20))
    assert view.height == want.height and set(view["step"].unique()) == {0, 10}
    assert view.sort(KEY).select(*KEY, "logprob_next").equals(want.sort(KEY).select(*KEY, "logprob_next"))
    s_lf = samples.lazy()
    a = update_by_position(tokens=store.tokens, updates=store.updates, n_bins=4, top_frac=0.1)
    b = update_by_position(tokens=store.tokens_with_updates(), n_bins=4, top_frac=0.1)
    c = update_by_position(tokens=tokens.lazy(), updates=updates.filter(pl.col("step") != 20).lazy(), n_bins=4, top_frac=0.1)
    d = update_by_position(tokens=store.partitions("tokens"), updates=store.partitions("updates"), n_bins=4, top_frac=0.1)
    assert d.equals(a)  # the step files read directly: the same table, bit for bit
    for x in (b, c):
        assert x["n"].to_list() == a["n"].to_list()
        assert x["share_significant"].to_list() == a["share_significant"].to_list()
        assert x["mean_abs_delta_p"].to_list() == pytest.approx(a["mean_abs_delta_p"].to_list(), rel=1e-12)
    d1 = delta_p_distribution(tokens=store.tokens, updates=store.updates, samples=s_lf, boundary=10)
    d2 = delta_p_distribution(tokens=store.tokens_with_updates(), samples=s_lf, boundary=10)
    assert d1.drop("mean_delta_p", "mean_abs_delta_p").equals(d2.drop("mean_delta_p", "mean_abs_delta_p"))
    d3 = delta_p_distribution(tokens=store.partitions("tokens"), updates=store.partitions("updates"), samples=s_lf,
                              boundary=10)
    assert d3.equals(d1)


def test_exact_per_step_threshold_and_quantiles_against_the_join():
    tokens, updates, samples = _random_store(seed=4, steps=(0, 10, 20, 30))
    j = _joined(tokens, updates).join(samples, on=["step", "prompt_id", "sample_id"])
    j = j.with_columns((pl.col("logprob_next").cast(pl.Float64).exp() - pl.col("logprob").cast(pl.Float64).exp()).alias("dp"))
    j = j.with_columns(pl.col("dp").abs().alias("adp"))
    j = j.with_columns((pl.col("adp") >= pl.col("adp").quantile(0.9, "linear").over("step")).alias("top") & (pl.col("adp") > 0))
    sets = significant_update_sets(tokens=tokens.lazy(), updates=updates.lazy(), samples=samples.lazy(), top_frac=0.1)
    r = {x["set"]: x for x in sets.iter_rows(named=True)}
    top = j.filter("top")
    assert r["top"]["n"] == top.height
    assert r["top"]["entropy_median"] == top["entropy"].cast(pl.Float64).median()
    assert r["all"]["entropy_median"] == j["entropy"].cast(pl.Float64).median()
    assert r["top"]["entropy_mean"] == pytest.approx(top["entropy"].cast(pl.Float64).mean(), rel=1e-12)
    rest = j.filter(~pl.col("top"))["entropy"].cast(pl.Float64)
    assert r["top"]["diff_vs_rest"] == pytest.approx(top["entropy"].cast(pl.Float64).mean() - rest.mean(), rel=1e-9)
    dist = delta_p_distribution(tokens=tokens.lazy(), updates=updates.lazy(), samples=samples.lazy())
    for row in dist.iter_rows(named=True):
        g = j.filter(pl.col("correct") == (row["polarity"] == "positive"))["dp"]
        assert row["n"] == g.len()
        assert [row[c] for c in ("q0_1", "q1", "q50", "q99_9")] == [g.quantile(q, "linear") for q in (0.001, 0.01, 0.5, 0.999)]
    bins = update_by_entropy_bin(tokens=tokens.lazy(), updates=updates.lazy(), n_bins=4, top_frac=0.1)
    assert bins["n"].sum() == j.height and bins["share_of_significant"].sum() == pytest.approx(1.0)
    edges = [j["entropy"].cast(pl.Float64).quantile(q, "linear") for q in (0, 0.25, 0.5, 0.75, 1.0)]
    assert bins["entropy_low"].to_list() == edges[:4] and bins["entropy_high"].to_list() == edges[1:]


def test_region_means_fast_path_equals_group_by():
    rng = np.random.default_rng(5)
    rows = [(3, i // 4, i % 4, t, float(rng.gamma(1.0))) for i, L in enumerate(rng.integers(1, 60, 40)) for t in range(L)]
    df = pl.DataFrame(rows, schema=dict(step=pl.Int32, prompt_id=pl.Int32, sample_id=pl.Int32, position=pl.Int32,
                                        entropy=pl.Float32), orient="row")
    for edge in (0.1, 0.25, 1 / 3):
        fast = _region_means(df, edge).sort("prompt_id", "sample_id")
        slow = _region_means(df.reverse(), edge).sort("prompt_id", "sample_id")  # not in store order: group-by
        for c in ("h_start", "h_mid", "h_end"):
            a, b = fast[c].to_numpy(), slow[c].to_numpy()
            assert np.array_equal(np.isnan(a), np.isnan(b)) and np.allclose(np.nan_to_num(a), np.nan_to_num(b), rtol=1e-12)


def test_blocked_bootstrap_is_the_same_stream(monkeypatch):
    import entropy_lens.analysis.stats as st

    x = np.random.default_rng(6).normal(size=3001)
    whole = st.bootstrap_ci(x, n_boot=200, seed=9)
    monkeypatch.setattr(st, "BOOT_BLOCK_ELEMENTS", 3001 * 7)  # 7 resamples per block
    assert st.bootstrap_ci(x, n_boot=200, seed=9) == whole
    cols = [x, x * 2 - 1, np.sin(x)]
    assert bootstrap_cis(cols, n_boot=200, seed=9) == [bootstrap_ci(c, n_boot=200, seed=9) for c in cols]
    assert not math.isnan(whole.ci_low)


def test_u_shape_summary_unchanged_by_order():
    tokens, _, samples = _random_store(seed=7)
    a = u_shape_summary(tokens=tokens.lazy(), samples=samples.lazy(), n_boot=50)
    b = u_shape_summary(tokens=tokens.sample(fraction=1.0, shuffle=True, seed=1).lazy(), samples=samples.lazy(), n_boot=50)
    assert a["n"].to_list() == b["n"].to_list()
    assert a["estimate"].to_list() == pytest.approx(b["estimate"].to_list(), rel=1e-12)
