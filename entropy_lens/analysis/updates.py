"""Which tokens change probability between consecutive checkpoints (paper-notes §1.7, §2.1 D–E; Fig. 3a–b).

``updates`` holds, for every response token of step k, its log-prob under the next checkpoint. Joined
with ``tokens``: ``Δlogp = logprob_next − logprob`` and ``Δp = exp(logprob_next) − exp(logprob)``.
Findings to reproduce: >99% of tokens barely move; the big moves are increases in positive and decreases in
negative samples, on high-entropy, high-gradient tokens.

"Significant" tokens are the top-``top_frac`` |Δp| **per step** (paper-notes §1.7 suggests x ∈ {0.1%, 1%}).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from entropy_lens.analysis.frames import (
    SAMPLE_KEY,
    add_stage,
    collect_streaming,
    grad_norm_expr,
    has_columns,
    lazy,
    polarity_expr,
    require,
    source,
    TOKEN_KEY,
    with_polarity,
    with_updates,
)
from entropy_lens.analysis.stepwise import (
    SamplesByStep,
    check_top_frac,
    combine_moments,
    merge_sums,
    pair_tokens,
    prefetch,
    quantiles_linear,
    scan_steps,
    select_steps,
)
from entropy_lens.analysis.stats import diff_means_from_moments
from entropy_lens.errors import UserError
from entropy_lens.store import Partitions


def token_updates(
    *, tokens: pl.LazyFrame | Partitions, updates: pl.LazyFrame | Partitions | None = None,
    samples: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Lazy join of tokens × updates (× samples for polarity); the building block of this module.

    Adds ``p``, ``p_next``, ``delta_logp``, ``delta_p``, ``abs_delta_p`` (paper-notes §1.7), ``grad_norm`` =
    sqrt(1 − 2p + Σp²) when ``sum_p2`` is present, and ``correct``/``polarity`` when ``samples`` is given.
    Returns a LazyFrame (not collected): compose further queries on it.  The tokens × updates pairing is
    step by step, without a hash join where the store's partitions are aligned (:func:`with_updates`);
    ``tokens`` that already carry ``logprob_next`` (``Store.tokens_with_updates()``) need no ``updates``.
    """
    lf = with_updates(source(tokens, "tokens"), source(updates, "updates") if updates is not None else None)
    if "sum_p2" in lf.collect_schema().names():
        lf = lf.with_columns(grad_norm_expr())
    if samples is not None:
        lf = with_polarity(lf, lazy(samples, "samples"))
    return lf


def _qname(q: float) -> str:
    return "q" + f"{q * 100:g}".replace(".", "_")


def delta_p_distribution(
    *,
    tokens: pl.LazyFrame | Partitions,
    updates: pl.LazyFrame | Partitions | None = None,
    samples: pl.LazyFrame,
    boundary=None,
    quantiles=(0.001, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999),
    small: float = 1e-3,
) -> pl.DataFrame:
    """Δp summary for positive vs negative samples, by stage (paper-notes §2.1 D, §7.3).

    Columns: ``stage`` ("rising"/"plateau", "all" without a boundary), ``polarity``, ``n`` (tokens),
    ``mean_delta_p``, ``mean_abs_delta_p``, one column per quantile of Δp named ``q{100·q}`` (``q0_1`` for
    0.001; linear interpolation), ``share_small`` (|Δp| < ``small``), ``share_increase`` (Δp ≥ ``small``),
    ``share_decrease`` (Δp ≤ −``small``).

    Goes one step partition at a time; the quantiles are exact (the Δp values of a stage × polarity group
    are kept, 8 bytes a token, and sorted once at the end, in place; the groups sort in parallel threads, at
    most as many as polars' thread pool has).
    """
    pairs = pair_tokens(tokens, updates)
    smp = SamplesByStep(lazy(samples, "samples"), ["correct"])
    acc: dict[tuple[str, str], dict] = {}
    values: dict[tuple[str, str], list] = {}
    for step, stage, df in scan_steps(pairs, [*SAMPLE_KEY, "logprob"], boundary=boundary, samples=smp):
        pos, x = df["correct"].fill_null(False).to_numpy(), df["delta_p"].to_numpy()  # null correct: "negative"
        nulls = df["delta_p"].null_count()
        for pol, mask in (("positive", pos), ("negative", ~pos)):
            xs = x[mask]
            n = int(xs.size)
            if n == 0:
                continue
            if nulls:  # null Δp (null log-probs) are no values: polars' mean / quantile skip them
                xs = xs[~np.isnan(xs)]
            inc, dec = int(np.count_nonzero(xs >= small)), int(np.count_nonzero(xs <= -small))
            r = acc.setdefault((stage, pol), dict(n=0, s=0.0, sa=0.0, c=0, small=0, inc=0, dec=0))
            r["n"] += n
            r["s"] += float(xs.sum())
            r["sa"] += float(np.abs(xs).sum())
            r["c"] += int(xs.size)
            r["small"] += int(xs.size) - inc - dec - int(np.count_nonzero(np.isnan(xs)))  # |Δp| < small
            r["inc"] += inc
            r["dec"] += dec
            values.setdefault((stage, pol), []).append(xs)
    schema = {"stage": pl.Utf8, "polarity": pl.Utf8, "n": pl.Int64, "mean_delta_p": pl.Float64,
              "mean_abs_delta_p": pl.Float64, **{_qname(q): pl.Float64 for q in quantiles},
              "share_small": pl.Float64, "share_increase": pl.Float64, "share_decrease": pl.Float64}

    def group_quantiles(key):  # the group's values, concatenated (a copy we own) and sorted in place
        arrays = values.pop(key)
        x = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        del arrays
        return quantiles_linear(x, quantiles, overwrite_input=True)

    keys = sorted(acc)
    with ThreadPoolExecutor(max_workers=max(1, min(len(keys), pl.thread_pool_size()))) as pool:
        qvs = list(pool.map(group_quantiles, keys))  # numpy's sort releases the GIL: groups sort side by side
    rows = []
    for key, qv in zip(keys, qvs):
        r = acc[key]
        c = r["c"]
        rows.append({
            "stage": key[0], "polarity": key[1], "n": r["n"],
            "mean_delta_p": r["s"] / c if c else None, "mean_abs_delta_p": r["sa"] / c if c else None,
            **{_qname(q): v for q, v in zip(quantiles, qv)},
            "share_small": r["small"] / c if c else None, "share_increase": r["inc"] / c if c else None,
            "share_decrease": r["dec"] / c if c else None,
        })
    return pl.DataFrame(rows, schema=schema)


def delta_p_histogram(
    *,
    tokens: pl.LazyFrame | Partitions,
    updates: pl.LazyFrame | Partitions | None = None,
    samples: pl.LazyFrame,
    boundary=None,
    bins_per_decade: int = 2,
    min_exp: int = -8,
) -> pl.DataFrame:
    """Log-scale histogram of |Δp|, split by sign, polarity and stage (paper-notes §2.1 D, Fig. 3a).

    Bin ``k = floor(bins_per_decade·log10|Δp|)`` clipped to ``[min_exp·bins_per_decade, −1]``, so the bins are
    ``[10^(k/b), 10^((k+1)/b))``; the lowest bin also holds every smaller nonzero |Δp| and the top bin
    reaches 1.  Exact zeros get ``direction = "zero"`` and ``bin_low = bin_high = 0``.

    Columns: ``stage``, ``polarity``, ``direction`` ("increase" | "decrease" | "zero"), ``bin_low``,
    ``bin_high``, ``count``, ``share`` (of the stage × polarity tokens).
    """
    b = int(bins_per_decade)
    if b < 1:
        raise UserError(f"bins_per_decade must be ≥ 1, got {bins_per_decade}")
    pairs = pair_tokens(tokens, updates)
    smp = SamplesByStep(lazy(samples, "samples"), ["correct"])
    lo = min(min_exp * b, -1)
    k = (pl.col("abs_delta_p").log10() * b).floor().clip(min_exp * b, -1).cast(pl.Int64)
    width = -lo + 1  # k in [lo, −1], and one slot for "no bin" (zeros)
    directions = ("zero", "increase", "decrease")
    counts: dict[str, np.ndarray] = {}
    for step, stage, df in scan_steps(pairs, [*SAMPLE_KEY, "logprob"], boundary=boundary, samples=smp):
        pos = (df.select(polarity_expr())["polarity"].to_numpy() == "positive") if df["correct"].null_count() else \
            df["correct"].to_numpy()
        x = df["delta_p"].to_numpy()
        direction = (x > 0).astype(np.int64) + 2 * (x < 0)  # 0 zero (also NaN/null), 1 increase, 2 decrease
        kk = df.select(k.fill_null(lo - 1))["abs_delta_p"].to_numpy() - (lo - 1)  # 1..width−1 when binned
        kk = np.where(direction == 0, 0, kk)
        code = (pos.astype(np.int64) * 3 + direction) * width + kk
        c = np.bincount(code, minlength=2 * 3 * width)
        counts[stage] = counts[stage] + c if stage in counts else c
    rows = []
    for stage, c in counts.items():
        for i in np.flatnonzero(c):
            pol, rest = divmod(int(i), 3 * width)
            d, kk = divmod(rest, width)
            rows.append((stage, "positive" if pol else "negative", directions[d], None if kk == 0 else kk + lo - 1, int(c[i])))
    df = pl.DataFrame(rows, schema={"stage": pl.Utf8, "polarity": pl.Utf8, "direction": pl.Utf8, "_k": pl.Int64,
                                    "count": pl.Int64}, orient="row")
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
    row = collect_streaming(lf.select([pl.col("entropy").cast(pl.Float64).quantile(q, interpolation="linear").alias(f"e{i}") for i, q in enumerate(qs)]))
    return [float(x) if x is not None else math.nan for x in row.row(0)]


def _entropy_bin_expr(edges: list[float]) -> pl.Expr:
    inner = edges[1:-1]
    return (pl.sum_horizontal([(pl.col("entropy") > e).cast(pl.Int64) for e in inner]) if inner
            else pl.lit(0, dtype=pl.Int64)).cast(pl.Int64).alias("entropy_bin")


def _entropy_bins(h: pl.Series, edges: list[float]) -> pl.Series:
    """:func:`_entropy_bin_expr` evaluated in numpy: ``entropy_bin = #{inner edges e : e < h}``.

    polars compares a Float32 column with a float literal in Float32, so the edges are cast to the column's
    type; NaN / null entropies satisfy no comparison: bin 0 (the polars expression would order a NaN above
    every edge).  Up to 16 inner edges one vectorised comparison per edge (≈ 1 ns a row each); beyond that
    one binary search per row (the edges are sorted quantiles, so ``#{e : e < h}`` is a left
    ``searchsorted``; ≈ 20 ns a row).
    """
    inner = edges[1:-1]
    if not inner:
        return pl.Series("entropy_bin", np.zeros(h.len(), dtype=np.int64))
    if h.dtype not in (pl.Float32, pl.Float64) or any(math.isnan(e) for e in inner):
        return h.to_frame().select(_entropy_bin_expr(edges)).to_series()
    x = h.to_numpy()  # nulls become NaN
    e = np.asarray(inner, dtype=x.dtype)
    if e.size <= 16:
        k = np.zeros(x.size, dtype=np.uint8)
        for edge in e:
            k += x > edge
    else:
        k = np.searchsorted(e, x, side="left")
        k[np.isnan(x)] = 0
    return pl.Series("entropy_bin", k, dtype=pl.Int64)


def _edge_columns(df: pl.DataFrame, edges: list[float]) -> pl.DataFrame:
    return df.with_columns(
        pl.col("entropy_bin").map_elements(lambda i: edges[i], return_dtype=pl.Float64).alias("entropy_low"),
        pl.col("entropy_bin").map_elements(lambda i: edges[i + 1], return_dtype=pl.Float64).alias("entropy_high"),
    )


def update_by_entropy_bin(
    *,
    tokens: pl.LazyFrame | Partitions,
    updates: pl.LazyFrame | Partitions | None = None,
    n_bins: int = 10,
    top_frac: float = 0.01,
    boundary=None,
    stage: str | None = None,
) -> pl.DataFrame:
    """|Δp| and the logit-gradient norm by entropy quantile bin (paper-notes §2.1 E, §7.3; Fig. 3b).

    Bins are ``n_bins`` quantiles of token entropy over the selected rows (``stage`` with ``boundary``);
    bin ``i`` holds ``edge_i < H ≤ edge_{i+1}`` (bin 0 also holds the minimum).  ``grad_norm`` =
    sqrt(1 − 2p + Σ_v p_v²) needs ``tokens.sum_p2``.  Without ``updates`` (and without a ``logprob_next``
    column in ``tokens``) only the entropy/gradient columns are produced.

    Columns: ``entropy_bin``, ``entropy_low``, ``entropy_high``, ``entropy_mean`` (nats), ``n``,
    ``mean_grad_norm``; with updates also ``mean_abs_delta_p``, ``share_significant`` (share of the bin's
    tokens in the per-step top-``top_frac`` |Δp|), ``share_of_significant`` (share of all significant tokens
    that fall in the bin) and ``share_abs_delta_p_mass`` (the bin's share of Σ|Δp|).

    With updates: two passes over the selected step partitions, the first reading only ``entropy`` (exact
    quantile edges), the second the rest, one step in memory at a time.
    """
    t = require(lazy(tokens, "tokens"), [*TOKEN_KEY, "entropy"], "tokens")
    if n_bins < 1:
        raise UserError(f"n_bins must be ≥ 1, got {n_bins}")
    if updates is None and not has_columns(t, ["logprob_next"]):
        return _entropy_bins_tokens_only(t, n_bins, boundary, stage)
    check_top_frac(top_frac)
    pairs = pair_tokens(tokens, updates, ["entropy"])
    steps = [s for s, _ in select_steps(pairs.steps, boundary, stage)]
    edges = _entropy_edges(pairs, steps, n_bins)
    has_grad = has_columns(t, ["sum_p2"])
    cols = ["entropy", "logprob", *(["sum_p2"] if has_grad else [])]
    aggs = [
        pl.len().cast(pl.Int64).alias("n"),
        pl.col("entropy").cast(pl.Float64).sum().alias("_se"), pl.col("entropy").count().alias("_ce"),
        pl.col("abs_delta_p").sum().alias("_mass"), pl.col("abs_delta_p").count().alias("_ca"),
        pl.col("top").sum().cast(pl.Int64).alias("_n_sig"),
    ]
    schema = {"entropy_bin": pl.Int64, "n": pl.Int64, "_se": pl.Float64, "_ce": pl.UInt32, "_mass": pl.Float64,
              "_ca": pl.UInt32, "_n_sig": pl.Int64}
    if has_grad:
        aggs += [pl.col("grad_norm").sum().alias("_sg"), pl.col("grad_norm").count().alias("_cg")]
        schema |= {"_sg": pl.Float64, "_cg": pl.UInt32}
    parts = [df.with_columns(_entropy_bins(df["entropy"], edges), *([grad_norm_expr(pl.col("p"))] if has_grad else []))
             .group_by("entropy_bin").agg(aggs)
             for _, _, df in scan_steps(pairs, cols, boundary=boundary, stage=stage, top_frac=top_frac, keep_p=True)]
    df = merge_sums(parts, ["entropy_bin"], schema).sort("entropy_bin")
    mean = lambda s, c: pl.when(pl.col(c) > 0).then(pl.col(s) / pl.col(c)).otherwise(None)  # noqa: E731
    df = df.with_columns(
        mean("_se", "_ce").alias("entropy_mean"),
        (mean("_sg", "_cg") if has_grad else pl.lit(None, dtype=pl.Float64)).alias("mean_grad_norm"),
        mean("_mass", "_ca").alias("mean_abs_delta_p"),
        (pl.col("_n_sig") / pl.col("n")).alias("share_significant"),
        (pl.col("_n_sig") / pl.col("_n_sig").sum()).alias("share_of_significant"),
        (pl.col("_mass") / pl.col("_mass").sum()).alias("share_abs_delta_p_mass"),
    )
    return _edge_columns(df, edges).select(
        "entropy_bin", "entropy_low", "entropy_high", "entropy_mean", "n", "mean_grad_norm",
        "mean_abs_delta_p", "share_significant", "share_of_significant", "share_abs_delta_p_mass")


def _entropy_edges(pairs, steps: list[int], n_bins: int) -> list[float]:
    """``n_bins + 1`` exact linear quantiles of ``entropy`` over the rows of ``steps`` (their tokens that have
    updates), min to max: one pass reading only ``entropy``, one sort of the concatenated values."""
    read = lambda s: pairs.frame(s, ["entropy"], with_next=False)  # noqa: E731
    ent = [df["entropy"].drop_nulls().to_numpy() for _, df in prefetch(steps, read)]
    x = np.concatenate(ent) if ent else np.empty(0, dtype=np.float32)
    del ent
    qs = [i / n_bins for i in range(n_bins + 1)]
    return [float(v) if v is not None else math.nan for v in quantiles_linear(x, qs, overwrite_input=True)]


def _entropy_bins_tokens_only(t: pl.LazyFrame, n_bins: int, boundary, stage) -> pl.DataFrame:
    lf = t.with_columns(grad_norm_expr()) if "sum_p2" in t.collect_schema().names() else t
    lf = add_stage(lf, boundary, stage)
    edges = entropy_bin_edges(lf, n_bins)
    lf = lf.with_columns(_entropy_bin_expr(edges))
    aggs = [pl.len().cast(pl.Int64).alias("n"), pl.col("entropy").cast(pl.Float64).mean().alias("entropy_mean")]
    names = lf.collect_schema().names()
    aggs.append(pl.col("grad_norm").mean().alias("mean_grad_norm") if "grad_norm" in names else pl.lit(None, dtype=pl.Float64).alias("mean_grad_norm"))
    df = collect_streaming(lf.group_by("entropy_bin").agg(aggs)).sort("entropy_bin")
    return _edge_columns(df, edges).select("entropy_bin", "entropy_low", "entropy_high", "entropy_mean", "n", "mean_grad_norm")


def significant_update_sets(
    *,
    tokens: pl.LazyFrame | Partitions,
    updates: pl.LazyFrame | Partitions | None = None,
    samples: pl.LazyFrame,
    top_frac: float = 0.01,
    tau: float | None = None,
    boundary=None,
    stage: str | None = None,
    level: float = 0.95,
) -> pl.DataFrame:
    """Entropy of significantly updated tokens vs all tokens (paper-notes §1.7, §2.1 E).

    Sets: ``all``; ``top`` = per-step top-``top_frac`` |Δp|; ``reinforced`` = positive-sample tokens with
    Δp > τ; ``suppressed`` = negative-sample tokens with Δp < −τ.  With ``tau=None`` τ is the per-step
    top-``top_frac`` |Δp| threshold (so reinforced ∪ suppressed ⊆ top).

    Columns: ``set``, ``n``, ``share`` (n / n_all), ``entropy_mean``, ``entropy_median`` (nats),
    ``mean_abs_delta_p``, ``diff_vs_rest`` (entropy_mean of the set − that of the other tokens), ``ci_low``,
    ``ci_high`` (Welch normal CI from moments, :func:`~entropy_lens.analysis.stats.diff_means_from_moments`).

    One pass, one step partition in memory at a time: per step, moments of each combination of the three
    flags (merged exactly at the end) and the entropies for the exact medians (4 bytes a selected token).
    """
    check_top_frac(top_frac)
    pairs = pair_tokens(tokens, updates, ["entropy"])
    smp = SamplesByStep(lazy(samples, "samples"), ["correct"])
    if tau is None:
        big_up = pl.col("top") & (pl.col("delta_p") > 0)
        big_down = pl.col("top") & (pl.col("delta_p") < 0)
    else:
        big_up, big_down = pl.col("delta_p") > tau, pl.col("delta_p") < -tau
    flags = {  # polarity "positive" ⇔ correct (a null correct is "negative")
        "top": pl.col("top"),
        "reinforced": pl.col("correct") & big_up,
        "suppressed": ~pl.col("correct") & big_down,
    }
    bits = {name: 1 << i for i, name in enumerate(flags)}
    code = pl.sum_horizontal([c.fill_null(False).cast(pl.UInt8) * bits[n] for n, c in flags.items()]).cast(pl.UInt8)
    h = pl.col("entropy").cast(pl.Float64)
    combos, ent = [], {name: [] for name in ["all", *flags]}
    for _, _, df in scan_steps(pairs, [*SAMPLE_KEY, "entropy", "logprob"], boundary=boundary, stage=stage,
                               samples=smp, top_frac=top_frac):
        df = df.with_columns(pl.col("correct").fill_null(False)).with_columns(code.alias("_code"))
        combos.append(df.group_by("_code").agg(
            pl.len().cast(pl.Int64).alias("rows"), h.count().alias("hn"), h.mean().alias("hmean"), h.var().alias("hvar"),
            pl.col("abs_delta_p").sum().alias("dps"), pl.col("abs_delta_p").count().alias("dpn"),
        ))
        e = df["entropy"].to_numpy()
        c = df["_code"].to_numpy()
        if df["entropy"].null_count():
            keep = ~np.isnan(e)
            e, c = e[keep], c[keep]
        ent["all"].append(e)
        for n in flags:
            ent[n].append(e[(c & bits[n]) != 0])
    combos = [d.with_columns((pl.col("_code") & bits[n] != 0).alias(f"_f_{n}") for n in flags) for d in combos]
    comb = pl.concat(combos).to_dicts() if combos else []
    sets = {name: _set_moments(comb if name == "all" else [c for c in comb if c[f"_f_{name}"]],
                               [] if name == "all" else [c for c in comb if not c[f"_f_{name}"]], ent.pop(name))
            for name in ["all", *flags]}
    return _sets_table(sets, level)


@dataclass(frozen=True)
class _SetMoments:
    """One token set of :func:`significant_update_sets`: its size, entropy moments and median, mean |Δp|, and
    the entropy moments of the other tokens."""

    n: int
    mean: float | None
    var: float | None
    median: float | None
    mean_abs_delta_p: float | None
    rest_mean: float | None
    rest_var: float | None


def _set_moments(inside: list[dict], rest: list[dict], entropies: list[np.ndarray]) -> _SetMoments:
    """Merge the per-step, per-flag-combination moments of the rows ``inside`` the set (and of the ``rest``)."""
    def merged(rows):
        n_rows = sum(r["rows"] for r in rows)
        _, hmean, hvar = combine_moments((r["hn"], r["hmean"], r["hvar"]) for r in rows)
        dps, dpn = sum(r["dps"] or 0.0 for r in rows), sum(r["dpn"] for r in rows)
        return n_rows, hmean, hvar, (dps / dpn if dpn else None)

    n, mean, var, dp = merged(inside)
    _, rmean, rvar, _ = merged(rest)
    x = np.concatenate(entropies) if entropies else np.empty(0, dtype=np.float32)
    return _SetMoments(n, mean, var, quantiles_linear(x, [0.5])[0], dp, rmean, rvar)


def _sets_table(sets: dict[str, _SetMoments], level: float) -> pl.DataFrame:
    n_all = sets["all"].n or 0
    rows = []
    for name, m in sets.items():
        n = m.n or 0
        e = diff_means_from_moments(
            m.mean if n else math.nan, m.var or 0.0, n,
            m.rest_mean if n_all - n else math.nan, m.rest_var or 0.0, n_all - n, level,
        )
        rows.append(dict(set=name, n=n, share=n / n_all if n_all else math.nan, entropy_mean=m.mean,
                         entropy_median=m.median, mean_abs_delta_p=m.mean_abs_delta_p,
                         diff_vs_rest=e.estimate if name != "all" else None,
                         ci_low=e.ci_low if name != "all" else None, ci_high=e.ci_high if name != "all" else None))
    schema = dict(set=pl.Utf8, n=pl.Int64, share=pl.Float64, entropy_mean=pl.Float64, entropy_median=pl.Float64,
                  mean_abs_delta_p=pl.Float64, diff_vs_rest=pl.Float64, ci_low=pl.Float64, ci_high=pl.Float64)
    return pl.DataFrame(rows, schema=schema)
