"""Token-level analysis: entropy and updates by relative position (PAPER §1.5, §2.3 J; Fig. 5a).

``rel_position = position / length ∈ [0, 1)`` (PAPER §1.5).  Bin ``b = floor(rel_position·n_bins)``
(clipped to n_bins − 1), so bin b covers ``[b/n_bins, (b+1)/n_bins)``.  Finding to reproduce: a U-shaped
entropy curve, high at the beginning and at the end of responses.
"""

from __future__ import annotations

import polars as pl

from entropy_lens.analysis._common import (
    SAMPLE_KEY,
    add_stage,
    collect,
    flag_top_fraction,
    lazy,
    require,
    with_polarity,
)
from entropy_lens.analysis.stats import bootstrap_ci
from entropy_lens.analysis.updates import token_updates
from entropy_lens.errors import UserError


# rel_position is Float32: 14/20 is stored as 0.69999999 and would fall into the bin below 0.7.  True values
# t/L sit at least 1/L from a bin edge, so nudging by 1e-6 restores exact binning for any L < 10^6.
REL_EPS = 1e-6


def _rel() -> pl.Expr:
    return pl.col("rel_position").cast(pl.Float64) + REL_EPS


def _bin_expr(n_bins: int) -> pl.Expr:
    if n_bins < 1:
        raise UserError(f"n_bins must be ≥ 1, got {n_bins}")
    return (_rel() * n_bins).floor().clip(0, n_bins - 1).cast(pl.Int64).alias("pos_bin")


def _bin_bounds(n_bins: int) -> list[pl.Expr]:
    return [
        (pl.col("pos_bin") / n_bins).alias("rel_low"),
        ((pl.col("pos_bin") + 1) / n_bins).alias("rel_high"),
        ((pl.col("pos_bin") + 0.5) / n_bins).alias("rel_mid"),
    ]


def entropy_by_position(
    *,
    tokens: pl.LazyFrame,
    samples: pl.LazyFrame | None = None,
    n_bins: int = 20,
    boundary=None,
    stage: str | None = None,
) -> pl.DataFrame:
    """Mean token entropy per relative-position bin, overall and by polarity (PAPER §2.3 J; U-curve).

    Columns: ``polarity`` ("all", and with ``samples`` also "positive" / "negative"), ``pos_bin``,
    ``rel_low``, ``rel_high``, ``rel_mid``, ``entropy_mean`` (nats), ``n`` (tokens).
    """
    t = require(lazy(tokens, "tokens"), [*SAMPLE_KEY, "rel_position", "entropy"], "tokens")
    lf = add_stage(t.select(*SAMPLE_KEY, "rel_position", "entropy"), boundary, stage).with_columns(_bin_expr(n_bins))
    agg = [pl.col("entropy").cast(pl.Float64).mean().alias("entropy_mean"), pl.len().cast(pl.Int64).alias("n")]
    frames = [collect(lf.group_by("pos_bin").agg(agg)).with_columns(pl.lit("all").alias("polarity"))]
    if samples is not None:
        frames.append(collect(with_polarity(lf, lazy(samples, "samples")).group_by("polarity", "pos_bin").agg(agg)))
    order = {"all": 0, "positive": 1, "negative": 2}
    df = pl.concat([f.select("polarity", "pos_bin", "entropy_mean", "n") for f in frames])
    return (
        df.with_columns(*_bin_bounds(n_bins), pl.col("polarity").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
        .sort("_o", "pos_bin")
        .select("polarity", "pos_bin", "rel_low", "rel_high", "rel_mid", "entropy_mean", "n")
    )


def update_by_position(
    *,
    tokens: pl.LazyFrame,
    updates: pl.LazyFrame,
    n_bins: int = 20,
    top_frac: float = 0.01,
    boundary=None,
    stage: str | None = None,
) -> pl.DataFrame:
    """|Δp| and significant-update share per relative-position bin (PAPER §7.3 position-bin aggregates).

    Columns: ``pos_bin``, ``rel_low``, ``rel_high``, ``rel_mid``, ``n``, ``entropy_mean``,
    ``mean_abs_delta_p``, ``share_significant`` (share of the bin's tokens in the per-step top-``top_frac``
    |Δp|), ``share_of_significant`` (the bin's share of all significant tokens).
    """
    lf = add_stage(token_updates(tokens=tokens, updates=updates), boundary, stage).with_columns(_bin_expr(n_bins))
    lf = flag_top_fraction(lf, "abs_delta_p", top_frac, "significant")
    df = collect(
        lf.group_by("pos_bin").agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("entropy").cast(pl.Float64).mean().alias("entropy_mean"),
            pl.col("abs_delta_p").mean().alias("mean_abs_delta_p"),
            pl.col("significant").mean().alias("share_significant"),
            pl.col("significant").sum().alias("_sig"),
        )
    )
    return (
        df.with_columns(*_bin_bounds(n_bins), (pl.col("_sig") / pl.col("_sig").sum()).alias("share_of_significant"))
        .sort("pos_bin")
        .select("pos_bin", "rel_low", "rel_high", "rel_mid", "n", "entropy_mean", "mean_abs_delta_p",
                "share_significant", "share_of_significant")
    )


def u_shape_summary(
    *,
    tokens: pl.LazyFrame,
    samples: pl.LazyFrame | None = None,
    edge: float = 0.1,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    boundary=None,
    stage: str | None = None,
) -> pl.DataFrame:
    """Is the entropy-vs-position curve U-shaped?  Ends vs middle, with bootstrap CIs over responses.

    Regions by the token's centre ``c = (position + 0.5)/L`` (L = the response's number of token rows, so
    short responses keep both ends): ``start`` = c < ``edge``, ``end`` = c ≥ 1 − ``edge``, ``middle`` = the rest.
    For each response i with tokens in all three regions, the region means H̄_start,i, H̄_mid,i, H̄_end,i;
    contrasts ``start-middle`` = H̄_start − H̄_mid, ``end-middle`` = H̄_end − H̄_mid and ``ends-middle`` =
    (H̄_start + H̄_end)/2 − H̄_mid, averaged over responses with a percentile bootstrap CI (resampling
    responses, the independent unit).  A U-shape has ``start-middle`` > 0 and ``end-middle`` > 0.

    Columns: ``polarity`` ("all", plus "positive"/"negative" with ``samples``), ``contrast``, ``estimate``
    (nats), ``ci_low``, ``ci_high``, ``n`` (responses).
    """
    if not 0.0 < edge < 0.5:
        raise UserError(f"edge must be in (0, 0.5), got {edge}")
    t = require(lazy(tokens, "tokens"), [*SAMPLE_KEY, "position", "entropy"], "tokens")
    lf = add_stage(t.select(*SAMPLE_KEY, "position", "entropy"), boundary, stage)
    # token centre (t + 0.5)/L, L = the response's token count: a 8-token response still has an end region
    r = (pl.col("position").cast(pl.Float64) + 0.5) / pl.len()
    h = pl.col("entropy").cast(pl.Float64)
    per = lf.group_by(*SAMPLE_KEY).agg(
        h.filter(r < edge).mean().alias("h_start"),
        h.filter((r >= edge) & (r < 1.0 - edge)).mean().alias("h_mid"),
        h.filter(r >= 1.0 - edge).mean().alias("h_end"),
    )
    if samples is not None:
        per = with_polarity(per, lazy(samples, "samples"))
    else:
        per = per.with_columns(pl.lit("all").alias("polarity"))
    df = collect(per.drop_nulls(["h_start", "h_mid", "h_end"]).sort(SAMPLE_KEY))
    groups = [("all", df)]
    if samples is not None:
        groups += [(p, df.filter(pl.col("polarity") == p)) for p in ("positive", "negative")]
    rows = []
    for pol, d in groups:
        contrasts = {
            "start-middle": (d["h_start"] - d["h_mid"]).to_numpy(),
            "end-middle": (d["h_end"] - d["h_mid"]).to_numpy(),
            "ends-middle": ((d["h_start"] + d["h_end"]) / 2 - d["h_mid"]).to_numpy(),
        }
        for name, v in contrasts.items():
            e = bootstrap_ci(v, n_boot=n_boot, seed=seed, level=level)
            rows.append(dict(polarity=pol, contrast=name, estimate=e.estimate, ci_low=e.ci_low, ci_high=e.ci_high, n=e.n))
    schema = dict(polarity=pl.Utf8, contrast=pl.Utf8, estimate=pl.Float64, ci_low=pl.Float64, ci_high=pl.Float64, n=pl.Int64)
    return pl.DataFrame(rows, schema=schema)
