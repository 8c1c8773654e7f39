"""Token-replacement interventions, the pure half (paper-notes §2.2 H, §2.3 K; Figs. 4b, 5b): which positions of a
step's responses are intervened on, and the summary of the regenerated accuracies.

``entropy-lens intervene`` (:mod:`entropy_lens.capture.intervene`, which documents the whole protocol) takes
:func:`select_positions` and :func:`summarize` from here and does the model work between them: the
replacement token, the regenerations and their grades.

Kinds and their groups (:data:`GROUPS`): ``ppl`` → ``low-ppl`` / ``high-ppl`` (responses bucketed by
:func:`entropy_lens.analysis.instance.ppl_buckets`, group-z, mid dropped; region = the whole response);
``position`` → ``begin`` / ``end`` (every response; ``position/length < edge`` and ``≥ 1 − edge``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl

from entropy_lens.analysis.instance import ppl_buckets
from entropy_lens.analysis.stats import bootstrap_ci

GROUPS: dict[str, tuple[str, ...]] = {"ppl": ("low-ppl", "high-ppl"), "position": ("begin", "end")}
KINDS = tuple(GROUPS)
SUMMARY_COLUMNS = ["kind", "group", "n", "accuracy_before", "accuracy_after", "delta_accuracy", "ci_low", "ci_high"]
RESPONSE = ["prompt_id", "sample_id"]


def select_positions(tokens: pl.DataFrame | pl.LazyFrame, samples: pl.DataFrame | pl.LazyFrame, *,
                     kinds: Sequence[str] = KINDS, k: int = 1, edge: float = 0.1, ppl_threshold: float = 0.5,
                     eos_ids: Sequence[int] = ()) -> pl.DataFrame:
    """The intervention sites of one step: one row per (kind, group, response, position).

    ``tokens``/``samples`` are the step's store rows.  Within each (kind, group, response) the ``k`` highest
    stored-entropy positions of the region are kept (ties: the earlier position); EOS tokens are never
    eligible.  Columns: ``kind``, ``group``, ``step``, ``prompt_id``, ``sample_id``, ``position``,
    ``rel_position``, ``entropy``, ``token_id``, ``logprob``, ``length``, ``w_ppl`` (null for position).
    Rows are ordered by group (:data:`GROUPS` order), response and position.
    """
    t = tokens.lazy() if isinstance(tokens, pl.DataFrame) else tokens
    s = samples.lazy() if isinstance(samples, pl.DataFrame) else samples
    key = ["step", *RESPONSE]
    base = (t.select(*key, "position", "token_id", "entropy", "logprob")
            .join(s.select(*key, "length"), on=key, how="inner")
            .filter(~pl.col("token_id").is_in(list(eos_ids)))
            .with_columns((pl.col("position").cast(pl.Float64) / pl.col("length").cast(pl.Float64))
                          .alias("rel_position")))
    parts = []
    if "ppl" in kinds:
        b = ppl_buckets(samples=s, bucketing="group_z", threshold=ppl_threshold)
        b = (b.filter(pl.col("ppl_bucket").is_in(["low", "high"]))
             .select(*key, "w_ppl", (pl.col("ppl_bucket") + "-ppl").alias("group")))
        parts.append(base.join(b.lazy(), on=key, how="inner").with_columns(pl.lit("ppl").alias("kind")))
    if "position" in kinds:
        r = pl.col("rel_position")
        for group, cond in (("begin", r < edge), ("end", r >= 1.0 - edge)):
            parts.append(base.filter(cond).with_columns(pl.lit(None, pl.Float64).alias("w_ppl"),
                                                        pl.lit(group).alias("group"), pl.lit("position").alias("kind")))
    cols = ["kind", "group", *key, "position", "rel_position", "entropy", "token_id", "logprob", "length", "w_ppl"]
    out = pl.concat([p.select(cols) for p in parts], how="vertical_relaxed")
    order = {g: i for i, g in enumerate(g for kind in KINDS for g in GROUPS[kind])}
    by = ["kind", "group", *key, "entropy", "position"]
    return (out.sort(by, descending=[c == "entropy" for c in by])
            .with_columns(pl.int_range(pl.len()).over(["kind", "group", *key]).alias("_rank"))
            .filter(pl.col("_rank") < k).drop("_rank")
            .with_columns(pl.col("group").replace_strict(order, default=len(order)).alias("_g"))
            .sort(["_g", *key, "position"]).drop("_g")
            .collect())


def _cluster_ci(diff: np.ndarray, cluster: np.ndarray, n_boot: int, seed: int):
    """Bootstrap CI of the mean of ``diff``, resampling clusters (responses); with singleton clusters this is
    exactly :func:`~entropy_lens.analysis.stats.bootstrap_ci` over the values.

    The cluster statistic is the ratio Σ_c sum_c / Σ_c count_c over the resampled clusters c: the mean of
    the values they hold, each value counted once per draw of its cluster.
    """
    _, inv = np.unique(cluster, return_inverse=True)
    if inv.max(initial=-1) + 1 == len(diff):
        return bootstrap_ci(diff, n_boot=n_boot, seed=seed)
    sums = np.bincount(inv, weights=diff)
    counts = np.bincount(inv).astype(float)

    def ratio(idx, axis=None):
        idx = np.asarray(idx).astype(np.int64)
        return sums[idx].sum(axis=axis) / counts[idx].sum(axis=axis)

    return bootstrap_ci(np.arange(len(sums), dtype=float), stat=ratio, n_boot=n_boot, seed=seed)


def summarize(detail: pl.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pl.DataFrame:
    """One row per (kind, group) present in ``detail`` (one row per intervention, with ``acc_before`` and
    ``acc_after``): the :data:`SUMMARY_COLUMNS`.

    ``delta_accuracy`` = mean(acc_after − acc_before) with a seeded percentile bootstrap CI that resamples
    whole responses (their positions are not independent when k > 1).
    """
    rows = []
    for kind in KINDS:
        for group in GROUPS[kind]:
            d = detail.filter((pl.col("kind") == kind) & (pl.col("group") == group))
            if d.height == 0:
                continue
            before, after = d["acc_before"].to_numpy(), d["acc_after"].to_numpy()
            cluster = (d["prompt_id"].cast(pl.Int64) * 1_000_003 + d["sample_id"].cast(pl.Int64)).to_numpy()
            est = _cluster_ci(after - before, cluster, n_boot, seed)
            rows.append({"kind": kind, "group": group, "n": d.height, "accuracy_before": float(before.mean()),
                         "accuracy_after": float(after.mean()), "delta_accuracy": est.estimate,
                         "ci_low": est.ci_low, "ci_high": est.ci_high})
    schema = {"kind": pl.Utf8, "group": pl.Utf8, "n": pl.Int64, **{c: pl.Float64 for c in SUMMARY_COLUMNS[3:]}}
    return pl.DataFrame(rows, schema=schema)
