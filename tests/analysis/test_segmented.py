"""The two-segment break fit: exact against a naive least-squares twin, calibrated on planted breaks."""

import numpy as np
import pytest

from entropy_lens.analysis.segmented import _Design, fit_break
from entropy_lens.errors import UserError


def naive_sse(x, y, taus):
    """One ``np.linalg.lstsq`` per candidate break τ on the design [1, x, max(0, x − τ)]."""
    out = []
    for tau in taus:
        X = np.stack([np.ones_like(x), x, np.maximum(0.0, x - tau)], axis=1)
        beta, *_ = np.linalg.lstsq(X, y, rcond=None)
        out.append(float(((y - X @ beta) ** 2).sum()))
    return np.array(out)


def planted(x, tau, sd, rng, slope=-0.003, ratio=1 / 6):
    return 0.24 + slope * x + (slope * ratio - slope) * np.maximum(0.0, x - tau) + rng.normal(0, sd, x.size)


@pytest.mark.parametrize("x", [np.arange(90.0), np.arange(0.0, 200.0, 10.0), np.array([0, 1, 2, 5, 9, 14, 20, 30, 41, 60.0])])
def test_suffix_sum_fit_matches_naive_least_squares(x):
    rng = np.random.default_rng(0)
    y = planted(x, x[len(x) // 3], 0.01, rng)
    k = np.arange(3, x.size - 3)
    _, sse = _Design(x, k).fit(y)
    np.testing.assert_allclose(sse, naive_sse(x, y, x[k]), rtol=1e-9, atol=1e-12)


def test_exact_hinge_is_recovered_exactly():
    x = np.arange(40.0)
    y = 1.0 - 0.01 * x + 0.008 * np.maximum(0.0, x - 17)
    fit = fit_break(x, y)
    assert fit.boundary == 17 and fit.ci == (17, 17)
    assert fit.rising_slope.estimate == pytest.approx(-0.01, abs=1e-12)
    assert fit.plateau_slope.estimate == pytest.approx(-0.002, abs=1e-12)
    assert fit.clear


@pytest.mark.parametrize("sd", [0.004, 0.008])
def test_planted_breaks_are_covered(sd):
    """90-step curves, break at 20/30/45, plateau slope a sixth of the rising one."""
    rng = np.random.default_rng(42)
    x = np.arange(90.0)
    covered, errors = [], []
    for tau in (20, 30, 45):
        for seed in range(40):
            fit = fit_break(x, planted(x, tau, sd, rng), seed=seed)
            covered.append(fit.ci[0] <= tau <= fit.ci[1])
            errors.append(abs(fit.boundary - tau))
            assert fit.clear
    assert np.mean(covered) >= 0.85
    assert np.median(errors) <= 3


def test_straight_line_has_no_clear_break():
    rng = np.random.default_rng(7)
    x = np.arange(90.0)
    clear = [fit_break(x, 0.24 - 0.002 * x + rng.normal(0, 0.006, x.size), seed=s).clear for s in range(100)]
    assert np.mean(clear) <= 0.1  # the test's level is 5%


def test_slope_intervals_contain_the_planted_slopes():
    rng = np.random.default_rng(3)
    x = np.arange(90.0)
    hits = []
    for s in range(60):
        fit = fit_break(x, planted(x, 30, 0.006, rng), seed=s)
        hits.append(fit.rising_slope.ci_low <= -0.003 <= fit.rising_slope.ci_high
                    and fit.plateau_slope.ci_low <= -0.0005 <= fit.plateau_slope.ci_high)
    assert np.mean(hits) >= 0.85


def test_too_few_steps_is_one_clear_error():
    with pytest.raises(UserError, match="at least 7 steps"):
        fit_break(np.arange(6.0), np.zeros(6))
