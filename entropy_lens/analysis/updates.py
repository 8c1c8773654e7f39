"""Which tokens change probability between consecutive checkpoints (PAPER §1.7, §2.1 D–E; Fig. 3a–b).

``updates`` holds, for every response token of step k, its log-prob under the next checkpoint. Joined
with ``tokens``: ``Δlogp = logprob_next − logprob`` and ``Δp = exp(logprob_next) − exp(logprob)``.
Findings to reproduce: >99% of tokens barely move; the big moves are increases in positive and decreases in
negative samples, on high-entropy, high-gradient tokens.

"Significant" tokens are the top-``top_frac`` |Δp| **per step** (PAPER §1.7 suggests x ∈ {0.1%, 1%}).
"""

from __future__ import annotations

import math

import polars as pl

from entropy_lens.analysis._common import (
    SAMPLE_KEY,
    TOKEN_KEY,
    add_stage,
    collect,
    flag_top_fraction,
    grad_norm_expr,
    lazy,
    require,
    with_polarity,
    with_updates,
)
from entropy_lens.analysis.stats import diff_means_from_moments
from entropy_lens.errors import UserError


def token_updates(
    *, tokens: pl.LazyFrame, updates: pl.LazyFrame, samples: pl.LazyFrame | None = None
) -> pl.LazyFrame:
    """Lazy join of tokens × updates (× samples for polarity); the building block of this module.

    Adds ``p``, ``p_next``, ``delta_logp``, ``delta_p``, ``abs_delta_p`` (PAPER §1.7), ``grad_norm`` =
    sqrt(1 − 2p + Σp²) when ``sum_p2`` is present, and ``correct``/``polarity`` when ``samples`` is given.
    Returns a LazyFrame (not collected): compose further queries on it.
    """
    t = lazy(tokens, "tokens")
    lf = with_updates(t, lazy(updates, "updates"))
    if "sum_p2" in lf.collect_schema().names():
        lf = lf.with_columns(grad_norm_expr())
    if samples is not None:
        lf = with_polarity(lf, lazy(samples, "samples"))
    return lf


def _qname(q: float) -> str:
    return "q" + f"{q * 100:g}".replace(".", "_")


def delta_p_distribution(
    *,
    tokens: pl.LazyFrame,
    updates: pl.LazyFrame,
    samples: pl.LazyFrame,
    boundary=None,
    quantiles=(0.001, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999),
    small: float = 1e-3,
) -> pl.DataFrame:
    """Δp summary for positive vs negative samples, by stage (PAPER §2.1 D, §7.3).

    Columns: ``stage`` ("rising"/"plateau", "all" without a boundary), ``polarity``, ``n`` (tokens),
    ``mean_delta_p``, ``mean_abs_delta_p``, one column per quantile of Δp named ``q{100·q}`` (``q0_1`` for
    0.001; linear interpolation), ``share_small`` (|Δp| < ``small``), ``share_increase`` (Δp ≥ ``small``),
    ``share_decrease`` (Δp ≤ −``small``).
    """
    lf = add_stage(token_updates(tokens=tokens, updates=updates, samples=samples), boundary)
    dp = pl.col("delta_p")
    out = (
        lf.group_by("stage", "polarity")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            dp.mean().alias("mean_delta_p"),
            pl.col("abs_delta_p").mean().alias("mean_abs_delta_p"),
            *[dp.quantile(q, interpolation="linear").alias(_qname(q)) for q in quantiles],
            (pl.col("abs_delta_p") < small).mean().alias("share_small"),
            (dp >= small).mean().alias("share_increase"),
            (dp <= -small).mean().alias("share_decrease"),
        )
        .sort("stage", "polarity")
    )
    return collect(out)


def delta_p_histogram(
    *,
    tokens: pl.LazyFrame,
    updates: pl.LazyFrame,
    samples: pl.LazyFrame,
    boundary=None,
    bins_per_decade: int = 2,
    min_exp: int = -8,
) -> pl.DataFrame:
    """Log-scale histogram of |Δp|, split by sign, polarity and stage (PAPER §2.1 D, Fig. 3a).

    Bin ``k = floor(bins_per_decade·log10|Δp|)`` clipped to ``[min_exp·bins_per_decade, −1]``, so the bins are
    ``[10^(k/b), 10^((k+1)/b))``; the lowest bin also holds every smaller nonzero |Δp| and the top bin
    reaches 1.  Exact zeros get ``direction = "zero"`` and ``bin_low = bin_high = 0``.

    Columns: ``stage``, ``polarity``, ``direction`` ("increase" | "decrease" | "zero"), ``bin_low``,
    ``bin_high``, ``count``, ``share`` (of the stage × polarity tokens).
    """
    b = int(bins_per_decade)
    if b < 1:
        raise UserError(f"bins_per_decade must be ≥ 1, got {bins_per_decade}")
    lf = add_stage(token_updates(tokens=tokens, updates=updates, samples=samples), boundary)
    k = (pl.col("abs_delta_p").log10() * b).floor().clip(min_exp * b, -1).cast(pl.Int64)
    direction = (
        pl.when(pl.col("delta_p") > 0).then(pl.lit("increase"))
        .when(pl.col("delta_p") < 0).then(pl.lit("decrease"))
        .otherwise(pl.lit("zero"))
    )
    out = (
        lf.with_columns(direction.alias("direction"))
        .with_columns(pl.when(pl.col("direction") == "zero").then(None).otherwise(k).alias("_k"))
        .group_by("stage", "polarity", "direction", "_k")
        .agg(pl.len().cast(pl.Int64).alias("count"))
    )
    df = collect(out)
    return (
        df.with_columns(
            pl.when(pl.col("_k").is_null()).then(0.0).otherwise(10.0 ** (pl.col("_k") / b)).alias("bin_low"),
            pl.when(pl.col("_k").is_null()).then(0.0).otherwise(10.0 ** ((pl.col("_k") + 1) / b)).alias("bin_high"),
            (pl.col("count") / pl.col("count").sum().over("stage", "polarity")).alias("share"),
        )
        .sort("stage", "polarity", "direction", "_k", nulls_last=False)
        .select("stage", "polarity", "direction", "bin_low", "bin_high", "count", "share")
    )


def entropy_bin_edges(lf: pl.LazyFrame, n_bins: int) -> list[float]:
    """Quantile edges of ``entropy`` over the rows of ``lf``: ``n_bins + 1`` values, min to max (one pass)."""
    if n_bins < 1:
        raise UserError(f"n_bins must be ≥ 1, got {n_bins}")
    qs = [i / n_bins for i in range(n_bins + 1)]
    row = collect(lf.select([pl.col("entropy").cast(pl.Float64).quantile(q, interpolation="linear").alias(f"e{i}") for i, q in enumerate(qs)]))
    return [float(x) if x is not None else math.nan for x in row.row(0)]


def update_by_entropy_bin(
    *,
    tokens: pl.LazyFrame,
    updates: pl.LazyFrame | None = None,
    n_bins: int = 10,
    top_frac: float = 0.01,
    boundary=None,
    stage: str | None = None,
) -> pl.DataFrame:
    """|Δp| and the logit-gradient norm by entropy quantile bin (PAPER §2.1 E, §7.3; Fig. 3b).

    Bins are ``n_bins`` quantiles of token entropy over the selected rows (``stage`` with ``boundary``);
    bin ``i`` holds ``edge_i < H ≤ edge_{i+1}`` (bin 0 also holds the minimum).  ``grad_norm`` =
    sqrt(1 − 2p + Σ_v p_v²) needs ``tokens.sum_p2``.  Without ``updates`` only the entropy/gradient
    columns are produced.

    Columns: ``entropy_bin``, ``entropy_low``, ``entropy_high``, ``entropy_mean`` (nats), ``n``,
    ``mean_grad_norm``; with updates also ``mean_abs_delta_p``, ``share_significant`` (share of the bin's
    tokens in the per-step top-``top_frac`` |Δp|), ``share_of_significant`` (share of all significant tokens
    that fall in the bin) and ``share_abs_delta_p_mass`` (the bin's share of Σ|Δp|).
    """
    t = require(lazy(tokens, "tokens"), [*TOKEN_KEY, "entropy"], "tokens")
    if updates is not None:
        lf = token_updates(tokens=t, updates=updates)
    else:
        lf = t.with_columns(grad_norm_expr()) if "sum_p2" in t.collect_schema().names() else t
    lf = add_stage(lf, boundary, stage)
    edges = entropy_bin_edges(lf, n_bins)
    inner = edges[1:-1]
    bin_expr = pl.sum_horizontal([(pl.col("entropy") > e).cast(pl.Int64) for e in inner]) if inner else pl.lit(0, dtype=pl.Int64)
    lf = lf.with_columns(bin_expr.cast(pl.Int64).alias("entropy_bin"))
    aggs = [pl.len().cast(pl.Int64).alias("n"), pl.col("entropy").cast(pl.Float64).mean().alias("entropy_mean")]
    names = lf.collect_schema().names()
    aggs.append(pl.col("grad_norm").mean().alias("mean_grad_norm") if "grad_norm" in names else pl.lit(None, dtype=pl.Float64).alias("mean_grad_norm"))
    if updates is not None:
        lf = flag_top_fraction(lf, "abs_delta_p", top_frac, "significant")
        aggs += [
            pl.col("abs_delta_p").mean().alias("mean_abs_delta_p"),
            pl.col("significant").mean().alias("share_significant"),
            pl.col("significant").sum().alias("_n_sig"),
            pl.col("abs_delta_p").sum().alias("_mass"),
        ]
    df = collect(lf.group_by("entropy_bin").agg(aggs)).sort("entropy_bin")
    df = df.with_columns(
        pl.col("entropy_bin").map_elements(lambda i: edges[i], return_dtype=pl.Float64).alias("entropy_low"),
        pl.col("entropy_bin").map_elements(lambda i: edges[i + 1], return_dtype=pl.Float64).alias("entropy_high"),
    )
    cols = ["entropy_bin", "entropy_low", "entropy_high", "entropy_mean", "n", "mean_grad_norm"]
    if updates is not None:
        df = df.with_columns(
            (pl.col("_n_sig") / pl.col("_n_sig").sum()).alias("share_of_significant"),
            (pl.col("_mass") / pl.col("_mass").sum()).alias("share_abs_delta_p_mass"),
        )
        cols += ["mean_abs_delta_p", "share_significant", "share_of_significant", "share_abs_delta_p_mass"]
    return df.select(cols)


def significant_update_sets(
    *,
    tokens: pl.LazyFrame,
    updates: pl.LazyFrame,
    samples: pl.LazyFrame,
    top_frac: float = 0.01,
    tau: float | None = None,
    boundary=None,
    stage: str | None = None,
    level: float = 0.95,
) -> pl.DataFrame:
    """Entropy of significantly updated tokens vs all tokens (PAPER §1.7, §2.1 E).

    Sets: ``all``; ``top`` = per-step top-``top_frac`` |Δp|; ``reinforced`` = positive-sample tokens with
    Δp > τ; ``suppressed`` = negative-sample tokens with Δp < −τ.  With ``tau=None`` τ is the per-step
    top-``top_frac`` |Δp| threshold (so reinforced ∪ suppressed ⊆ top).

    Columns: ``set``, ``n``, ``share`` (n / n_all), ``entropy_mean``, ``entropy_median`` (nats),
    ``mean_abs_delta_p``, ``diff_vs_rest`` (entropy_mean of the set − that of the other tokens), ``ci_low``,
    ``ci_high`` (Welch normal CI from moments, :func:`~entropy_lens.analysis.stats.diff_means_from_moments`).
    """
    lf = add_stage(token_updates(tokens=tokens, updates=updates, samples=samples), boundary, stage)
    lf = flag_top_fraction(lf, "abs_delta_p", top_frac, "top")
    if tau is None:
        big_up = pl.col("top") & (pl.col("delta_p") > 0)
        big_down = pl.col("top") & (pl.col("delta_p") < 0)
    else:
        big_up, big_down = pl.col("delta_p") > tau, pl.col("delta_p") < -tau
    conds = {
        "all": pl.col("step").is_not_null(),
        "top": pl.col("top"),
        "reinforced": (pl.col("polarity") == "positive") & big_up,
        "suppressed": (pl.col("polarity") == "negative") & big_down,
    }
    h = pl.col("entropy").cast(pl.Float64)
    aggs = []
    for name, c in conds.items():
        aggs += [
            c.sum().cast(pl.Int64).alias(f"{name}:n"),
            h.filter(c).mean().alias(f"{name}:mean"),
            h.filter(c).var().alias(f"{name}:var"),
            h.filter(c).median().alias(f"{name}:median"),
            pl.col("abs_delta_p").filter(c).mean().alias(f"{name}:dp"),
            h.filter(~c).mean().alias(f"{name}:rmean"),
            h.filter(~c).var().alias(f"{name}:rvar"),
        ]
    r = collect(lf.select(aggs)).row(0, named=True)
    n_all = r["all:n"] or 0
    rows = []
    for name in conds:
        n = r[f"{name}:n"] or 0
        e = diff_means_from_moments(
            r[f"{name}:mean"] if n else math.nan, r[f"{name}:var"] or 0.0, n,
            r[f"{name}:rmean"] if n_all - n else math.nan, r[f"{name}:rvar"] or 0.0, n_all - n, level,
        )
        rows.append(dict(set=name, n=n, share=n / n_all if n_all else math.nan, entropy_mean=r[f"{name}:mean"],
                         entropy_median=r[f"{name}:median"], mean_abs_delta_p=r[f"{name}:dp"],
                         diff_vs_rest=e.estimate if name != "all" else None,
                         ci_low=e.ci_low if name != "all" else None, ci_high=e.ci_high if name != "all" else None))
    schema = dict(set=pl.Utf8, n=pl.Int64, share=pl.Float64, entropy_mean=pl.Float64, entropy_median=pl.Float64,
                  mean_abs_delta_p=pl.Float64, diff_vs_rest=pl.Float64, ci_low=pl.Float64, ci_high=pl.Float64)
    return pl.DataFrame(rows, schema=schema)
