import polars as pl
import pytest

from entropy_lens.analysis.position import entropy_by_position, u_shape_summary, update_by_position

from tests.analysis.store_builders import make_samples, make_tokens, make_updates


def u(r):
    return 4 * (r - 0.5) ** 2 + 0.1


def _store(n=12, L=20):
    rows = [dict(step=0, prompt_id=0, sample_id=i, entropy=[u(t / L) + 0.01 * (i % 3) for t in range(L)]) for i in range(n)]
    samples = make_samples([dict(step=0, prompt_id=0, sample_id=i, correct=i % 2 == 0) for i in range(n)])
    return make_tokens(rows), samples


def test_u_curve_recovered():
    tokens, samples = _store()
    df = entropy_by_position(tokens=tokens, samples=samples, n_bins=10)
    a = df.filter(pl.col("polarity") == "all").sort("pos_bin")
    assert a["n"].to_list() == [24] * 10
    h = a["entropy_mean"].to_list()
    assert h[0] == pytest.approx((u(0) + u(0.05)) / 2 + 0.01, abs=1e-5)
    assert h[0] > h[4] < h[9] and min(h) in (h[4], h[5])
    assert set(df["polarity"]) == {"all", "positive", "negative"}


def test_u_shape_summary():
    tokens, samples = _store()
    df = u_shape_summary(tokens=tokens, samples=samples, edge=0.1, n_boot=200)
    r = {(x["polarity"], x["contrast"]): x for x in df.iter_rows(named=True)}
    start = (u(0) + u(0.05)) / 2
    end = (u(0.9) + u(0.95)) / 2
    mid = sum(u(t / 20) for t in range(2, 18)) / 16
    assert r["all", "start-middle"]["estimate"] == pytest.approx(start - mid, abs=1e-5)
    assert r["all", "end-middle"]["estimate"] == pytest.approx(end - mid, abs=1e-5)
    assert r["all", "ends-middle"]["ci_low"] > 0 and r["all", "ends-middle"]["n"] == 12
    assert r["positive", "ends-middle"]["n"] == 6


def test_update_by_position():
    tokens, _ = _store(n=1, L=10)
    updates = make_updates(tokens, {(0, 0, 0, 9): 0.9})
    df = update_by_position(tokens=tokens, updates=updates, n_bins=5, top_frac=0.1)
    assert df["n"].to_list() == [2] * 5
    assert df["share_of_significant"].to_list() == [0, 0, 0, 0, 1.0]
    assert df["mean_abs_delta_p"][4] == pytest.approx(0.2, abs=1e-6)
