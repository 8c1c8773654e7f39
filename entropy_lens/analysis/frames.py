"""The vocabulary every analysis shares: table keys, input checks, streaming collection, polarity and stage
labels, and the Δp and gradient-norm columns.

Every public analysis function takes the store's tables as keyword frames — a polars LazyFrame or
DataFrame, or for ``tokens`` / ``updates`` the :class:`~entropy_lens.store.Partitions` of a store
(:meth:`~entropy_lens.store.Store.partitions`), which the step-wise analyses read one file at a time —
builds one lazy query over them and collects it once at the end with the streaming engine, so a
10⁹-row ``tokens`` table is never materialised in Python.  Small helper queries (per-step thresholds such as
the top-x% |Δp| cut) are collected first as small tables.  The Δp analyses instead go one step partition at
a time (:mod:`entropy_lens.analysis.stepwise`).
"""

from __future__ import annotations

from typing import Iterable

import polars as pl

from entropy_lens.errors import UserError
from entropy_lens.store import Partitions, pair_steps

__all__ = [
    "SAMPLE_KEY", "TOKEN_KEY", "STAGES", "collect_streaming", "lazy", "source", "require", "has_columns",
    "polarity_expr", "stage_expr", "boundary_step", "check_stage", "add_stage", "with_polarity", "delta_exprs", "add_delta_p",
    "with_updates", "grad_norm_expr",
]

SAMPLE_KEY = ["step", "prompt_id", "sample_id"]
TOKEN_KEY = [*SAMPLE_KEY, "position"]
STAGES = ("rising", "plateau")


def collect_streaming(lf: pl.LazyFrame) -> pl.DataFrame:
    """Collect with the streaming engine (polars falls back to in-memory for nodes it cannot stream)."""
    return lf.collect(engine="streaming")


def lazy(frame: pl.LazyFrame | pl.DataFrame | Partitions, name: str) -> pl.LazyFrame:
    """The table as a LazyFrame (a store's :class:`Partitions` as the scan of all its files)."""
    if isinstance(frame, pl.DataFrame):
        return frame.lazy()
    if isinstance(frame, pl.LazyFrame):
        return frame
    if isinstance(frame, Partitions):
        return frame.scan()
    raise UserError(f"{name}: expected a polars LazyFrame or DataFrame, got {type(frame).__name__}")


def source(frame: pl.LazyFrame | pl.DataFrame | Partitions, name: str) -> pl.LazyFrame | Partitions:
    """What a step-wise reader takes: a store's :class:`Partitions` as they are, any frame as a LazyFrame."""
    return frame if isinstance(frame, Partitions) else lazy(frame, name)


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


def has_values(lf: pl.LazyFrame, column: str) -> bool:
    """``column`` exists and holds at least one non-null value (columns a newer store schema added read as
    all-null in older stores)."""
    if column not in lf.collect_schema().names():
        return False
    return lf.select(pl.col(column).is_not_null().any()).collect().item()


def polarity_expr(col: str = "correct") -> pl.Expr:
    """"positive" for correct responses, "negative" otherwise (paper-notes §1.1)."""
    return pl.when(pl.col(col)).then(pl.lit("positive")).otherwise(pl.lit("negative")).alias("polarity")


def stage_expr(boundary: int) -> pl.Expr:
    """Steps strictly before the boundary are the rising stage; the boundary step and after, the plateau."""
    return pl.when(pl.col("step") < boundary).then(pl.lit("rising")).otherwise(pl.lit("plateau")).alias("stage")


def boundary_step(boundary) -> int | None:
    """Accept an int or anything with a ``.step`` attribute (a :class:`~entropy_lens.analysis.stages.StageBoundary`)."""
    if boundary is None:
        return None
    return int(getattr(boundary, "step", boundary))


def check_stage(boundary: int | None, stage: str | None) -> None:
    """``stage`` must be a known stage, and needs a boundary."""
    if stage is not None and stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    if boundary is None and stage is not None:
        raise UserError(f"stage={stage!r} needs a stage boundary (pass boundary=...)")


def add_stage(lf: pl.LazyFrame, boundary, stage: str | None = None) -> pl.LazyFrame:
    """Add a ``stage`` column when a boundary is given; keep only ``stage`` rows when asked.

    With no boundary every row gets ``stage = "all"`` so that callers can always group by ``stage``.
    """
    b = boundary_step(boundary)
    check_stage(b, stage)
    if b is None:
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


def delta_exprs() -> list[list[pl.Expr]]:
    """The Δ columns of :func:`with_updates`, as successive ``with_columns`` batches (Float64)."""
    lp = pl.col("logprob").cast(pl.Float64)
    lpn = pl.col("logprob_next").cast(pl.Float64)
    return [
        [lp.exp().alias("p"), lpn.exp().alias("p_next"), (lpn - lp).alias("delta_logp")],
        [(pl.col("p_next") - pl.col("p")).alias("delta_p")],
        [pl.col("delta_p").abs().alias("abs_delta_p")],
    ]


def add_delta_p(df, keep_p: bool = False):
    """Add ``delta_p`` = exp(logprob_next) − exp(logprob) and ``abs_delta_p`` (Float64, the values of
    :func:`with_updates`) to a frame with ``logprob`` and ``logprob_next``; each exponential is computed once
    (``keep_p`` keeps ``p = exp(logprob)`` as well)."""
    p = pl.col("logprob").cast(pl.Float64).exp().alias("p")
    df = df.with_columns(p).with_columns(
        (pl.col("logprob_next").cast(pl.Float64).exp() - pl.col("p")).alias("delta_p"))
    df = df.with_columns(pl.col("delta_p").abs().alias("abs_delta_p"))
    return df if keep_p else df.drop("p")


def with_updates(tokens: pl.LazyFrame | Partitions, updates: pl.LazyFrame | Partitions | None) -> pl.LazyFrame:
    """Tokens with their updates (teacher-forced log-probs under the next checkpoint).

    Adds ``p = exp(logprob)``, ``p_next = exp(logprob_next)``, ``delta_logp = logprob_next − logprob``,
    ``delta_p = p_next − p`` and ``abs_delta_p`` (paper-notes §1.7).  Computed in Float64.

    When ``tokens`` already carries ``logprob_next`` (e.g. :meth:`~entropy_lens.store.Store.tokens_with_updates`)
    ``updates`` is not used.  Otherwise the rows are the inner join on (step, prompt_id, sample_id, position),
    built step by step without a hash join where the two tables are aligned row for row
    (:func:`entropy_lens.store.pair_steps`; the alignment is checked now, reading the key columns).
    """
    t = require(lazy(tokens, "tokens"), [*TOKEN_KEY, "logprob"], "tokens")
    if has_columns(t, ["logprob_next"]):
        lf = t
    else:
        if updates is None:
            raise UserError("updates are needed (or tokens with a logprob_next column)")
        require(lazy(updates, "updates"), [*TOKEN_KEY, "logprob_next"], "updates")
        lf = pair_steps(source(tokens, "tokens"), source(updates, "updates"), ("logprob_next",))
    for batch in delta_exprs():
        lf = lf.with_columns(batch)
    return lf


def grad_norm_expr(p: pl.Expr | None = None) -> pl.Expr:
    """Logit-gradient norm of log π(y): sqrt(1 − 2p + Σ_v p_v²), p = exp(logprob) (paper-notes §1.7).

    Clipped at 0 inside the square root against float32 rounding.  ``p``: an expression already holding
    exp(logprob) (e.g. ``pl.col("p")``), to not compute it again.
    """
    p = pl.col("logprob").cast(pl.Float64).exp() if p is None else p
    return (1.0 - 2.0 * p + pl.col("sum_p2").cast(pl.Float64)).clip(lower_bound=0.0).sqrt().alias("grad_norm")
