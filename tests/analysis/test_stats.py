import numpy as np
import pytest

from entropy_lens.analysis.stats import (
    bootstrap_ci,
    correlation,
    diff_means_ci,
    diff_means_from_moments,
    slope_ci,
    wilson_ci,
)
from entropy_lens.errors import UnknownNameError


def test_bootstrap_ci_seeded_and_covers():
    x = np.arange(100, dtype=float)
    a = bootstrap_ci(x, seed=1)
    assert a == bootstrap_ci(x, seed=1)
    assert a.estimate == 49.5 and a.n == 100 and a.ci_low < 49.5 < a.ci_high
    assert bootstrap_ci([3.0, 3.0, 3.0]).ci_low == 3.0
    assert np.isnan(bootstrap_ci([1.0]).ci_low)
    med = bootstrap_ci(x, stat=np.median)
    assert med.estimate == 49.5


def test_diff_means():
    d = diff_means_ci([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert d.estimate == 2.0 and d.n == 6 and 1.0 <= d.ci_low <= d.ci_high <= 3.0
    m = diff_means_from_moments(2.0, 1.0, 100, 1.0, 1.0, 100)
    assert m.estimate == 1.0 and m.ci_low == pytest.approx(1 - 1.959964 * np.sqrt(0.02), rel=1e-5)


def test_slope_and_correlation():
    x = np.arange(10.0)
    s = slope_ci(x, 3 * x + 1)
    assert s.estimate == pytest.approx(3.0) and s.ci_low == pytest.approx(3.0) and s.n == 10
    c = correlation(x, x ** 3, "spearman")
    assert c.estimate == pytest.approx(1.0) and c.n == 10
    p = correlation(x, -x + np.sin(x), "pearson")
    assert -1 <= p.ci_low <= p.estimate <= p.ci_high <= 1
    with pytest.raises(UnknownNameError):
        correlation(x, x, "kendal")


def test_wilson():
    lo, hi = wilson_ci(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.2 < hi < 0.4
