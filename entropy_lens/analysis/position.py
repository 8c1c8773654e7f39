"""Token-level analysis: entropy and updates by relative position (paper-notes §1.5, §2.3 J; Fig. 5a).

``rel_position = position / length ∈ [0, 1)`` (paper-notes §1.5).  Bin ``b = floor(rel_position·n_bins)``
(clipped to n_bins − 1), so bin b covers ``[b/n_bins, (b+1)/n_bins)``.  Finding to reproduce: a U-shaped
entropy curve, high at the beginning and at the end of responses.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from entropy_lens.analysis.frames import SAMPLE_KEY, add_stage, collect_streaming, lazy, require, source, with_polarity
from entropy_lens.analysis.stats import bootstrap_cis
from entropy_lens.analysis.stepwise import (
    check_top_frac,
    merge_sums,
    pair_tokens,
    prefetch,
    response_starts,
    scan_steps,
    select_steps,
)
from entropy_lens.errors import UserError
from entropy_lens.store import Partitions, step_tables


# rel_position is Float32: 14/20 is stored as 0.69999999 and would fall into the bin below 0.7.  True values
# t/L sit at least 1/L from a bin edge, so nudging by 1e-6 restores exact binning for any L < 10^6.
REL_EPS = 1e-6


def _nudged_rel_position() -> pl.Expr:
    return pl.col("rel_position").cast(pl.Float64) + REL_EPS


def position_bin_expr(n_bins: int) -> pl.Expr:
    """``pos_bin`` = floor((rel_position + 1e-6) · n_bins), clipped to [0, n_bins − 1] (Int64)."""
    if n_bins < 1:
        raise UserError(f"n_bins must be ≥ 1, got {n_bins}")
    return (_nudged_rel_position() * n_bins).floor().clip(0, n_bins - 1).cast(pl.Int64).alias("pos_bin")


def _bin_bounds(n_bins: int) -> list[pl.Expr]:
    return [
        (pl.col("pos_bin") / n_bins).alias("rel_low"),
        ((pl.col("pos_bin") + 1) / n_bins).alias("rel_high"),
        ((pl.col("pos_bin") + 0.5) / n_bins).alias("rel_mid"),
    ]


def entropy_by_position(
    *,
    tokens: pl.LazyFrame | Partitions,
    samples: pl.LazyFrame | None = None,
    n_bins: int = 20,
    boundary=None,
    stage: str | None = None,
) -> pl.DataFrame:
    """Mean token entropy per relative-position bin, overall and by polarity (paper-notes §2.3 J; U-curve).

    Columns: ``polarity`` ("all", and with ``samples`` also "positive" / "negative"), ``pos_bin``,
    ``rel_low``, ``rel_high``, ``rel_mid``, ``entropy_mean`` (nats), ``n`` (tokens).
    """
    t = require(lazy(tokens, "tokens"), [*SAMPLE_KEY, "rel_position", "entropy"], "tokens")
    lf = add_stage(t.select(*SAMPLE_KEY, "rel_position", "entropy"), boundary, stage).with_columns(position_bin_expr(n_bins))
    agg = [pl.col("entropy").cast(pl.Float64).mean().alias("entropy_mean"), pl.len().cast(pl.Int64).alias("n")]
    frames = [collect_streaming(lf.group_by("pos_bin").agg(agg)).with_columns(pl.lit("all").alias("polarity"))]
    if samples is not None:
        frames.append(collect_streaming(with_polarity(lf, lazy(samples, "samples")).group_by("polarity", "pos_bin").agg(agg)))
    order = {"all": 0, "positive": 1, "negative": 2}
    df = pl.concat([f.select("polarity", "pos_bin", "entropy_mean", "n") for f in frames])
    return (
        df.with_columns(*_bin_bounds(n_bins), pl.col("polarity").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
        .sort("_o", "pos_bin")
        .select("polarity", "pos_bin", "rel_low", "rel_high", "rel_mid", "entropy_mean", "n")
    )


def update_by_position(
    *,
    tokens: pl.LazyFrame | Partitions,
    updates: pl.LazyFrame | Partitions | None = None,
    n_bins: int = 20,
    top_frac: float = 0.01,
    boundary=None,
    stage: str | None = None,
) -> pl.DataFrame:
    """|Δp| and significant-update share per relative-position bin (paper-notes §7.3 position-bin aggregates).

    Columns: ``pos_bin``, ``rel_low``, ``rel_high``, ``rel_mid``, ``n``, ``entropy_mean``,
    ``mean_abs_delta_p``, ``share_significant`` (share of the bin's tokens in the per-step top-``top_frac``
    |Δp|), ``share_of_significant`` (the bin's share of all significant tokens).
    """
    check_top_frac(top_frac)
    bin_expr = position_bin_expr(n_bins)
    pairs = pair_tokens(tokens, updates, ["rel_position", "entropy"])
    parts = [
        df.with_columns(bin_expr)
        .group_by("pos_bin")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("entropy").cast(pl.Float64).sum().alias("_se"), pl.col("entropy").count().cast(pl.Int64).alias("_ce"),
            pl.col("abs_delta_p").sum().alias("_sa"), pl.col("abs_delta_p").count().cast(pl.Int64).alias("_ca"),
            pl.col("top").sum().cast(pl.Int64).alias("_sig"),
        )
        for _, _, df in scan_steps(pairs, ["rel_position", "entropy", "logprob"], boundary=boundary, stage=stage,
                                   top_frac=top_frac)
    ]
    schema = {"pos_bin": pl.Int64, "n": pl.Int64, "_se": pl.Float64, "_ce": pl.Int64, "_sa": pl.Float64, "_ca": pl.Int64,
              "_sig": pl.Int64}
    df = merge_sums(parts, ["pos_bin"], schema).with_columns(
        pl.when(pl.col("_ce") > 0).then(pl.col("_se") / pl.col("_ce")).alias("entropy_mean"),
        pl.when(pl.col("_ca") > 0).then(pl.col("_sa") / pl.col("_ca")).alias("mean_abs_delta_p"),
        (pl.col("_sig") / pl.col("n")).alias("share_significant"),
    )
    return (
        df.with_columns(*_bin_bounds(n_bins), (pl.col("_sig") / pl.col("_sig").sum()).alias("share_of_significant"))
        .sort("pos_bin")
        .select("pos_bin", "rel_low", "rel_high", "rel_mid", "n", "entropy_mean", "mean_abs_delta_p",
                "share_significant", "share_of_significant")
    )


def u_shape_summary(
    *,
    tokens: pl.LazyFrame | Partitions,
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
    require(lazy(tokens, "tokens"), [*SAMPLE_KEY, "position", "entropy"], "tokens")
    (by_step,) = step_tables(source(tokens, "tokens"))
    frames = []
    sel = [s for s, _ in select_steps(by_step.steps, boundary, stage)]
    load = lambda step: by_step.scan(step).select(*SAMPLE_KEY, "position", "entropy").collect()  # noqa: E731
    for _, df in prefetch(sel, load):  # one step partition in memory at a time, the next one read meanwhile
        frames.append(_region_means(df, edge))
    schema = {**{k: pl.Int32 for k in SAMPLE_KEY}, "h_start": pl.Float64, "h_mid": pl.Float64, "h_end": pl.Float64}
    per = pl.concat([f.select(pl.col(k).cast(v) for k, v in schema.items()) for f in frames]) if frames else pl.DataFrame(schema=schema)
    per = per.lazy()
    if samples is not None:
        per = with_polarity(per, lazy(samples, "samples"))
    else:
        per = per.with_columns(pl.lit("all").alias("polarity"))
    df = collect_streaming(per.drop_nulls(["h_start", "h_mid", "h_end"]).sort(SAMPLE_KEY))
    groups = [("all", df)]
    if samples is not None:
        groups += [(p, df.filter(pl.col("polarity") == p)) for p in ("positive", "negative")]
    def boot(d: pl.DataFrame) -> list:
        contrasts = {
            "start-middle": (d["h_start"] - d["h_mid"]).to_numpy(),
            "end-middle": (d["h_end"] - d["h_mid"]).to_numpy(),
            "ends-middle": ((d["h_start"] + d["h_end"]) / 2 - d["h_mid"]).to_numpy(),
        }
        # the three contrasts of a group resample the same responses: one draw of indices serves all three
        return list(zip(contrasts, bootstrap_cis(list(contrasts.values()), n_boot=n_boot, seed=seed, level=level)))

    with ThreadPoolExecutor(max_workers=2) as pool:  # numpy releases the GIL in the draws and gathers
        results = list(pool.map(boot, [d for _, d in groups]))
    rows = []
    for (pol, _), res in zip(groups, results):
        for name, e in res:
            rows.append(dict(polarity=pol, contrast=name, estimate=e.estimate, ci_low=e.ci_low, ci_high=e.ci_high, n=e.n))
    schema = dict(polarity=pl.Utf8, contrast=pl.Utf8, estimate=pl.Float64, ci_low=pl.Float64, ci_high=pl.Float64, n=pl.Int64)
    return pl.DataFrame(rows, schema=schema)


def _region_means(df: pl.DataFrame, edge: float) -> pl.DataFrame:
    """Per response of one step: mean entropy of its start / middle / end region (see :func:`u_shape_summary`).

    Store partitions are sorted with positions 0..L−1 in each response: then the regions are three runs of
    rows per response, cut where ``(t + 0.5)/L`` crosses ``edge`` and ``1 − edge`` (found per response,
    with the same floating-point comparisons), and summed with ``np.add.reduceat``.  Any other layout (or
    null entropies) takes the general group-by.
    """
    n = df.height
    if n == 0:
        return df.select(*SAMPLE_KEY).with_columns(pl.lit(None, pl.Float64).alias(c) for c in ("h_start", "h_mid", "h_end"))
    pid, sid = df["prompt_id"].to_numpy(), df["sample_id"].to_numpy()
    pos = df["position"].to_numpy()
    new, starts = response_starts(pid, sid)
    ps, ss = pid[starts], sid[starts]
    fast = (
        df["entropy"].null_count() == 0
        and df["step"].n_unique() == 1
        and bool(np.all((ps[1:] > ps[:-1]) | ((ps[1:] == ps[:-1]) & (ss[1:] > ss[:-1]))))  # each response one run
        and bool(np.all(pos[starts] == 0))
        and bool(np.all(np.diff(pos)[~new[1:]] == 1))  # positions 0, 1, ..., L−1 within a response
    )
    if not fast:
        r = (pl.col("position").cast(pl.Float64) + 0.5) / pl.len()
        h = pl.col("entropy").cast(pl.Float64)
        return df.group_by(*SAMPLE_KEY).agg(
            h.filter(r < edge).mean().alias("h_start"),
            h.filter((r >= edge) & (r < 1.0 - edge)).mean().alias("h_mid"),
            h.filter(r >= 1.0 - edge).mean().alias("h_end"),
        )
    length = np.diff(np.append(starts, n)).astype(np.int64)
    inv = 1.0 / length.astype(np.float64)  # polars divides a column by a scalar as a product with its inverse

    def cut(bound: float) -> np.ndarray:
        """Per response, the number of positions t (from 0) with (t + 0.5)·(1/L) < bound: it grows with t."""
        c = np.clip(np.ceil(bound * length - 0.5), 0, length).astype(np.int64)
        for _ in range(8):  # fix the rounding of the first guess with the exact comparison
            down = (c > 0) & (((c - 1) + 0.5) * inv >= bound)
            up = (c < length) & ((c + 0.5) * inv < bound)
            if not (down.any() or up.any()):
                break
            c = c - down + up
        return c

    a, b = cut(edge), cut(1.0 - edge)
    h = np.zeros(n + 1)  # one trailing 0 so that a region may end at the last row (index n)
    h[:n] = df["entropy"].to_numpy()
    idx = np.stack([starts, starts + a, starts + b], axis=1).ravel()
    sums = np.add.reduceat(h, idx).reshape(-1, 3)  # empty regions give junk here, masked by their count
    counts = np.stack([a, b - a, length - b], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return pl.DataFrame({
        "step": np.full(starts.size, df["step"][0]), "prompt_id": ps, "sample_id": ss,
        "h_start": means[:, 0], "h_mid": means[:, 1], "h_end": means[:, 2],
    }).with_columns(pl.col("h_start", "h_mid", "h_end").fill_nan(None))
