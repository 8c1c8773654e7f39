"""Entropy of positive vs negative samples (paper-notes §1.3, §2.1 A; Fig. 2c).

Positive = correct response, negative = incorrect (paper-notes §1.1).  Both aggregates of §1.3 are reported: the
token mean (over all tokens of the polarity's responses in a step; matches ``actor/entropy``) and the sample
mean (mean over responses of the per-response mean entropy ``H̄_i``).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from entropy_lens.analysis.frames import (
    SAMPLE_KEY,
    boundary_step,
    collect_streaming,
    lazy,
    require,
    stage_expr,
    with_polarity,
)
from entropy_lens.analysis.stats import slope_ci


def polarity_entropy(*, tokens: pl.LazyFrame, samples: pl.LazyFrame) -> pl.DataFrame:
    """Per step and polarity: mean entropy of positive vs negative samples (paper-notes §1.3, §2.1 A).

    Columns: ``step``, ``polarity`` ("positive" | "negative"), ``entropy_token_mean`` (nats,
    Σ_tokens H / n_tokens), ``entropy_sample_mean`` (nats, mean over responses of H̄_i), ``n_tokens``,
    ``n_samples``.  One pass over ``tokens``: per-response sums, then per step and polarity.
    """
    t = require(lazy(tokens, "tokens"), [*SAMPLE_KEY, "entropy"], "tokens")
    s = require(lazy(samples, "samples"), [*SAMPLE_KEY, "correct"], "samples")
    per_sample = (
        with_polarity(t.select(*SAMPLE_KEY, "entropy"), s)
        .group_by(*SAMPLE_KEY, "polarity")
        .agg(pl.col("entropy").cast(pl.Float64).sum().alias("_h_sum"), pl.len().alias("_n"))
    )
    out = (
        per_sample.group_by("step", "polarity")
        .agg(
            (pl.col("_h_sum").sum() / pl.col("_n").sum()).alias("entropy_token_mean"),
            (pl.col("_h_sum") / pl.col("_n")).mean().alias("entropy_sample_mean"),
            pl.col("_n").sum().cast(pl.Int64).alias("n_tokens"),
            pl.len().cast(pl.Int64).alias("n_samples"),
        )
        .with_columns(pl.col("step").cast(pl.Int64))
        .sort("step", "polarity")
    )
    return collect_streaming(out)


def polarity_rates(
    table: pl.DataFrame,
    boundary=None,
    value: str = "entropy_token_mean",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pl.DataFrame:
    """Rate of change of each polarity's entropy by stage: OLS slope over steps with a bootstrap CI.

    ``table`` is :func:`polarity_entropy` output.  Columns: ``stage`` ("rising" | "plateau", or "all" with no
    boundary), ``polarity`` (plus "negative-positive", the slope difference, bootstrap CI from paired
    per-step resampling), ``slope`` (nats/step), ``ci_low``, ``ci_high``, ``n`` (steps), ``start``, ``end``
    (first and last value in the stage, nats).  The paper's finding (§2.1 A): in the rising stage the
    negative samples' slope is more negative.
    """
    b = boundary_step(boundary)
    df = table.with_columns(stage_expr(b) if b is not None else pl.lit("all").alias("stage"))
    rows = []
    for stage in [s for s in ("rising", "plateau", "all") if s in df["stage"].unique().to_list()]:
        d = df.filter(pl.col("stage") == stage)
        for pol in ("negative", "positive"):
            p = d.filter(pl.col("polarity") == pol).sort("step")
            if p.height == 0:
                continue
            e = slope_ci(p["step"].to_numpy(), p[value].to_numpy(), n_boot, seed, level)
            rows.append(dict(stage=stage, polarity=pol, slope=e.estimate, ci_low=e.ci_low, ci_high=e.ci_high,
                             n=e.n, start=float(p[value][0]), end=float(p[value][-1])))
        wide = (
            d.pivot(on="polarity", index="step", values=value).sort("step")
            if d.height else pl.DataFrame()
        )
        if {"negative", "positive"} <= set(wide.columns):
            wide = wide.drop_nulls(["negative", "positive"])
            diff = wide["negative"].to_numpy() - wide["positive"].to_numpy()
            e = slope_ci(wide["step"].to_numpy(), diff, n_boot, seed, level)
            rows.append(dict(stage=stage, polarity="negative-positive", slope=e.estimate, ci_low=e.ci_low,
                             ci_high=e.ci_high, n=e.n,
                             start=float(diff[0]) if diff.size else np.nan,
                             end=float(diff[-1]) if diff.size else np.nan))
    schema = dict(stage=pl.Utf8, polarity=pl.Utf8, slope=pl.Float64, ci_low=pl.Float64, ci_high=pl.Float64,
                  n=pl.Int64, start=pl.Float64, end=pl.Float64)
    return pl.DataFrame(rows, schema=schema)


def polarity_from_log(steps: pl.DataFrame) -> pl.DataFrame | None:
    """The training log's per-step token-mean entropy of positive and negative samples (``entropy_pos`` /
    ``entropy_neg``, logged at every training step) in :func:`polarity_entropy`'s long layout: ``step``,
    ``polarity``, ``entropy_token_mean``; None when the log lacks either column or has no value in it."""
    if not {"entropy_pos", "entropy_neg"} <= set(steps.columns):
        return None
    long = pl.concat([
        steps.select(pl.col("step").cast(pl.Int64), pl.lit(pol).alias("polarity"),
                     pl.col(col).cast(pl.Float64).alias("entropy_token_mean"))
        for pol, col in (("positive", "entropy_pos"), ("negative", "entropy_neg"))
    ]).drop_nulls("entropy_token_mean").sort("step", "polarity")
    return long if long.height else None
