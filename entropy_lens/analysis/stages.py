"""Stage-level curves and the rising → plateau boundary (paper-notes §1.3, §1.6, §2.1 Fig. 1).

``step_curves`` gives the per-step batch entropy (token mean, paper-notes §1.3) and accuracy.  A *stage detector*
maps those curves to the transition step ``s*``; detectors are registered by name::

    boundary = detect_stage_boundary(curves, "segmented")   # two-segment fit with a 95% CI (the default)
    boundary = detect_stage_boundary(curves, "knee")        # Kneedle on the smoothed entropy
    boundary = detect_stage_boundary(curves, "slope")       # |dH/ds| and accuracy slope below 10% of max
    boundary = detect_stage_boundary(curves, boundary=200)  # manual override
    curves = label_stages(curves, boundary)                 # adds stage ∈ {"rising", "plateau"}

The paper draws the boundary by eye (paper-notes §1.6); the detectors are the toolkit's operationalisation
[I].  ``segmented`` (:mod:`entropy_lens.analysis.segmented`) is the default because it says how sure it is:
on planted breaks its 95% interval covered the break in 94–98% of curves with a median error of at most
one step (tests/analysis/test_segmented.py), and it answers "no clear break" for a straight line, where the
knee always names a step.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from entropy_lens.analysis.frames import (
    SAMPLE_KEY,
    boundary_step,
    collect_streaming,
    has_columns,
    lazy,
    require,
    stage_expr,
)
from entropy_lens.analysis.segmented import BreakFit, fit_break
from entropy_lens.analysis.stats import Estimate
from entropy_lens.errors import UserError
from entropy_lens.registry import Registry

STAGE_DETECTORS: Registry = Registry("stage detector")
DEFAULT_DETECTOR = "segmented"


def register_stage_detector(name: str):
    """Register ``fn(curves: pl.DataFrame, column: str, **params) -> int | BreakFit`` under ``name``: a step
    present in ``curves``, or a :class:`~entropy_lens.analysis.segmented.BreakFit` with its interval."""
    return STAGE_DETECTORS.register(name)


@dataclass(frozen=True)
class StageBoundary:
    """The rising → plateau transition: the first plateau step, how it was found, and how sure it is.

    ``ci`` is the break's 95% interval in steps, for detectors that give one (``segmented``); ``fit`` the
    two-segment fit behind it.  ``clear`` is False when the detector found no clear break (the slopes do
    not differ); detectors without a test are taken at their word.
    """

    step: int
    detector: str
    params: dict = field(default_factory=dict)
    column: str = "entropy"
    ci: tuple[int, int] | None = None
    fit: BreakFit | None = None

    def __int__(self) -> int:
        return self.step

    @property
    def clear(self) -> bool:
        return self.fit is None or self.fit.clear


def step_curves(
    *,
    tokens: pl.LazyFrame | None = None,
    samples: pl.LazyFrame | None = None,
    steps: pl.LazyFrame | None = None,
) -> pl.DataFrame:
    """Per-step curves for Fig. 1 (paper-notes §1.3, §2.1, §7.3).

    Columns: ``step``, ``entropy`` (nats; token mean of H over all response tokens of the step, i.e. verl's
    ``actor/entropy``), ``accuracy`` (share of correct samples), ``n_tokens``, ``n_samples``; plus
    ``eval_accuracy`` when ``steps`` has it.  When a ``steps`` table is given, its ``entropy`` and
    ``accuracy`` columns are preferred where non-null (they come from the trainer's full batch) and the
    token/sample aggregates fill the gaps.  At least one of the three tables is required.
    """
    parts: list[pl.LazyFrame] = []
    if tokens is not None:
        t = require(lazy(tokens, "tokens"), ["step", "entropy"], "tokens")
        parts.append(
            t.group_by("step").agg(
                pl.col("entropy").cast(pl.Float64).mean().alias("_entropy_tokens"),
                pl.len().cast(pl.Int64).alias("n_tokens"),
            )
        )
    if samples is not None:
        s = require(lazy(samples, "samples"), [*SAMPLE_KEY, "correct"], "samples")
        parts.append(
            s.group_by("step").agg(
                pl.col("correct").cast(pl.Float64).mean().alias("_accuracy_samples"),
                pl.len().cast(pl.Int64).alias("n_samples"),
            )
        )
    if steps is not None:
        st = require(lazy(steps, "steps"), ["step"], "steps")
        keep = [c for c in ("entropy", "accuracy", "eval_accuracy") if has_columns(st, [c])]
        parts.append(st.select("step", *[pl.col(c).cast(pl.Float64).alias(f"_{c}_steps") for c in keep]))
    if not parts:
        raise UserError("step_curves needs at least one of tokens=, samples=, steps=")
    lf = parts[0]
    for p in parts[1:]:
        lf = lf.join(p, on="step", how="full", coalesce=True)
    names = lf.collect_schema().names()

    def pick(*cols: str) -> pl.Expr:
        have = [pl.col(c) for c in cols if c in names]
        return pl.coalesce(have) if have else pl.lit(None, dtype=pl.Float64)

    out = lf.select(
        pl.col("step").cast(pl.Int64),
        pick("_entropy_steps", "_entropy_tokens").alias("entropy"),
        pick("_accuracy_steps", "_accuracy_samples").alias("accuracy"),
        (pl.col("n_tokens") if "n_tokens" in names else pl.lit(None, dtype=pl.Int64)).alias("n_tokens"),
        (pl.col("n_samples") if "n_samples" in names else pl.lit(None, dtype=pl.Int64)).alias("n_samples"),
        *([pl.col("_eval_accuracy_steps").alias("eval_accuracy")] if "_eval_accuracy_steps" in names else []),
    ).sort("step")
    return collect_streaming(out)


def smooth(values, window: int = 5, method: str = "savgol") -> np.ndarray:
    """Smooth a curve without lag: Savitzky–Golay (polyorder 2) or a centred moving average ("mean").

    ``window`` is in points and is made odd and at most the series length; windows < 3 return the input.
    An exponential moving average is deliberately not used here: its lag shifts the detected knee later.
    """
    y = np.asarray(values, dtype=float)
    n = y.size
    w = min(int(window), n if n % 2 else n - 1)
    if w % 2 == 0:
        w -= 1
    if w < 3:
        return y.copy()
    if method == "savgol":
        from scipy.signal import savgol_filter

        return savgol_filter(y, w, polyorder=min(2, w - 1), mode="interp")
    if method == "mean":
        k = w // 2
        pad = np.pad(y, k, mode="edge")
        return np.convolve(pad, np.ones(w) / w, mode="valid")
    raise UserError(f"unknown smoothing method {method!r}; use 'savgol' or 'mean'")


def _default_window(n: int) -> int:
    return max(3, int(round(n / 20)) | 1)


def _clean(curves: pl.DataFrame, cols: list[str], least: int = 3) -> pl.DataFrame:
    missing = [c for c in cols if c not in curves.columns]
    if missing:
        have = [c for c in curves.columns if c != "step"]
        close = difflib.get_close_matches(missing[0], have, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"stage detection: no column {missing[0]!r} in the curves; {hint}pick one with --column "
                        f"(have: {', '.join(have)})")
    df = curves.sort("step").drop_nulls(cols).filter(pl.all_horizontal([pl.col(c).is_not_nan() for c in cols]))
    if df.height < least:
        raise UserError(f"stage detection needs at least {least} steps with non-null {', '.join(cols)}; "
                        f"got {df.height}")
    return df


@register_stage_detector("segmented")
def segmented_detector(curves: pl.DataFrame, column: str = "entropy", min_segment: int = 3,
                       seed: int = 0) -> BreakFit:
    """The continuous two-segment least-squares fit of ``column`` against step, with the break's 95%
    profile-likelihood interval and a Monte Carlo test of "no break" (:func:`~entropy_lens.analysis.segmented.fit_break`)."""
    df = _clean(curves, [column], least=2 * min_segment + 1)
    return fit_break(df["step"].to_numpy(), df[column].to_numpy(), min_segment=min_segment, seed=seed)


@register_stage_detector("knee")
def knee_detector(curves: pl.DataFrame, column: str = "entropy", window: int | None = None,
                  smoothing: str = "savgol") -> int:
    """Kneedle on the smoothed, decreasing curve (entropy by default; paper-notes §1.6 [I]).

    Normalise step and smoothed entropy to [0, 1]: ``x̂ = (s − s_min)/(s_max − s_min)``,
    ``ŷ = (H − H_min)/(H_max − H_min)``.  For a decreasing convex curve the knee is the step maximising
    ``(1 − x̂) − ŷ``, the distance below the chord from the first to the last point.
    """
    df = _clean(curves, [column])
    x = df["step"].to_numpy().astype(float)
    y = smooth(df[column].to_numpy(), window or _default_window(df.height), smoothing)
    xn = (x - x.min()) / (np.ptp(x) or 1.0)
    yn = (y - y.min()) / (np.ptp(y) or 1.0)
    return int(x[int(np.argmax((1.0 - xn) - yn))])


@register_stage_detector("slope")
def slope_detector(
    curves: pl.DataFrame, column: str = "entropy", frac: float = 0.1, window: int | None = None,
    smoothing: str = "savgol",
) -> int:
    """First step where both slopes have collapsed (paper-notes §1.6 [I] alternative).

    With ``H`` and ``acc`` smoothed, ``dH/ds`` and ``dacc/ds`` by ``np.gradient`` over the step values: the
    first step after the steepest entropy descent where ``|dH/ds| < frac·max|dH/ds|`` **and**
    ``|dacc/ds| < frac·max|dacc/ds|``.  Without an ``accuracy`` column only the entropy condition applies.
    Falls back to the last step when the curves never flatten.
    """
    use_acc = column != "accuracy" and "accuracy" in curves.columns and curves["accuracy"].drop_nulls().len() >= 3
    df = _clean(curves, [column, "accuracy"] if use_acc else [column])
    x = df["step"].to_numpy().astype(float)
    w = window or _default_window(df.height)
    dh = np.abs(np.gradient(smooth(df[column].to_numpy(), w, smoothing), x))
    ok = dh < frac * dh.max()
    if use_acc:
        da = np.abs(np.gradient(smooth(df["accuracy"].to_numpy(), w, smoothing), x))
        ok &= da < frac * (da.max() or 1.0)
    start = int(np.argmax(dh))
    hits = np.nonzero(ok[start:])[0]
    return int(x[start + hits[0]]) if hits.size else int(x[-1])


def detect_stage_boundary(
    curves: pl.DataFrame, detector: str = DEFAULT_DETECTOR, *, boundary: int | None = None,
    column: str = "entropy", **params
) -> StageBoundary:
    """Find the rising → plateau transition step ``s*`` (paper-notes §1.6) on the curve ``column``.

    ``curves`` is ``step_curves(...)`` output (needs ``step`` and ``column``; ``slope`` also uses
    ``accuracy``).  ``boundary=`` is the manual override (``--boundary 200``): it is returned as is, with
    ``detector="manual"``.  Otherwise ``STAGE_DETECTORS.get(detector)(curves, column, **params)``.
    """
    if boundary is not None:
        return StageBoundary(int(boundary), "manual", {}, column)
    found = STAGE_DETECTORS.get(detector)(curves, column, **params)
    if isinstance(found, BreakFit):
        return StageBoundary(found.boundary, detector, dict(params), column, found.ci, found)
    return StageBoundary(int(found), detector, dict(params), column)


def stage_slopes(curves: pl.DataFrame, column: str, boundary: int, level: float = 0.95) -> tuple[Estimate, Estimate]:
    """Slopes of ``column`` against step in the rising stage (steps < ``boundary``) and the plateau, from one
    continuous two-segment least-squares fit with its knot at ``boundary``::

        y = a + b₁·x + (b₂ − b₁)·max(0, x − boundary)

    each slope with its t-interval (n − 3 degrees of freedom; NaN with fewer than 2 points on a side).

    Continuous, not two separate lines: a metric measured on its own schedule (held-out accuracy every few
    steps) has few points in a short rising stage, and a separate line through 3 noisy points swings with
    each of them; the shared knot lets every point inform both slopes.
    """
    from scipy import stats as sps

    nan = Estimate(float("nan"), float("nan"), float("nan"), 0, level)
    if column not in curves.columns:
        return nan, nan
    df = curves.drop_nulls(column).filter(pl.col(column).is_not_nan())
    x, y = df["step"].to_numpy().astype(float), df[column].to_numpy().astype(float)
    n_rise, n_plat = int((x < boundary).sum()), int((x >= boundary).sum())
    if n_rise < 2 or n_plat < 2 or x.size < 4:
        return (Estimate(nan.estimate, nan.ci_low, nan.ci_high, n_rise, level),
                Estimate(nan.estimate, nan.ci_low, nan.ci_high, n_plat, level))
    X = np.stack([np.ones_like(x), x - boundary, np.maximum(0.0, x - boundary)], axis=1)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    cov = float(resid @ resid) / (x.size - 3) * np.linalg.pinv(X.T @ X)
    t = float(sps.t.ppf(0.5 + level / 2, x.size - 3))
    b1, b2 = float(beta[1]), float(beta[1] + beta[2])
    se1, se2 = np.sqrt(cov[1, 1]), np.sqrt(cov[1, 1] + cov[2, 2] + 2 * cov[1, 2])
    return (Estimate(b1, b1 - t * se1, b1 + t * se1, n_rise, level),
            Estimate(b2, b2 - t * se2, b2 + t * se2, n_plat, level))


def label_stages(curves: pl.DataFrame | pl.LazyFrame, boundary) -> pl.DataFrame:
    """Add ``stage``: "rising" for ``step < boundary``, "plateau" from the boundary step on (paper-notes §1.6).

    ``boundary`` is an int or a :class:`StageBoundary`.
    """
    b = boundary_step(boundary)
    if b is None:
        raise UserError("label_stages needs a boundary step")
    lf = lazy(curves, "curves").with_columns(stage_expr(b))
    return collect_streaming(lf)


def _estimate(e: Estimate) -> dict:
    nan = lambda v: None if v is None or np.isnan(v) else float(v)  # noqa: E731  (JSON has no NaN)
    return {"estimate": nan(e.estimate), "ci": [nan(e.ci_low), nan(e.ci_high)]}


def boundary_summary(curves: pl.DataFrame, boundary: StageBoundary,
                     accuracy_columns: tuple[str, ...] = ("eval_accuracy", "accuracy")) -> dict:
    """What ``entropy-lens stages --json`` prints: the break, its interval, the two slopes with intervals.

    Keys: ``boundary`` (first plateau step), ``ci`` ([low, high] steps, or None for a detector without one),
    ``detector``, ``column``, ``n_steps``, ``clear`` and ``p_value`` (the test of "no break"; p is None for
    detectors without a test), ``rising_slope`` / ``plateau_slope`` ({estimate, ci}, per step: the continuous
    fit's for ``segmented``, else :func:`stage_slopes` at the detector's step), and ``accuracy``: the same two
    slopes of the first of ``accuracy_columns`` the curves have (:func:`stage_slopes`, knot at the boundary)
    with their ratio ``plateau / rising``, or None.
    """
    b, fit = boundary.step, boundary.fit
    rising, plateau = (fit.rising_slope, fit.plateau_slope) if fit is not None else \
        stage_slopes(curves, boundary.column, b)
    values = curves.drop_nulls(boundary.column)["step"] if boundary.column in curves.columns else []
    out = {"boundary": b, "ci": list(boundary.ci) if boundary.ci else None, "detector": boundary.detector,
           "column": boundary.column, "n_steps": fit.n_steps if fit is not None else len(values),
           "clear": boundary.clear, "p_value": fit.p_value if fit is not None else None,
           "rising_slope": _estimate(rising), "plateau_slope": _estimate(plateau), "accuracy": None}
    col = next((c for c in accuracy_columns if c in curves.columns and c != boundary.column
                and curves[c].drop_nulls().len() >= 3), None)
    if col is not None:
        acc_r, acc_p = stage_slopes(curves, col, b)
        ratio = acc_p.estimate / acc_r.estimate if acc_r.estimate not in (0.0,) and not np.isnan(acc_r.estimate) else None
        out["accuracy"] = {"column": col, "rising_slope": _estimate(acc_r), "plateau_slope": _estimate(acc_p),
                           "ratio": None if ratio is None or np.isnan(ratio) else float(ratio)}
    return out


def boundary_paragraph(summary: dict) -> str:
    """One readable paragraph of :func:`boundary_summary`."""
    def slope(d: dict) -> str:
        e, (lo, hi) = d["estimate"], d["ci"]
        return "n/a" if e is None else f"{e:+.3g}/step" + ("" if lo is None else f" [{lo:+.3g}, {hi:+.3g}]")

    s = summary
    ci = f" (95% CI {s['ci'][0]}–{s['ci'][1]})" if s["ci"] else ""
    head = (f"Rising → plateau break at step {s['boundary']}{ci} in {s['column']} over {s['n_steps']} steps "
            f"(detector `{s['detector']}`).")
    if not s["clear"]:
        head = (f"No clear break in {s['column']} over {s['n_steps']} steps (detector `{s['detector']}`): the best "
                f"break, step {s['boundary']}{ci}, does not beat a straight line (p = {s['p_value']:.2f}).")
    text = f"{head} Slopes: rising {slope(s['rising_slope'])}, plateau {slope(s['plateau_slope'])}"
    text += f"; p = {s['p_value']:.3f} against no break." if s["p_value"] is not None and s["clear"] else "."
    acc = s["accuracy"]
    if acc is not None:
        ratio = "" if acc["ratio"] is None else f" (plateau / rising = {acc['ratio']:.2f})"
        text += (f" {acc['column']}: rising {slope(acc['rising_slope'])}, plateau "
                 f"{slope(acc['plateau_slope'])}{ratio}.")
    return text
