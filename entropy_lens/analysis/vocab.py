"""Token-type shift across the rising stage (paper-notes §2.1 B; Fig. 2b).

Compare each vocabulary item's relative frequency and mean entropy between the *start window* (the first
``window`` steps of the rising stage) and the *end window* (the last ``window`` steps before the boundary).
Finding to reproduce: task-irrelevant tokens lose the most entropy; math tokens (``\\``, ``=``, ``frac``)
gain the most frequency.
"""

from __future__ import annotations

from typing import Iterable

import polars as pl

from entropy_lens.analysis.frames import boundary_step, collect_streaming, lazy, require
from entropy_lens.errors import UserError
from entropy_lens.registry import Registry


def rising_steps(steps: Iterable[int], boundary) -> list[int]:
    """The recorded steps of the rising stage, sorted: ``step < boundary`` (every step without a boundary)."""
    b = boundary_step(boundary)
    return [int(s) for s in sorted(steps) if b is None or s < b]


def rising_windows(steps: Iterable[int], boundary, window: int) -> tuple[list[int], list[int]]:
    """The start and end windows of the rising stage: its first and last ``window`` recorded steps, capped
    at half the rising steps so that they never overlap.  Fewer than 2 rising steps is a :class:`UserError`."""
    rising = rising_steps(steps, boundary)
    if len(rising) < 2:
        raise UserError(f"the rising stage has {len(rising)} step(s) (boundary {boundary_step(boundary)}); need at "
                        "least 2 to compare windows")
    w = max(1, min(int(window), len(rising) // 2))
    return rising[:w], rising[-w:]


def table_steps(frame: pl.LazyFrame) -> list[int]:
    """The distinct ``step`` values of a table, sorted."""
    return sorted(collect_streaming(frame.select(pl.col("step").unique()))["step"].to_list())


def token_shift(
    *,
    tokens: pl.LazyFrame,
    vocab: pl.LazyFrame | None = None,
    boundary=None,
    window: int = 3,
    min_count: int = 5,
) -> pl.DataFrame:
    """Per token type: frequency and mean entropy in the start vs the end window of the rising stage.

    Windows are counted in recorded steps (checkpoints): the first ``window`` and the last ``window`` steps
    with ``step < boundary`` (all steps when ``boundary`` is None), capped at half the rising steps so they
    never overlap.  Definitions (paper-notes §2.1 B [I]): ``freq = count / total tokens in the window``;
    ``freq_change = freq_end − freq_start``; ``freq_ratio = (freq_end + 1/N_end)/(freq_start + 1/N_start)``
    (add-one smoothed); ``entropy_change = entropy_end − entropy_start`` (nats; null unless the type occurs
    in both windows).  Types with ``count_start + count_end < min_count`` are dropped.

    Columns: ``token_id``, ``token`` (from ``vocab``, null without it), ``count_start``, ``count_end``,
    ``freq_start``, ``freq_end``, ``freq_change``, ``freq_ratio``, ``entropy_start``, ``entropy_end``,
    ``entropy_change``; sorted by ``token_id``.
    """
    t = require(lazy(tokens, "tokens"), ["step", "token_id", "entropy"], "tokens")
    start, end = rising_windows(table_steps(t), boundary, window)
    win = (
        t.filter(pl.col("step").is_in(start + end))
        .with_columns(pl.when(pl.col("step").is_in(start)).then(pl.lit("start")).otherwise(pl.lit("end")).alias("_w"))
        .group_by("_w", "token_id")
        .agg(pl.len().cast(pl.Int64).alias("count"), pl.col("entropy").cast(pl.Float64).mean().alias("entropy"))
    )
    per = collect_streaming(win)  # one row per (window, token type): at most 2·|V| rows
    totals = {w: int(per.filter(pl.col("_w") == w)["count"].sum()) for w in ("start", "end")}
    s = per.filter(pl.col("_w") == "start").select("token_id", pl.col("count").alias("count_start"), pl.col("entropy").alias("entropy_start"))
    e = per.filter(pl.col("_w") == "end").select("token_id", pl.col("count").alias("count_end"), pl.col("entropy").alias("entropy_end"))
    n_s, n_e = max(totals["start"], 1), max(totals["end"], 1)
    df = (
        s.join(e, on="token_id", how="full", coalesce=True)
        .with_columns(pl.col("count_start").fill_null(0), pl.col("count_end").fill_null(0))
        .filter(pl.col("count_start") + pl.col("count_end") >= min_count)
        .with_columns(
            freq_start=pl.col("count_start") / n_s,
            freq_end=pl.col("count_end") / n_e,
        )
        .with_columns(
            freq_change=pl.col("freq_end") - pl.col("freq_start"),
            freq_ratio=(pl.col("freq_end") + 1.0 / n_e) / (pl.col("freq_start") + 1.0 / n_s),
            entropy_change=pl.col("entropy_end") - pl.col("entropy_start"),
        )
    )
    if vocab is not None:
        v = collect_streaming(require(lazy(vocab, "vocab"), ["token_id", "token"], "vocab").select("token_id", "token"))
        df = df.join(v.with_columns(pl.col("token_id").cast(df["token_id"].dtype)), on="token_id", how="left")
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.Utf8).alias("token"))
    cols = ["token_id", "token", "count_start", "count_end", "freq_start", "freq_end", "freq_change",
            "freq_ratio", "entropy_start", "entropy_end", "entropy_change"]
    return df.select(cols).sort("token_id")


SHIFT_RANKINGS: Registry = Registry("token-shift ranking")


@SHIFT_RANKINGS.register("entropy_drop")
def _rank_entropy_drop(df: pl.DataFrame) -> pl.DataFrame:
    """Largest entropy decrease first (most negative ``entropy_change``); types seen in both windows."""
    return df.drop_nulls("entropy_change").sort(["entropy_change", "token_id"]).with_columns(score=-pl.col("entropy_change"))


@SHIFT_RANKINGS.register("freq_rise")
def _rank_freq_rise(df: pl.DataFrame) -> pl.DataFrame:
    """Largest absolute frequency increase first (``freq_change`` descending)."""
    return df.sort(["freq_change", "token_id"], descending=[True, False]).with_columns(score=pl.col("freq_change"))


def top_token_shifts(shift: pl.DataFrame, n: int = 20, rankings=("entropy_drop", "freq_rise")) -> pl.DataFrame:
    """Top-``n`` token types per ranking (registered in ``SHIFT_RANKINGS``) from :func:`token_shift` output.

    Long format: ``ranking``, ``rank`` (1-based), ``score`` (entropy drop in nats, or frequency increase),
    then all :func:`token_shift` columns.
    """
    frames = []
    for name in rankings:
        r = SHIFT_RANKINGS.get(name)(shift).head(n)
        frames.append(r.with_columns(pl.lit(name).alias("ranking"), pl.int_range(1, r.height + 1, dtype=pl.Int64).alias("rank")))
    out = pl.concat(frames, how="vertical") if frames else shift.head(0)
    return out.select("ranking", "rank", "score", *shift.columns)
