"""Instance-level analysis: perplexity (paper-notes §1.4, §2.2 G; Fig. 4a).

``w_ppl`` is the released code's group-standardised log-PPL (``core_algos.calculate_ppl``), reproduced
exactly in polars.  PPL buckets come from registered *bucketings*::

    ppl_buckets(samples=s, bucketing="group_z")              # w_ppl < −0.5 low, > 0.5 high, else mid
    ppl_buckets(samples=s, bucketing="quantile", n_bins=5)   # global per-step quantiles of logPPL
"""

from __future__ import annotations

import polars as pl

import numpy as np

from entropy_lens.analysis.frames import SAMPLE_KEY, add_stage, collect_streaming, lazy, require
from entropy_lens.analysis.stepwise import (
    SamplesByStep,
    check_top_frac,
    merge_sums,
    pair_tokens,
    quantiles_linear,
    scan_steps,
)
from entropy_lens.errors import UserError
from entropy_lens.registry import Registry
from entropy_lens.store import Partitions

GROUP = ["step", "prompt_id"]


def ppl_weights_lazy(samples: pl.LazyFrame, iqr_k: float = 1.5, eps: float = 1e-6) -> pl.LazyFrame:
    """Lazy version of :func:`ppl_weights` (for composing); same columns, not collected."""
    s = require(lazy(samples, "samples"), [*SAMPLE_KEY, "logppl"], "samples")
    x = pl.col("logppl")
    inl = pl.col("inlier")
    return (
        s.select(*SAMPLE_KEY, pl.col("logppl").cast(pl.Float64))
        .with_columns(
            x.quantile(0.25, interpolation="linear").over(GROUP).alias("q1"),
            x.quantile(0.75, interpolation="linear").over(GROUP).alias("q3"),
        )
        .with_columns((pl.col("q3") - pl.col("q1")).alias("iqr"))
        .with_columns(
            ((x >= pl.col("q1") - iqr_k * pl.col("iqr")) & (x <= pl.col("q3") + iqr_k * pl.col("iqr"))).alias("inlier")
        )
        .with_columns(
            inl.sum().over(GROUP).alias("_n_in"),
            x.filter(inl).mean().over(GROUP).alias("_mu_in"),
            x.filter(inl).std(ddof=0).over(GROUP).alias("_sd_in"),
            x.mean().over(GROUP).alias("_mu_all"),
            x.std(ddof=0).over(GROUP).alias("_sd_all"),
        )
        .with_columns(
            pl.when(pl.col("_n_in") > 0).then(pl.col("_mu_in")).otherwise(pl.col("_mu_all")).alias("mu"),
            pl.when(pl.col("_n_in") > 0).then(pl.col("_sd_in")).otherwise(pl.col("_sd_all")).alias("_sd"),
        )
        .with_columns(pl.when(pl.col("_sd") <= eps).then(1.0).otherwise(pl.col("_sd")).alias("sigma"))
        .with_columns(((x - pl.col("mu")) / pl.col("sigma")).alias("w_ppl"), x.exp().alias("ppl"))
        .select(*SAMPLE_KEY, "logppl", "ppl", "q1", "q3", "iqr", "inlier", "mu", "sigma", "w_ppl")
    )


def ppl_weights(*, samples: pl.LazyFrame, iqr_k: float = 1.5, eps: float = 1e-6) -> pl.DataFrame:
    """Group-standardised log-PPL weight ``w_ppl`` per response, exactly as paper-notes §1.4 [C].

    Per prompt group (step, prompt_id): ``Q1``, ``Q3`` (linear interpolation, as ``torch.quantile``),
    ``IQR = Q3 − Q1``; inliers are ``Q1 − 1.5·IQR ≤ logPPL ≤ Q3 + 1.5·IQR``; ``μ`` = inlier mean, ``σ`` =
    inlier population std (ddof 0), ``σ ≤ 1e-6 → 1``; no inliers → all values; ``w_ppl = (logPPL − μ)/σ``
    for every sample, outliers included.  ``logPPL = −mean_t logprob`` is the ``samples.logppl`` column.

    Columns: ``step``, ``prompt_id``, ``sample_id``, ``logppl``, ``ppl``, ``q1``, ``q3``, ``iqr``,
    ``inlier``, ``mu``, ``sigma``, ``w_ppl``.
    """
    return collect_streaming(ppl_weights_lazy(samples, iqr_k, eps).sort(SAMPLE_KEY))


PPL_BUCKETINGS: Registry = Registry("PPL bucketing")


def register_ppl_bucketing(name: str):
    """Register ``fn(weights: pl.LazyFrame, **params) -> pl.LazyFrame`` adding a Utf8 ``ppl_bucket`` column."""
    return PPL_BUCKETINGS.register(name)


@register_ppl_bucketing("group_z")
def _group_z(weights: pl.LazyFrame, threshold: float = 0.5) -> pl.LazyFrame:
    """By group z-score: ``low`` if w_ppl < −threshold, ``high`` if w_ppl > threshold, else ``mid`` (§2.2 G (a))."""
    w = pl.col("w_ppl")
    return weights.with_columns(
        pl.when(w < -threshold).then(pl.lit("low")).when(w > threshold).then(pl.lit("high")).otherwise(pl.lit("mid")).alias("ppl_bucket")
    )


def quantile_labels(n_bins: int) -> list[str]:
    return ["low", "mid", "high"] if n_bins == 3 else (["low", "high"] if n_bins == 2 else [f"q{i + 1}" for i in range(n_bins)])


@register_ppl_bucketing("quantile")
def _quantile(weights: pl.LazyFrame, n_bins: int = 3) -> pl.LazyFrame:
    """By global per-step quantiles of logPPL (§2.2 G (b)): rank within the step (ordinal; ties by key order),
    bucket ``floor((rank − 1)·n_bins / n_step)``; labels low/mid/high for 3 bins, low/high for 2, else q1..qn."""
    if n_bins < 2:
        raise UserError(f"n_bins must be ≥ 2, got {n_bins}")
    labels = quantile_labels(n_bins)
    idx = ((pl.col("logppl").rank("ordinal").over("step") - 1) * n_bins // pl.len().over("step")).cast(pl.Int64)
    return weights.sort(SAMPLE_KEY).with_columns(idx.replace_strict(dict(enumerate(labels)), return_dtype=pl.Utf8).alias("ppl_bucket"))


def _buckets_lazy(samples, bucketing: str, params: dict) -> pl.LazyFrame:
    fn = PPL_BUCKETINGS.get(bucketing)
    return fn(ppl_weights_lazy(lazy(samples, "samples")), **params)


def ppl_buckets(*, samples: pl.LazyFrame, bucketing: str = "group_z", **params) -> pl.DataFrame:
    """PPL bucket per response (paper-notes §2.2 G).  Columns: :func:`ppl_weights` columns + ``ppl_bucket``."""
    return collect_streaming(_buckets_lazy(samples, bucketing, params).sort(SAMPLE_KEY))


def _bucket_order(labels) -> list[str]:
    pref = ["low", "mid", "high"]
    return sorted(labels, key=lambda b: (pref.index(b) if b in pref else 3, b))


def ppl_bucket_updates(
    *,
    tokens: pl.LazyFrame | Partitions,
    updates: pl.LazyFrame | Partitions | None = None,
    samples: pl.LazyFrame,
    bucketing: str = "group_z",
    top_frac: float = 0.01,
    high_entropy_quantile: float = 0.8,
    boundary=None,
    stage: str | None = None,
    bucketing_params: dict | None = None,
) -> pl.DataFrame:
    """Where the large probability updates come from, by PPL bucket (paper-notes §2.2 G, §7.3; Fig. 4a).

    Tokens are flagged ``top`` (per-step top-``top_frac`` |Δp|) and ``high_entropy`` (entropy ≥ the per-step
    ``high_entropy_quantile``, i.e. the batch 80th percentile by default, paper-notes §7.1).

    Columns: ``stage``, ``ppl_bucket``, ``n_samples``, ``accuracy`` (share correct), ``n_tokens``,
    ``share_tokens`` (of the stage's tokens), ``n_top``, ``share_top`` (share of the top-|Δp| tokens that come
    from the bucket), ``enrichment`` (share_top / share_tokens), ``n_high_entropy``,
    ``mean_abs_delta_p_high_entropy``, ``mean_abs_delta_p``.  Finding: low-PPL buckets dominate ``share_top``.
    """
    s = require(lazy(samples, "samples"), [*SAMPLE_KEY, "correct", "logppl"], "samples")
    buckets = _buckets_lazy(s, bucketing, bucketing_params or {}).select(*SAMPLE_KEY, "ppl_bucket")
    check_top_frac(top_frac)
    by_step = SamplesByStep(buckets, ["ppl_bucket"])
    pairs = pair_tokens(tokens, updates, ["entropy"])
    high = pl.col("high_entropy")
    parts = []
    # both per-step cuts are exact quantiles over the step's token rows, taken before the buckets are joined
    for step, stage_label, df in scan_steps(pairs, [*SAMPLE_KEY, "entropy", "logprob"], boundary=boundary,
                                            stage=stage, top_frac=top_frac):
        h_thr = quantiles_linear(df["entropy"], [high_entropy_quantile])[0]
        if h_thr is not None and df["entropy"].dtype == pl.Float32:  # polars: a Float32 column's quantile is Float32
            h_thr = float(np.float32(h_thr))
        high_expr = (pl.lit(False) if h_thr is None else
                     (pl.col("entropy") >= pl.lit(h_thr, dtype=df["entropy"].dtype)).fill_null(False))
        df = by_step.join(df.with_columns(high_expr.alias("high_entropy")), step)
        parts.append(df.group_by("ppl_bucket").agg(
            pl.len().cast(pl.Int64).alias("n_tokens"),
            pl.col("top").sum().cast(pl.Int64).alias("n_top"),
            high.sum().cast(pl.Int64).alias("n_high_entropy"),
            pl.col("abs_delta_p").filter(high).sum().alias("_sh"), pl.col("abs_delta_p").filter(high).count().cast(pl.Int64).alias("_ch"),
            pl.col("abs_delta_p").sum().alias("_sa"), pl.col("abs_delta_p").count().cast(pl.Int64).alias("_ca"),
        ).with_columns(pl.lit(stage_label).alias("stage")))
    schema = {"stage": pl.Utf8, "ppl_bucket": pl.Utf8, "n_tokens": pl.Int64, "n_top": pl.Int64, "n_high_entropy": pl.Int64,
              "_sh": pl.Float64, "_ch": pl.Int64, "_sa": pl.Float64, "_ca": pl.Int64}
    tok = merge_sums(parts, ["stage", "ppl_bucket"], schema).select(
        "stage", "ppl_bucket", "n_tokens", "n_top", "n_high_entropy",
        pl.when(pl.col("_ch") > 0).then(pl.col("_sh") / pl.col("_ch")).alias("mean_abs_delta_p_high_entropy"),
        pl.when(pl.col("_ca") > 0).then(pl.col("_sa") / pl.col("_ca")).alias("mean_abs_delta_p"),
    )
    smp = collect_streaming(
        add_stage(s.select(*SAMPLE_KEY, "correct"), boundary, stage)
        .join(buckets, on=SAMPLE_KEY, how="inner")
        .group_by("stage", "ppl_bucket")
        .agg(pl.len().cast(pl.Int64).alias("n_samples"), pl.col("correct").cast(pl.Float64).mean().alias("accuracy"))
    )
    df = smp.join(tok, on=["stage", "ppl_bucket"], how="full", coalesce=True).with_columns(
        pl.col("n_tokens").fill_null(0), pl.col("n_top").fill_null(0), pl.col("n_high_entropy").fill_null(0)
    )
    df = df.with_columns(
        (pl.col("n_tokens") / pl.col("n_tokens").sum().over("stage")).alias("share_tokens"),
        (pl.col("n_top") / pl.col("n_top").sum().over("stage")).alias("share_top"),
    ).with_columns((pl.col("share_top") / pl.col("share_tokens")).alias("enrichment"))
    order = {b: i for i, b in enumerate(_bucket_order(df["ppl_bucket"].unique().to_list()))}
    return (
        df.with_columns(pl.col("ppl_bucket").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
        .sort("stage", "_o")
        .select("stage", "ppl_bucket", "n_samples", "accuracy", "n_tokens", "share_tokens", "n_top", "share_top",
                "enrichment", "n_high_entropy", "mean_abs_delta_p_high_entropy", "mean_abs_delta_p")
    )
