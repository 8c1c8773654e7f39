"""Uncertainty helpers: seeded bootstrap CIs, difference of means, slopes and correlations.

Every correlation and difference the analyses report carries ``n`` and a confidence interval.  The helpers
compute with numpy/scipy (:func:`wilson_exprs` builds polars expressions, :func:`paired_step_diff` joins two
polars tables first) and are deterministic given ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from entropy_lens.errors import UserError
from entropy_lens.registry import Registry


def scipy_stats():
    """``scipy.stats``, imported on first use: it costs about a second, and listing or validating needs none
    of it."""
    from scipy import stats

    return stats


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its ``level`` confidence interval and sample size."""

    estimate: float
    ci_low: float
    ci_high: float
    n: int
    level: float = 0.95

    def as_dict(self, prefix: str = "") -> dict:
        return {
            f"{prefix}estimate" if prefix else "estimate": self.estimate,
            f"{prefix}ci_low": self.ci_low,
            f"{prefix}ci_high": self.ci_high,
            f"{prefix}n": self.n,
        }


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise UserError(f"confidence level must be in (0, 1), got {level}")


def _apply(stat: Callable, draws: np.ndarray) -> np.ndarray:
    """Apply ``stat`` along axis 1 of a (n_boot, n) matrix, vectorised when ``stat`` takes ``axis``."""
    try:
        out = np.asarray(stat(draws, axis=1), dtype=float)
        if out.shape == (draws.shape[0],):
            return out
    except TypeError:
        pass
    return np.array([stat(row) for row in draws], dtype=float)


BOOT_BLOCK_ELEMENTS = 1 << 22  # resample indices drawn per block (32 MiB of int64), whatever n_boot and n


def _boot_blocks(n_boot: int, n: int):
    """``(start, stop)`` row ranges of the (n_boot × n) resample matrix, a few million entries each.

    Drawing the matrix block by block with the same generator gives exactly the same indices as drawing it at
    once (numpy fills it in row-major order from one stream), so results do not depend on the block size.
    """
    rows = max(1, BOOT_BLOCK_ELEMENTS // max(n, 1))
    for i in range(0, n_boot, rows):
        yield i, min(n_boot, i + rows)


def bootstrap_ci(
    values,
    stat: Callable = np.mean,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Percentile bootstrap CI of ``stat(values)``.

    Resamples ``values`` with replacement ``n_boot`` times (``np.random.default_rng(seed)``) and takes the
    ``(1 − level)/2`` and ``(1 + level)/2`` percentiles of the statistic.  NaNs are dropped first.  With
    fewer than 2 values the CI is ``(nan, nan)``.
    """
    _check_level(level)
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, level)
    est = float(stat(x))
    if n < 2:
        return Estimate(est, float("nan"), float("nan"), n, level)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot, dtype=float)
    for i, j in _boot_blocks(n_boot, n):  # bounded memory: never the whole (n_boot × n) matrix
        boots[i:j] = _apply(stat, x[rng.integers(0, n, size=(j - i, n))])
    a = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(boots, [a, 1.0 - a])
    return Estimate(est, float(lo), float(hi), n, level)


def bootstrap_cis(
    columns,
    stat: Callable = np.mean,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[Estimate]:
    """``[bootstrap_ci(c, stat, n_boot, seed, level) for c in columns]``, the same numbers, faster.

    Calls with one seed on equally long columns resample the same rows; when the columns have the same
    NaNs (so the same rows are kept) the indices are drawn once per block and shared.  Otherwise each
    column goes through :func:`bootstrap_ci`.
    """
    _check_level(level)
    xs = [np.asarray(c, dtype=float) for c in columns]
    masks = [~np.isnan(x) for x in xs]
    if len(xs) < 2 or any(m.shape != masks[0].shape or not np.array_equal(m, masks[0]) for m in masks):
        return [bootstrap_ci(x, stat=stat, n_boot=n_boot, seed=seed, level=level) for x in xs]
    xs = [x[masks[0]] for x in xs]
    n = int(xs[0].size)
    if n < 2:
        return [bootstrap_ci(x, stat=stat, n_boot=n_boot, seed=seed, level=level) for x in xs]
    rng = np.random.default_rng(seed)
    boots = [np.empty(n_boot, dtype=float) for _ in xs]
    for i, j in _boot_blocks(n_boot, n):
        idx = rng.integers(0, n, size=(j - i, n))
        for b, x in zip(boots, xs):
            b[i:j] = _apply(stat, x[idx])
    a = (1.0 - level) / 2.0
    out = []
    for b, x in zip(boots, xs):
        lo, hi = np.nanquantile(b, [a, 1.0 - a])
        out.append(Estimate(float(stat(x)), float(lo), float(hi), n, level))
    return out


def diff_means_ci(a, b, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Bootstrap CI of ``mean(a) − mean(b)`` for independent samples (each resampled within itself).

    ``n`` is ``len(a) + len(b)`` after dropping NaNs.
    """
    _check_level(level)
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    n = int(a.size + b.size)
    if a.size == 0 or b.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), n, level)
    est = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Estimate(est, float("nan"), float("nan"), n, level)
    rng = np.random.default_rng(seed)
    ma, mb = np.empty(n_boot), np.empty(n_boot)
    for i, j in _boot_blocks(n_boot, a.size):
        ma[i:j] = a[rng.integers(0, a.size, size=(j - i, a.size))].mean(axis=1)
    for i, j in _boot_blocks(n_boot, b.size):
        mb[i:j] = b[rng.integers(0, b.size, size=(j - i, b.size))].mean(axis=1)
    q = (1.0 - level) / 2.0
    lo, hi = np.quantile(ma - mb, [q, 1.0 - q])
    return Estimate(est, float(lo), float(hi), n, level)


def diff_means_from_moments(
    mean_a: float, var_a: float, n_a: int, mean_b: float, var_b: float, n_b: int, level: float = 0.95
) -> Estimate:
    """Normal-approximation (Welch) CI of ``mean_a − mean_b`` from aggregated moments.

    For differences over 10^8 token rows, where the moments come from one streaming aggregation and a
    bootstrap would need the rows: ``d ± z·sqrt(var_a/n_a + var_b/n_b)`` with sample variances (ddof 1).
    """
    _check_level(level)
    n = int(n_a + n_b)
    if n_a < 2 or n_b < 2:
        return Estimate(float(mean_a - mean_b) if n_a and n_b else float("nan"), float("nan"), float("nan"), n, level)
    d = float(mean_a - mean_b)
    se = float(np.sqrt(var_a / n_a + var_b / n_b))
    z = float(scipy_stats().norm.ppf(0.5 + level / 2.0))
    return Estimate(d, d - z * se, d + z * se, n, level)


def ols_slope(x, y) -> float:
    """Least-squares slope of ``y`` on ``x`` (nan with fewer than 2 distinct x)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if x.size < 2 or np.ptp(x) == 0:
        return float("nan")
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def slope_ci(x, y, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """OLS slope of ``y`` on ``x`` with a pairs-bootstrap percentile CI; ``n`` = number of (x, y) pairs."""
    _check_level(level)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    n = int(x.size)
    est = ols_slope(x, y)
    if n < 3:
        return Estimate(est, float("nan"), float("nan"), n, level)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for i, j in _boot_blocks(n_boot, n):
        idx = rng.integers(0, n, size=(j - i, n))
        xb, yb = x[idx], y[idx]
        xc = xb - xb.mean(axis=1, keepdims=True)
        yc = yb - yb.mean(axis=1, keepdims=True)
        den = (xc * xc).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            boots[i:j] = np.where(den > 0, (xc * yc).sum(axis=1) / den, np.nan)
    q = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(boots, [q, 1.0 - q])
    return Estimate(est, float(lo), float(hi), n, level)


CORRELATIONS: Registry = Registry("correlation method")


@CORRELATIONS.register("pearson")
def _pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson r; Fisher-z standard error 1/sqrt(n − 3)."""
    r = float(scipy_stats().pearsonr(x, y).statistic)
    return r, 1.0 / np.sqrt(x.size - 3)


@CORRELATIONS.register("spearman")
def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman ρ; Fisher-z standard error sqrt(1.06/(n − 3)) (Fieller, Hartley & Pearson 1957)."""
    r = float(scipy_stats().spearmanr(x, y).statistic)
    return r, float(np.sqrt(1.06 / (x.size - 3)))


def correlation(x, y, method: str = "spearman", level: float = 0.95) -> Estimate:
    """Correlation of ``x`` and ``y`` (``method`` in ``CORRELATIONS.names()``) with a Fisher-z CI and n.

    CI = tanh(atanh(r) ± z·se); needs n ≥ 4 (else the CI is nan).  NaN pairs are dropped.
    """
    _check_level(level)
    fn = CORRELATIONS.get(method)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        r = float("nan") if n < 2 or np.ptp(x) == 0 or np.ptp(y) == 0 else fn(x, y)[0]
        return Estimate(r, float("nan"), float("nan"), n, level)
    r, se = fn(x, y)
    z = float(scipy_stats().norm.ppf(0.5 + level / 2.0))
    zr = np.arctanh(np.clip(r, -0.999999, 0.999999))
    return Estimate(r, float(np.tanh(zr - z * se)), float(np.tanh(zr + z * se)), n, level)


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n ((nan, nan) when n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    z = float(scipy_stats().norm.ppf(0.5 + level / 2.0))
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(centre - half), float(centre + half)


def wilson_exprs(k: str, n: str, level: float = 0.95, prefix: str = "") -> list:
    """Polars expressions for the Wilson interval of ``k/n`` columns: ``{prefix}ci_low``, ``{prefix}ci_high``."""
    import polars as pl

    z = float(scipy_stats().norm.ppf(0.5 + level / 2.0))
    nn = pl.col(n).cast(pl.Float64)
    p = pl.col(k).cast(pl.Float64) / nn
    den = 1.0 + z * z / nn
    centre = (p + z * z / (2 * nn)) / den
    half = z * (p * (1 - p) / nn + z * z / (4 * nn * nn)).sqrt() / den
    return [(centre - half).alias(f"{prefix}ci_low"), (centre + half).alias(f"{prefix}ci_high")]


def proportion(k: int, n: int, level: float = 0.95) -> Estimate:
    """``k/n`` with its Wilson score interval (estimate NaN when n = 0)."""
    lo, hi = wilson_ci(int(k), int(n), level)
    return Estimate(k / n if n else float("nan"), lo, hi, int(n), level)


def diff_proportions(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> Estimate:
    """``k1/n1 − k2/n2`` with Newcombe's hybrid score interval (from the two Wilson intervals)."""
    if not n1 or not n2:
        return Estimate(float("nan"), float("nan"), float("nan"), int(n1 + n2), level)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_ci(k1, n1, level)
    l2, u2 = wilson_ci(k2, n2, level)
    d = p1 - p2
    return Estimate(d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2), int(n1 + n2), level)


def diff_of_estimates(a: Estimate, b: Estimate) -> Estimate:
    """``a − b`` for two independent estimates with (symmetric, normal) CIs at the same level: the standard
    errors ``(ci_high − ci_low)/(2z)`` add in quadrature.  A NaN bound gives a NaN interval."""
    z = float(scipy_stats().norm.ppf(0.5 + a.level / 2))
    if any(math.isnan(x) for x in (a.ci_low, a.ci_high, b.ci_low, b.ci_high)):
        return Estimate(a.estimate - b.estimate, float("nan"), float("nan"), a.n + b.n, a.level)
    se = math.hypot((a.ci_high - a.ci_low) / (2 * z), (b.ci_high - b.ci_low) / (2 * z))
    d = a.estimate - b.estimate
    return Estimate(d, d - z * se, d + z * se, a.n + b.n, a.level)


def paired_step_diff(a, b, metric: str, from_step: int | None = None, n_boot: int = 1000,
                     seed: int = 0) -> Estimate:
    """Mean over the steps (≥ ``from_step``) both tables have of ``a[metric] − b[metric]``, with a bootstrap
    CI over steps.  ``a``, ``b``: polars DataFrames with ``step`` and ``metric``; nulls and NaNs are dropped;
    a missing column gives n = 0."""
    import polars as pl

    if metric not in a.columns or metric not in b.columns:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    j = (a.select("step", pl.col(metric).cast(pl.Float64).alias("_a"))
         .join(b.select("step", pl.col(metric).cast(pl.Float64).alias("_b")), on="step")
         .drop_nulls().filter(pl.col("_a").is_not_nan() & pl.col("_b").is_not_nan()))
    if from_step is not None:
        j = j.filter(pl.col("step") >= from_step)
    return bootstrap_ci((j["_a"] - j["_b"]).to_numpy(), n_boot=n_boot, seed=seed)
