import polars as pl
import pytest

from entropy_lens.analysis.polarity import polarity_entropy, polarity_rates


def test_polarity_entropy_hand_computed(tiny_store):
    tokens, samples = tiny_store
    df = polarity_entropy(tokens=tokens, samples=samples)
    got = {(r["step"], r["polarity"]): r for r in df.iter_rows(named=True)}
    assert set(got) == {(0, "negative"), (0, "positive"), (1, "negative"), (1, "positive")}
    assert got[0, "positive"]["entropy_token_mean"] == pytest.approx(1.5)
    assert got[0, "negative"]["entropy_token_mean"] == pytest.approx(4.5)
    # step 1 positives: sample 0 [0.5], sample 2 [2, 4] → token mean 6.5/3, sample mean (0.5 + 3)/2
    assert got[1, "positive"]["entropy_token_mean"] == pytest.approx(6.5 / 3)
    assert got[1, "positive"]["entropy_sample_mean"] == pytest.approx(1.75)
    assert (got[1, "positive"]["n_tokens"], got[1, "positive"]["n_samples"]) == (3, 2)
    assert got[1, "negative"]["entropy_token_mean"] == pytest.approx(2.0)


def test_polarity_rates_exact_slopes():
    rows = []
    for s in range(20):
        t = min(s, 10)
        rows += [dict(step=s, polarity="negative", entropy_token_mean=2.0 - 0.1 * t),
                 dict(step=s, polarity="positive", entropy_token_mean=1.0 - 0.02 * t)]
    df = polarity_rates(pl.DataFrame(rows), boundary=10, n_boot=200)
    r = {(x["stage"], x["polarity"]): x for x in df.iter_rows(named=True)}
    assert r["rising", "negative"]["slope"] == pytest.approx(-0.1)
    assert r["rising", "positive"]["slope"] == pytest.approx(-0.02)
    assert r["rising", "negative-positive"]["slope"] == pytest.approx(-0.08)
    assert r["rising", "negative"]["n"] == 10
    assert r["rising", "negative"]["ci_low"] == pytest.approx(-0.1) and r["rising", "negative"]["ci_high"] == pytest.approx(-0.1)
    assert r["plateau", "negative"]["slope"] == pytest.approx(0.0, abs=1e-12)
    assert r["rising", "negative"]["start"] == pytest.approx(2.0)
