"""Stage-level curves and the rising → plateau boundary (paper-notes §1.3, §1.6, §2.1 Fig. 1).

``step_curves`` gives the per-step batch entropy (token mean, paper-notes §1.3) and accuracy.  A *stage detector*
maps those curves to the transition step ``s*``; detectors are registered by name::

    boundary = detect_stage_boundary(curves, "knee")        # Kneedle on the smoothed entropy
    boundary = detect_stage_boundary(curves, "slope")       # |dH/ds| and accuracy slope below 10% of max
    boundary = detect_stage_boundary(curves, boundary=200)  # manual override
    curves = label_stages(curves, boundary)                 # adds stage ∈ {"rising", "plateau"}

The paper draws the boundary by eye (paper-notes §1.6); both detectors are the toolkit's operationalisation [I].
"""

from __future__ import annotations

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
from entropy_lens.errors import UserError
from entropy_lens.registry import Registry

STAGE_DETECTORS: Registry = Registry("stage detector")


def register_stage_detector(name: str):
    """Register ``fn(curves: pl.DataFrame, **params) -> int`` (a step present in ``curves``) under ``name``."""
    return STAGE_DETECTORS.register(name)


@dataclass(frozen=True)
class StageBoundary:
    """The rising → plateau transition: the first plateau step and how it was found."""

    step: int
    detector: str
    params: dict = field(default_factory=dict)

    def __int__(self) -> int:
        return self.step


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


def _clean(curves: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    df = curves.sort("step").drop_nulls(cols).filter(pl.all_horizontal([pl.col(c).is_not_nan() for c in cols]))
    if df.height < 3:
        raise UserError(f"stage detection needs at least 3 steps with non-null {', '.join(cols)}; got {df.height}")
    return df


@register_stage_detector("knee")
def knee_detector(curves: pl.DataFrame, window: int | None = None, smoothing: str = "savgol") -> int:
    """Kneedle on the smoothed, decreasing entropy curve (paper-notes §1.6 [I]).

    Normalise step and smoothed entropy to [0, 1]: ``x̂ = (s − s_min)/(s_max − s_min)``,
    ``ŷ = (H − H_min)/(H_max − H_min)``.  For a decreasing convex curve the knee is the step maximising
    ``(1 − x̂) − ŷ``, the distance below the chord from the first to the last point.
    """
    df = _clean(curves, ["entropy"])
    x = df["step"].to_numpy().astype(float)
    y = smooth(df["entropy"].to_numpy(), window or _default_window(df.height), smoothing)
    xn = (x - x.min()) / (np.ptp(x) or 1.0)
    yn = (y - y.min()) / (np.ptp(y) or 1.0)
    return int(x[int(np.argmax((1.0 - xn) - yn))])


@register_stage_detector("slope")
def slope_detector(
    curves: pl.DataFrame, frac: float = 0.1, window: int | None = None, smoothing: str = "savgol"
) -> int:
    """First step where both slopes have collapsed (paper-notes §1.6 [I] alternative).

    With ``H`` and ``acc`` smoothed, ``dH/ds`` and ``dacc/ds`` by ``np.gradient`` over the step values: the
    first step after the steepest entropy descent where ``|dH/ds| < frac·max|dH/ds|`` **and**
    ``|dacc/ds| < frac·max|dacc/ds|``.  Without an ``accuracy`` column only the entropy condition applies.
    Falls back to the last step when the curves never flatten.
    """
    use_acc = "accuracy" in curves.columns and curves["accuracy"].drop_nulls().len() >= 3
    df = _clean(curves, ["entropy", "accuracy"] if use_acc else ["entropy"])
    x = df["step"].to_numpy().astype(float)
    w = window or _default_window(df.height)
    dh = np.abs(np.gradient(smooth(df["entropy"].to_numpy(), w, smoothing), x))
    ok = dh < frac * dh.max()
    if use_acc:
        da = np.abs(np.gradient(smooth(df["accuracy"].to_numpy(), w, smoothing), x))
        ok &= da < frac * (da.max() or 1.0)
    start = int(np.argmax(dh))
    hits = np.nonzero(ok[start:])[0]
    return int(x[start + hits[0]]) if hits.size else int(x[-1])


def detect_stage_boundary(
    curves: pl.DataFrame, detector: str = "knee", *, boundary: int | None = None, **params
) -> StageBoundary:
    """Find the rising → plateau transition step ``s*`` (paper-notes §1.6).

    ``curves`` is ``step_curves(...)`` output (needs ``step``, ``entropy``; ``slope`` also uses
    ``accuracy``).  ``boundary=`` is the manual override (``--stage-boundary 200``): it is returned as is,
    with ``detector="manual"``.  Otherwise ``STAGE_DETECTORS.get(detector)(curves, **params)``.
    """
    if boundary is not None:
        return StageBoundary(int(boundary), "manual", {})
    fn = STAGE_DETECTORS.get(detector)
    return StageBoundary(fn(curves, **params), detector, dict(params))


def label_stages(curves: pl.DataFrame | pl.LazyFrame, boundary) -> pl.DataFrame:
    """Add ``stage``: "rising" for ``step < boundary``, "plateau" from the boundary step on (paper-notes §1.6).

    ``boundary`` is an int or a :class:`StageBoundary`.
    """
    b = boundary_step(boundary)
    if b is None:
        raise UserError("label_stages needs a boundary step")
    lf = lazy(curves, "curves").with_columns(stage_expr(b))
    return collect_streaming(lf)
