"""Which tokens change probability between consecutive checkpoints (PAPER §1.7, §2.1 D–E; Fig. 3a–b).

``updates`` holds, for every response token of step k, its log-prob under the next checkpoint. Joined
with ``tokens``: ``Δlogp = logprob_next − logprob`` and ``Δp = exp(logprob_next) − exp(logprob)``.
Findings to reproduce: >99% of tokens barely move; the big moves are increases in positive and decreases in
negative samples, on high-entropy, high-gradient tokens.

"Significant" tokens are the top-``top_frac`` |Δp| **per step** (PAPER §1.7 suggests x ∈ {0.1%, 1%}).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from entropy_lens.analysis._common import (
    SAMPLE_KEY,
    TOKEN_KEY,
    StepPairs,
    check_top_frac,
    prefetch,
    abs_delta_p_exprs,
    add_delta_p,
    add_stage,
    collect,
    combine_moments,
    grad_norm_expr,
    has_columns,
    lazy,
    polarity_expr,
    quantiles_linear,
    require,
    SamplesByStep,
    select_steps,
    top_flag,
    top_fraction_threshold,
    with_polarity,
    with_updates,
)
from entropy_lens.analysis.stats import diff_means_from_moments
from entropy_lens.errors import UserError


def token_updates(
    *, tokens: pl.LazyFrame, updates: pl.LazyFrame | None = None, samples: pl.LazyFrame | None = None
) -> pl.LazyFrame:
    """Lazy join of tokens × updates (× samples for polarity); the building block of this module.

    Adds ``p``, ``p_next``, ``delta_logp``, ``delta_p``, ``abs_delta_p`` (PAPER §1.7), ``grad_norm`` =
    sqrt(1 − 2p + Σp²) when ``sum_p2`` is present, and ``correct``/``polarity`` when ``samples`` is given.
    Returns a LazyFrame (not collected): compose further queries on it.  The tokens × updates pairing is
    step by step, without a hash join where the store's partitions are aligned (:func:`with_updates`);
    ``tokens`` that already carry ``logprob_next`` (``Store.tokens_with_updates()``) need no ``updates``.
    """
    t = lazy(tokens, "tokens")
    lf = with_updates(t, lazy(updates, "updates") if updates is not None else None)
    if "sum_p2" in lf.collect_schema().names():
        lf = lf.with_columns(grad_norm_expr())
    if samples is not None:
        lf = with_polarity(lf, lazy(samples, "samples"))
    return lf


def _pairs(tokens, updates, extra=()) -> StepPairs:
    t = require(lazy(tokens, "tokens"), [*TOKEN_KEY, "logprob", *extra], "tokens")
    return StepPairs(t, lazy(updates, "updates") if updates is not None else None)


def _qname(q: float) -> str:
    return "q" + f"{q * 100:g}".replace(".", "_")


def delta_p_distribution(
    *,
    tokens: pl.LazyFrame,
    updates: pl.LazyFrame | None = None,
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

    Goes one step partition at a time; the quantiles are exact (the Δp values of a stage × polarity group
    are kept, 8 bytes a token, and sorted once at the end, in place; the groups sort in parallel threads, at
    most as many as polars' thread pool has).
    """
    pairs = _pairs(tokens, updates)
    smp = SamplesByStep(lazy(samples, "samples"), ["correct"])
    acc: dict[tuple[str, str], dict] = {}
    values: dict[tuple[str, str], list] = {}
    def load(item):  # runs one step ahead, in a background thread
        step = item[0]
        df = smp.join(pairs.frame(step, [*SAMPLE_KEY, "logprob"]), step)
        return df.select(abs_delta_p_exprs()[0], pl.col("correct").fill_null(False))  # null correct: "negative"

    for (step, stage), df in prefetch(select_steps(pairs.steps, boundary, None), load):
        pos, x = df["correct"].to_numpy(), df["delta_p"].to_numpy()
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
    tokens: pl.LazyFrame,
    updates: pl.LazyFrame | None = None,
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
    pairs = _pairs(tokens, updates)
    smp = SamplesByStep(lazy(samples, "samples"), ["correct"])
    lo = min(min_exp * b, -1)
    k = (pl.col("abs_delta_p").log10() * b).floor().clip(min_exp * b, -1).cast(pl.Int64)
    width = -lo + 1  # k in [lo, −1], and one slot for "no bin" (zeros)
    directions = ("zero", "increase", "decrease")
    counts: dict[str, np.ndarray] = {}
    def load(item):  # runs one step ahead, in a background thread
        step = item[0]
        return smp.join(pairs.frame(step, [*SAMPLE_KEY, "logprob"]), step).pipe(add_delta_p)

    for (step, stage), df in prefetch(select_steps(pairs.steps, boundary, None), load):
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
    row = collect(lf.select([pl.col("entropy").cast(pl.Float64).quantile(q, interpolation="linear").alias(f"e{i}") for i, q in enumerate(qs)]))
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
    pairs = _pairs(t, updates)
    sel = select_steps(pairs.steps, boundary, stage)
    ent = [df["entropy"].drop_nulls().to_numpy() for _, df in pairs.frames([s for s, _ in sel], ["entropy"], with_next=False)]
    qs = [i / n_bins for i in range(n_bins + 1)]
    x = np.concatenate(ent) if ent else np.empty(0, dtype=np.float32)
    del ent
    edges = [float(v) if v is not None else math.nan for v in quantiles_linear(x, qs, overwrite_input=True)]
    del x
    has_grad = has_columns(t, ["sum_p2"])
    cols = ["entropy", "logprob", *(["sum_p2"] if has_grad else [])]
    aggs = [
        pl.len().cast(pl.Int64).alias("n"),
        pl.col("entropy").cast(pl.Float64).sum().alias("_se"), pl.col("entropy").count().alias("_ce"),
        pl.col("abs_delta_p").sum().alias("_mass"), pl.col("abs_delta_p").count().alias("_ca"),
        pl.col("significant").sum().cast(pl.Int64).alias("_n_sig"),
    ]
    if has_grad:
        aggs += [pl.col("grad_norm").sum().alias("_sg"), pl.col("grad_norm").count().alias("_cg")]
    parts = []
    for step, df in pairs.frames([s for s, _ in sel], cols):
        df = add_delta_p(df, keep_p=True)
        thr = top_fraction_threshold(df["abs_delta_p"], top_frac)
        df = df.with_columns(_entropy_bins(df["entropy"], edges), top_flag("abs_delta_p", thr, "significant"),
                             *([grad_norm_expr(pl.col("p"))] if has_grad else []))
        parts.append(df.group_by("entropy_bin").agg(aggs))
    if not parts:
        schema = {"entropy_bin": pl.Int64, "n": pl.Int64, "_se": pl.Float64, "_ce": pl.UInt32, "_mass": pl.Float64,
                  "_ca": pl.UInt32, "_n_sig": pl.Int64, "_sg": pl.Float64, "_cg": pl.UInt32}
        parts = [pl.DataFrame(schema=schema if has_grad else {k: v for k, v in schema.items() if k not in ("_sg", "_cg")})]
    df = pl.concat(parts).group_by("entropy_bin").agg(pl.all().sum()).sort("entropy_bin")
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


def _entropy_bins_tokens_only(t: pl.LazyFrame, n_bins: int, boundary, stage) -> pl.DataFrame:
    lf = t.with_columns(grad_norm_expr()) if "sum_p2" in t.collect_schema().names() else t
    lf = add_stage(lf, boundary, stage)
    edges = entropy_bin_edges(lf, n_bins)
    lf = lf.with_columns(_entropy_bin_expr(edges))
    aggs = [pl.len().cast(pl.Int64).alias("n"), pl.col("entropy").cast(pl.Float64).mean().alias("entropy_mean")]
    names = lf.collect_schema().names()
    aggs.append(pl.col("grad_norm").mean().alias("mean_grad_norm") if "grad_norm" in names else pl.lit(None, dtype=pl.Float64).alias("mean_grad_norm"))
    df = collect(lf.group_by("entropy_bin").agg(aggs)).sort("entropy_bin")
    return _edge_columns(df, edges).select("entropy_bin", "entropy_low", "entropy_high", "entropy_mean", "n", "mean_grad_norm")


def significant_update_sets(
    *,
    tokens: pl.LazyFrame,
    updates: pl.LazyFrame | None = None,
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

    One pass, one step partition in memory at a time: per step, moments of each combination of the three
    flags (merged exactly at the end) and the entropies for the exact medians (4 bytes a selected token).
    """
    check_top_frac(top_frac)
    pairs = _pairs(tokens, updates, ["entropy"])
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

    def load(item):  # runs one step ahead, in a background thread
        step = item[0]
        df = smp.join(pairs.frame(step, [*SAMPLE_KEY, "entropy", "logprob"]), step)
        return add_delta_p(df.with_columns(pl.col("correct").fill_null(False))).select(
            "entropy", "correct", "delta_p", "abs_delta_p")

    for _, df in prefetch(select_steps(pairs.steps, boundary, stage), load):
        thr = top_fraction_threshold(df["abs_delta_p"], top_frac)
        df = df.with_columns(top_flag("abs_delta_p", thr, "top")).with_columns(code.alias("_code"))
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

    def stats(rows):
        n_rows = sum(r["rows"] for r in rows)
        hn, hmean, hvar = combine_moments((r["hn"], r["hmean"], r["hvar"]) for r in rows)
        dps, dpn = sum(r["dps"] or 0.0 for r in rows), sum(r["dpn"] for r in rows)
        return n_rows, hmean, hvar, (dps / dpn if dpn else None)

    r: dict = {}
    for name in ["all", *flags]:
        inside = comb if name == "all" else [c for c in comb if c[f"_f_{name}"]]
        rest = [] if name == "all" else [c for c in comb if not c[f"_f_{name}"]]
        n, mean, var, dp = stats(inside)
        _, rmean, rvar, _ = stats(rest)
        arr = ent.pop(name)
        x = np.concatenate(arr) if arr else np.empty(0, dtype=np.float32)
        del arr
        r.update({f"{name}:n": n, f"{name}:mean": mean, f"{name}:var": var, f"{name}:median": quantiles_linear(x, [0.5])[0],
                  f"{name}:dp": dp, f"{name}:rmean": rmean, f"{name}:rvar": rvar})
        del x
    n_all = r["all:n"] or 0
    rows = []
    for name in ["all", *flags]:
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
