"""How much an advantage shaper actually changed the advantages of a training run (paper-notes §4, §3).

A shaper's hyper-parameters say little on their own: with the paper's PPL α = 0.01 and group-standardised
log-PPL w ∈ ~[−2, 2], the weight clamp(1 − α·w, 0.8, 1.2) stays within ~[0.98, 1.02] (paper-notes §4.1).
This module measures the change on the rollouts a run trained on: the ``tokens`` table of an
``entropy-lens train`` store carries both the GRPO advantage ``A`` and the ``shaped_advantage`` Ã the
update used.

Over tokens with both columns non-null and A ≠ 0 (dropped groups have a null advantage; a token with A = 0
has no ratio):

* ``n_tokens``;
* ``share_changed``: share with |Ã − A| > ``tol``·|A|;
* ``rel_abs_change`` = Σ|Ã − A| / Σ|A|: the L1 size of the change relative to the advantages;
* ``ratio_min``, ``ratio_q05``, ``ratio_median``, ``ratio_q95``, ``ratio_max``: the token ratio Ã / A
  (the multiplicative weight for ``ppl``; 1 + bonus/|A| for ``position``).
"""

from __future__ import annotations

from typing import Sequence

import polars as pl

from entropy_lens.analysis.frames import collect_streaming, lazy, require


def shaping_effect(*, tokens: pl.LazyFrame, by: Sequence[str] = (), tol: float = 1e-6) -> pl.DataFrame:
    """One row per group of ``by`` (e.g. ``["step"]``; none: one row for the whole run) with the columns of
    the module docstring.  ``tokens`` needs ``advantage`` and ``shaped_advantage`` (a training store's)."""
    t = require(lazy(tokens, "tokens"), ["advantage", "shaped_advantage", *by], "tokens")
    a, s = pl.col("advantage").cast(pl.Float64), pl.col("shaped_advantage").cast(pl.Float64)
    rows = t.filter(a.is_not_null() & s.is_not_null() & (a != 0)).select(
        *by, (s / a).alias("ratio"), (s - a).abs().alias("abs_change"), a.abs().alias("abs_adv"))
    r = pl.col("ratio")
    aggs = [
        pl.len().alias("n_tokens"),
        (pl.col("abs_change") > tol * pl.col("abs_adv")).mean().alias("share_changed"),
        (pl.col("abs_change").sum() / pl.col("abs_adv").sum()).alias("rel_abs_change"),
        r.min().alias("ratio_min"),
        r.quantile(0.05, "linear").alias("ratio_q05"),
        r.median().alias("ratio_median"),
        r.quantile(0.95, "linear").alias("ratio_q95"),
        r.max().alias("ratio_max"),
    ]
    out = rows.group_by(*by).agg(aggs).sort(*by) if by else rows.select(aggs)
    return collect_streaming(out)
