"""Where does the rising stage end?  A continuous two-segment ("broken-stick") fit, with its uncertainty.

The model, for steps x_i and a curve y_i (the batch entropy by default)::

    y = a + b₁·x + (b₂ − b₁)·max(0, x − τ) + ε          slope b₁ before the break τ, b₂ after, continuous at τ

For every candidate τ among the observed steps (at least ``min_segment`` steps on each side) the three
coefficients are ordinary least squares, so the residual sum of squares SSE(τ) is exact for each candidate,
and τ̂ = argmin SSE(τ).  τ̂ is the first plateau step: rising = steps < τ̂, plateau = steps ≥ τ̂.

*Uncertainty of the break (profile likelihood).*  With Gaussian errors, −2·log LR(τ) = n·log(SSE(τ)/SSE(τ̂)),
which for a continuous two-phase regression is asymptotically χ²₁ (Feder, Ann. Stat. 1975), so the 95% set
is ``{τ : n_eff · log(SSE(τ) / SSE(τ̂)) ≤ 3.84}`` and the CI is its hull.  ``n_eff = n·(1 − ρ)/(1 + ρ)``
widens it for the lag-1 autocorrelation ρ ∈ [0, 0.9] of the residuals, since a training curve's noise is not
independent from step to step; ρ = 0 gives the textbook interval.  On planted breaks (90 steps, a break at
20, 30 or 45, the plateau slope a sixth of the rising slope −0.003 nats/step, Gaussian noise 0.004 or 0.008
nats, 200 curves each) it covered the planted break in 93–95% of curves, with a median error of 0–1 step
and a median width of 2–5 steps; a residual bootstrap gave the same coverage at a hundred times the cost.

*Is there a break at all?*  The sup-LR statistic ``T = n·log(SSE_line / SSE(τ̂))`` is compared with its
distribution under a straight line, by Monte Carlo: the fitted line plus Gaussian AR(1) noise with the
two-segment fit's σ and ρ, refitted over every candidate τ, ``n_null`` times; ``p = (1 + #{T* ≥ T}) /
(1 + n_null)``.  (The textbook F test does not apply: τ is chosen to make T large.)  The break is *clear*
when p < ``alpha``.

*Slopes.*  The OLS slopes at τ̂ with their t-interval (n_eff − 3 degrees of freedom), widened to the union of
the conditional intervals over every τ in the break's CI, so that a slope's interval includes the break's
uncertainty.

Every SSE(τ) comes from suffix sums of x, x², y and x·y, so one fit over all candidates is O(n) and the null
draws are one vectorised pass.  Pure numpy/scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from entropy_lens.analysis.stats import Estimate, scipy_stats
from entropy_lens.errors import UserError


CHI2_1_95 = 3.841458820694124  # χ²₁ 0.95 quantile: the profile-likelihood threshold at 95%
RHO_MAX = 0.9  # cap on the residual autocorrelation: beyond it n_eff would fall below a tenth of n


@dataclass(frozen=True)
class BreakFit:
    """A two-segment fit: the break, its CI, the two slopes with CIs, and whether the break is clear."""

    boundary: int  # τ̂, the first plateau step
    ci: tuple[int, int]  # 95% profile-likelihood interval of τ, in steps
    rising_slope: Estimate  # b₁, units of the curve per step
    plateau_slope: Estimate  # b₂
    p_value: float  # Monte Carlo p of "no break" (a straight line)
    clear: bool  # p_value < alpha
    n_steps: int
    rho: float  # lag-1 autocorrelation of the residuals used for n_eff (clipped to [0, RHO_MAX])

    def as_dict(self) -> dict:
        def est(e: Estimate) -> dict:
            return {"estimate": e.estimate, "ci": [e.ci_low, e.ci_high]}

        return {"boundary": self.boundary, "ci": list(self.ci), "rising_slope": est(self.rising_slope),
                "plateau_slope": est(self.plateau_slope), "p_value": self.p_value, "clear": self.clear,
                "n_steps": self.n_steps, "rho": self.rho}


class _Design:
    """Sums of the hinge design ``[1, x, max(0, x − τ)]`` for every candidate τ = x[k], from suffix sums.

    x is centred (better conditioned normal equations); τ is shifted with it, so the fit is unchanged.
    """

    def __init__(self, x: np.ndarray, candidates: np.ndarray):
        self.k = candidates  # indices into x of the candidate breaks
        self.x = x - x.mean()
        self.n = x.size
        tau = self.x[candidates]
        # suffix sums over x_i > τ = x[k], i.e. i > k (x is strictly increasing)
        after = lambda v: np.concatenate([np.cumsum(v[::-1])[::-1], [0.0]])[candidates + 1]  # noqa: E731
        s0, s1, s2 = after(np.ones(self.n)), after(self.x), after(self.x ** 2)
        sh, shh, sxh = s1 - tau * s0, s2 - 2 * tau * s1 + tau ** 2 * s0, s2 - tau * s1
        xtx = np.empty((len(candidates), 3, 3))
        xtx[:, 0] = np.stack([np.full_like(sh, self.n), np.full_like(sh, self.x.sum()), sh], axis=1)
        xtx[:, 1] = np.stack([np.full_like(sh, self.x.sum()), np.full_like(sh, (self.x ** 2).sum()), sxh], axis=1)
        xtx[:, 2] = np.stack([sh, sxh, shh], axis=1)
        self.xtx_inv = np.linalg.inv(xtx)
        self.tau = tau
        self._s0 = s0

    def fit(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """y [..., n] → (β [..., K, 3], SSE [..., K]) for every candidate break."""
        yc = y - y.mean(axis=-1, keepdims=True)
        rev = lambda v: np.concatenate([np.cumsum(v[..., ::-1], axis=-1)[..., ::-1],  # noqa: E731
                                        np.zeros(v.shape[:-1] + (1,))], axis=-1)[..., self.k + 1]
        sy, sxy = rev(yc), rev(yc * self.x)
        syh = sxy - self.tau * sy
        xty = np.stack([np.broadcast_to(yc.sum(-1, keepdims=True), syh.shape),
                        np.broadcast_to((yc * self.x).sum(-1, keepdims=True), syh.shape), syh], axis=-1)
        beta = np.einsum("kij,...kj->...ki", self.xtx_inv, xty)
        sse = (yc * yc).sum(-1, keepdims=True) - (beta * xty).sum(-1)
        return beta, np.maximum(sse, 0.0)


def _line_sse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean()
    yc = y - y.mean(axis=-1, keepdims=True)
    b = (yc * xc).sum(-1) / (xc * xc).sum()
    return ((yc - b[..., None] * xc) ** 2).sum(-1)


def _lag1(e: np.ndarray) -> float:
    den = float((e * e).sum())
    return 0.0 if den == 0 else float(np.clip((e[1:] * e[:-1]).sum() / den, 0.0, RHO_MAX))


def _slope_ci(design: _Design, beta: np.ndarray, sse: np.ndarray, idx: np.ndarray, n_eff: float, level: float):
    """Union over candidates ``idx`` of the conditional t-intervals of b₁ and b₂ = b₁ + (b₂ − b₁)."""
    dof = max(1.0, n_eff - 3)
    t = float(scipy_stats().t.ppf(0.5 + level / 2, dof))
    sigma2 = sse[idx] / max(1, design.n - 3) * design.n / n_eff
    inv = design.xtx_inv[idx]
    b1, d = beta[idx, 1], beta[idx, 2]
    se1 = np.sqrt(sigma2 * inv[:, 1, 1])
    se2 = np.sqrt(sigma2 * (inv[:, 1, 1] + inv[:, 2, 2] + 2 * inv[:, 1, 2]))
    return (b1 - t * se1).min(), (b1 + t * se1).max(), (b1 + d - t * se2).min(), (b1 + d + t * se2).max()


def fit_break(steps, values, *, min_segment: int = 3, level: float = 0.95, n_null: int = 199,
              alpha: float = 0.05, seed: int = 0) -> BreakFit:
    """The two-segment fit of ``values`` against ``steps`` (see the module docstring).

    ``steps`` must be strictly increasing and finite, as many as ``values``; at least ``2·min_segment + 1``
    of them.  The profile threshold is the χ²₁ quantile at ``level``.  Deterministic given ``seed``.
    """
    x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    n = x.size
    if y.shape != x.shape or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise UserError("fit_break: steps and values must be finite arrays of the same length")
    if n < 2 * min_segment + 1:
        raise UserError(f"a two-segment fit needs at least {2 * min_segment + 1} steps with values; got {n}")
    if np.any(np.diff(x) <= 0):
        raise UserError("fit_break: steps must be strictly increasing")
    design = _Design(x, np.arange(min_segment, n - min_segment))
    beta, sse = design.fit(y)
    best = int(np.argmin(sse))
    resid = (y - y.mean()) - (beta[best, 0] + beta[best, 1] * design.x
                              + beta[best, 2] * np.maximum(0.0, design.x - design.tau[best]))
    rho = _lag1(resid)
    n_eff = n * (1 - rho) / (1 + rho)
    floor = max(float(sse[best]), 1e-300)
    threshold = float(scipy_stats().chi2.ppf(level, 1)) if level != 0.95 else CHI2_1_95
    inside = np.flatnonzero(n_eff * np.log(np.maximum(sse, floor) / floor) <= threshold)
    b1_lo, b1_hi, b2_lo, b2_hi = _slope_ci(design, beta, sse, inside, n_eff, level)
    p = _null_p_value(x, y, design, float(sse[best]), rho, n_null, seed)
    steps_in = x[design.k[inside]]
    return BreakFit(
        boundary=int(round(x[design.k[best]])), ci=(int(round(steps_in.min())), int(round(steps_in.max()))),
        rising_slope=Estimate(float(beta[best, 1]), float(b1_lo), float(b1_hi), n, level),
        plateau_slope=Estimate(float(beta[best, 1] + beta[best, 2]), float(b2_lo), float(b2_hi), n, level),
        p_value=p, clear=p < alpha, n_steps=n, rho=rho)


def _null_p_value(x, y, design: _Design, sse_best: float, rho: float, n_null: int, seed: int) -> float:
    """Monte Carlo p-value of the sup-LR statistic under a straight line with AR(1) Gaussian noise."""
    n = x.size
    sse_line = float(_line_sse(x, y))
    if sse_line <= 0:
        return 1.0  # a straight line fits exactly: no break
    if sse_best <= 1e-12 * sse_line:  # the hinge fits exactly (up to rounding) where a line does not
        return 1.0 / (1 + n_null)
    stat = n * math.log(sse_line / sse_best)
    sigma = math.sqrt(sse_best / max(1, n - 3))
    xc = x - x.mean()
    slope = float(((y - y.mean()) * xc).sum() / (xc * xc).sum())
    line = y.mean() + slope * xc
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_null, n)) * sigma
    noise = np.empty_like(z)
    noise[:, 0] = z[:, 0]
    scale = math.sqrt(1 - rho * rho)
    for i in range(1, n):  # stationary AR(1) with marginal sd σ
        noise[:, i] = rho * noise[:, i - 1] + scale * z[:, i]
    sims = line + noise
    _, sse_sims = design.fit(sims)
    stats_null = n * np.log(_line_sse(x, sims) / np.maximum(sse_sims.min(axis=-1), 1e-300))
    return float((1 + np.count_nonzero(stats_null >= stat)) / (1 + n_null))
