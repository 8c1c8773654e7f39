"""Shared plumbing for the analysis functions: column checks, lazy collection, polarity and stage selection.

Every public analysis function builds one lazy query over the store's tables and collects it once at the end
(streaming engine), so a 10^9-row ``tokens`` table is never materialised in Python.  Small helper queries
(per-step thresholds such as the top-x% |Δp| cut or the 80th entropy percentile) are collected first as
small tables and joined back lazily.
"""

from __future__ import annotations

from typing import Iterable

import polars as pl

from entropy_lens.errors import UserError

SAMPLE_KEY = ["step", "prompt_id", "sample_id"]
TOKEN_KEY = [*SAMPLE_KEY, "position"]
STAGES = ("rising", "plateau")


def collect(lf: pl.LazyFrame) -> pl.DataFrame:
    """Collect with the streaming engine (polars falls back to in-memory for nodes it cannot stream)."""
    return lf.collect(engine="streaming")


def lazy(frame: pl.LazyFrame | pl.DataFrame, name: str) -> pl.LazyFrame:
    if isinstance(frame, pl.DataFrame):
        return frame.lazy()
    if isinstance(frame, pl.LazyFrame):
        return frame
    raise UserError(f"{name}: expected a polars LazyFrame or DataFrame, got {type(frame).__name__}")


def require(lf: pl.LazyFrame, columns: Iterable[str], table: str) -> pl.LazyFrame:
    """Fail with one clear line when a table lacks columns the analysis needs (schema: docs/store-schema.md)."""
    have = set(lf.collect_schema().names())
    missing = [c for c in columns if c not in have]
    if missing:
        raise UserError(
            f"table {table!r} lacks column(s) {', '.join(missing)}; "
            f"expected the store schema (docs/store-schema.md), have: {', '.join(sorted(have))}"
        )
    return lf


def has_columns(lf: pl.LazyFrame, columns: Iterable[str]) -> bool:
    have = set(lf.collect_schema().names())
    return all(c in have for c in columns)


def polarity_expr(col: str = "correct") -> pl.Expr:
    """"positive" for correct responses, "negative" otherwise (PAPER §1.1)."""
    return pl.when(pl.col(col)).then(pl.lit("positive")).otherwise(pl.lit("negative")).alias("polarity")


def stage_expr(boundary: int) -> pl.Expr:
    """Steps strictly before the boundary are the rising stage; the boundary step and after, the plateau."""
    return pl.when(pl.col("step") < boundary).then(pl.lit("rising")).otherwise(pl.lit("plateau")).alias("stage")


def boundary_step(boundary) -> int | None:
    """Accept an int or anything with a ``.step`` attribute (a :class:`~entropy_lens.analysis.stages.StageBoundary`)."""
    if boundary is None:
        return None
    return int(getattr(boundary, "step", boundary))


def add_stage(lf: pl.LazyFrame, boundary, stage: str | None = None) -> pl.LazyFrame:
    """Add a ``stage`` column when a boundary is given; keep only ``stage`` rows when asked.

    With no boundary every row gets ``stage = "all"`` so that callers can always group by ``stage``.
    """
    b = boundary_step(boundary)
    if stage is not None and stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    if b is None:
        if stage is not None:
            raise UserError(f"stage={stage!r} needs a stage boundary (pass boundary=...)")
        return lf.with_columns(pl.lit("all").alias("stage"))
    lf = lf.with_columns(stage_expr(b))
    if stage is not None:
        lf = lf.filter(pl.col("stage") == stage)
    return lf


def with_polarity(tokens: pl.LazyFrame, samples: pl.LazyFrame) -> pl.LazyFrame:
    """Join each token row with its sample's correctness; adds ``correct`` and ``polarity``."""
    s = require(samples, [*SAMPLE_KEY, "correct"], "samples").select(*SAMPLE_KEY, "correct")
    t = tokens
    if "correct" in t.collect_schema().names():
        t = t.drop("correct")
    return t.join(s, on=SAMPLE_KEY, how="inner").with_columns(polarity_expr())


def with_updates(tokens: pl.LazyFrame, updates: pl.LazyFrame) -> pl.LazyFrame:
    """Join tokens with updates (teacher-forced log-probs under the next checkpoint).

    Adds ``p = exp(logprob)``, ``p_next = exp(logprob_next)``, ``delta_logp = logprob_next − logprob``,
    ``delta_p = p_next − p`` and ``abs_delta_p`` (PAPER §1.7).  Computed in Float64.
    """
    require(tokens, [*TOKEN_KEY, "logprob"], "tokens")
    u = require(updates, [*TOKEN_KEY, "logprob_next"], "updates").select(*TOKEN_KEY, "logprob_next")
    lp = pl.col("logprob").cast(pl.Float64)
    lpn = pl.col("logprob_next").cast(pl.Float64)
    return (
        tokens.join(u, on=TOKEN_KEY, how="inner")
        .with_columns(p=lp.exp(), p_next=lpn.exp(), delta_logp=lpn - lp)
        .with_columns(delta_p=pl.col("p_next") - pl.col("p"))
        .with_columns(abs_delta_p=pl.col("delta_p").abs())
    )


def grad_norm_expr() -> pl.Expr:
    """Logit-gradient norm of log π(y): sqrt(1 − 2p + Σ_v p_v²), p = exp(logprob) (PAPER §1.7).

    Clipped at 0 inside the square root against float32 rounding.
    """
    p = pl.col("logprob").cast(pl.Float64).exp()
    return (1.0 - 2.0 * p + pl.col("sum_p2").cast(pl.Float64)).clip(lower_bound=0.0).sqrt().alias("grad_norm")


def per_step_quantile(lf: pl.LazyFrame, column: str, q: float, name: str) -> pl.LazyFrame:
    """A small table ``step -> quantile_q(column)`` (linear interpolation), collected and returned lazy."""
    small = collect(lf.group_by("step").agg(pl.col(column).quantile(q, interpolation="linear").alias(name)))
    return small.lazy()


def flag_top_fraction(lf: pl.LazyFrame, column: str, top_frac: float, name: str) -> pl.LazyFrame:
    """Flag rows whose ``column`` is at or above the per-step (1 − top_frac) quantile: the top-x% per step.

    Rows with ``column <= 0`` are never flagged, so a step where nearly every |Δp| is exactly 0 does not
    flag all of its tokens.
    """
    if not 0.0 < top_frac <= 1.0:
        raise UserError(f"top_frac must be in (0, 1], got {top_frac}")
    thr = per_step_quantile(lf, column, 1.0 - top_frac, f"_{name}_thr")
    return (
        lf.join(thr, on="step", how="left")
        .with_columns(((pl.col(column) >= pl.col(f"_{name}_thr")) & (pl.col(column) > 0)).fill_null(False).alias(name))
        .drop(f"_{name}_thr")
    )
