"""Where the entropy went: a per-token account of the first-order entropy change of each update (issue 12).

For a token with next-token distribution p (at the sampling temperature), sampled token a, entropy H and
advantage A, a policy-gradient step on log p(a) in logit space, Δz = ηA(e_a − p) (the tabular-softmax
approximation of Cui et al. 2025), changes the entropy of that context to first order by (∂H/∂z_k =
−p_k (log p_k + H))::

    dH_pred = ΔH / η = A · [ Σ_v p_v² log p_v  +  H · Σ_v p_v²  −  p_a (log p_a + H) ]

Every term is stored per token (``sum_p2_logp``, ``entropy``, ``sum_p2``, ``logprob``; store schema 2).  Its
expectation over a ~ p is 0 for a constant A, so the sign of a batch's account comes from how advantages
and sampled probabilities co-vary: the covariance view, token by token.  The naive twin, for one token::

    logp = torch.log_softmax(z, -1); p = logp.exp(); H = -(p * logp).sum()
    dH_pred = A * ((p * p * logp).sum() + H * (p * p).sum() - p[a] * (logp[a] + H))

The advantage is the one the update used: ``shaped_advantage`` where present, else ``advantage``; a store
without advantages (a sweep, a verl dump) gets GRPO's group-normalised rewards of the samples of the same
prompt and step (:func:`group_normalised_advantage`), and :func:`advantage_source` says which.  Where
``updates`` carry ``entropy_next`` (the entropy of the same context under the next checkpoint, or, for a
training run, under the weights right after the step's update) the realized change ``dH_real =
entropy_next − entropy`` sits beside the prediction, and :func:`validation` compares the two.

The account is decomposed along the paper's axes (:data:`AXES`: polarity, PPL bucket, relative position,
token category, per-step entropy quantile), within each stage: each group's sum of decreases, of increases
and its net, and its share of the total decrease, increase, net change and absolute change, with
percentile-bootstrap CIs that resample prompt groups (step, prompt_id), the unit GRPO normalises within.
The groups of an axis partition the tokens, so their sums add up to the stage's total.

Pure polars and numpy.  The frame is built in memory (about 60 bytes a token: ~50 MB for the embedded
run's 0.9 M training tokens); a store of 10⁸ tokens wants :func:`token_account` on a subset of steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import polars as pl

from entropy_lens.analysis import categories, instance
from entropy_lens.analysis.frames import (
    SAMPLE_KEY,
    TOKEN_KEY,
    boundary_step,
    has_values,
    lazy,
    polarity_expr,
    require,
    stage_expr,
)
from entropy_lens.analysis.position import position_bin_expr
from entropy_lens.analysis.stats import Estimate, correlation, ols_slope
from entropy_lens.errors import UserError
from entropy_lens.registry import Registry

__all__ = [
    "AXES", "ENTROPY_QUANTILES", "advantage_source", "group_normalised_advantage", "dh_pred_expr",
    "token_entropy_change", "token_account", "decompose", "step_account", "step_contributions", "top_tokens",
    "validation", "validation_bins", "stage_share", "run_account", "restage", "all_contributions",
]

#: the stored columns the prediction needs (store schema 2)
NEEDS = ("logprob", "entropy", "sum_p2", "sum_p2_logp")
#: GRPO's ε in (R − mean) / (std + ε), as ``train.core.group_advantages`` and verl
GRPO_EPS = 1e-6
#: per-step entropy quantile bins: q5 holds the step's top 20% highest-entropy tokens
ENTROPY_QUANTILES = 5
#: relative-position bins of the decomposition (first fifth … last fifth of the response)
POSITION_BINS = 5


# ------------------------------------------------------------------------------------------------ the formula


def dh_pred_expr(advantage: str = "advantage_used") -> pl.Expr:
    """``dH_pred`` (Float64): A · [Σp² log p + H·Σp² − p_a (log p_a + H)], per unit step size η."""
    f = lambda c: pl.col(c).cast(pl.Float64)  # noqa: E731
    h, logp_a = f("entropy"), f("logprob")
    bracket = f("sum_p2_logp") + h * f("sum_p2") - logp_a.exp() * (logp_a + h)
    return (f(advantage) * bracket).alias("dH_pred")


def group_normalised_advantage(samples: pl.LazyFrame) -> pl.LazyFrame:
    """GRPO's outcome advantage per sample from ``samples.reward``: (R − mean_g R) / (std_g R + 1e-6), std
    unbiased, g = (step, prompt_id); a group of one sample gets its reward (as ``train.core.group_advantages``).

    Columns: ``step``, ``prompt_id``, ``sample_id``, ``advantage_used`` (Float64)."""
    s = require(lazy(samples, "samples"), [*SAMPLE_KEY, "reward"], "samples")
    r = pl.col("reward").cast(pl.Float64)
    g = ["step", "prompt_id"]
    single = pl.len().over(g) < 2
    mean = pl.when(single).then(0.0).otherwise(r.mean().over(g))
    std = pl.when(single).then(1.0).otherwise(r.std(ddof=1).over(g))
    return s.select(*SAMPLE_KEY, ((r - mean) / (std + GRPO_EPS)).alias("advantage_used"))


def advantage_source(tokens: pl.LazyFrame) -> str:
    """Which advantage :func:`token_entropy_change` uses: ``"shaped_advantage"``, ``"advantage"`` (the
    trainer's, with values somewhere) or ``"group-normalised reward"`` (none stored)."""
    for column in ("shaped_advantage", "advantage"):
        if has_values(tokens, column):
            return column
    return "group-normalised reward"


def token_entropy_change(tokens: pl.LazyFrame, samples: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """``tokens`` with ``advantage_used`` and ``dH_pred`` (Float64, per unit η) added.

    The advantage is :func:`advantage_source`'s: a token of a stored advantage column that is null (a group
    the trainer dropped: it was not trained on) gets a null ``dH_pred``.  Without stored advantages
    ``samples`` (with ``reward``) is needed.  A store written before schema 2 has no ``sum_p2_logp``: a
    :class:`UserError` says so.
    """
    t = require(lazy(tokens, "tokens"), [*TOKEN_KEY, *NEEDS], "tokens")
    if not has_values(t, "sum_p2_logp"):
        raise UserError("tokens have no sum_p2_logp values (a store written before schema 2): the entropy account "
                        "needs them; re-score the rollouts with `entropy-lens score` or re-run the sweep")
    src = advantage_source(t)
    if src == "group-normalised reward":
        if samples is None:
            raise UserError("tokens have no advantages: the samples (with rewards) are needed to normalise them")
        t = t.join(group_normalised_advantage(samples), on=SAMPLE_KEY, how="left")
    else:
        t = t.with_columns(pl.col(src).cast(pl.Float64).alias("advantage_used"))
    return t.with_columns(dh_pred_expr())


# ------------------------------------------------------------------------------------------------ the axes


@dataclass(frozen=True)
class AxisInputs:
    """What the axes read besides the tokens: the samples (correctness, log-PPL) and the vocabulary."""

    samples: pl.LazyFrame
    vocab: pl.LazyFrame | None = None


AXES: Registry = Registry("attribution axis")


def register_axis(name: str) -> Callable:
    """Register ``fn(frame: pl.LazyFrame, inputs: AxisInputs) -> pl.LazyFrame | None`` adding the Utf8 column
    ``name`` (the token's group on that axis); None when the inputs cannot give it (e.g. no vocabulary)."""
    return AXES.register(name)


@register_axis("polarity")
def _polarity(frame: pl.LazyFrame, inputs: AxisInputs) -> pl.LazyFrame:
    """"positive" (correct response) or "negative" (paper-notes §1.1)."""
    s = require(lazy(inputs.samples, "samples"), [*SAMPLE_KEY, "correct"], "samples")
    return frame.join(s.select(*SAMPLE_KEY, polarity_expr()), on=SAMPLE_KEY, how="left")


@register_axis("ppl_bucket")
def _ppl_bucket(frame: pl.LazyFrame, inputs: AxisInputs) -> pl.LazyFrame:
    """The response's PPL bucket within its prompt group: low / mid / high (``instance`` ``group_z``, §2.2 G)."""
    b = instance.ppl_buckets(samples=inputs.samples).select(*SAMPLE_KEY, "ppl_bucket")
    b = b.with_columns(pl.col(c).cast(pl.Int32) for c in SAMPLE_KEY)
    return frame.join(b.lazy(), on=SAMPLE_KEY, how="left")


@register_axis("position")
def _position(frame: pl.LazyFrame, inputs: AxisInputs) -> pl.LazyFrame:
    """Relative position in the response, in fifths: "0-20%" … "80-100%" (``analysis.position``'s bins)."""
    k = POSITION_BINS
    i = position_bin_expr(k)
    labels = {j: f"{100 * j // k}-{100 * (j + 1) // k}%" for j in range(k)}
    return frame.with_columns(i.replace_strict(labels, return_dtype=pl.Utf8).alias("position"))


@register_axis("category")
def _category(frame: pl.LazyFrame, inputs: AxisInputs) -> pl.LazyFrame | None:
    """The token's semantic category (formal / logical / metacognitive / support, §1.8); needs the vocabulary."""
    if inputs.vocab is None:
        return None
    cats = categories.classify_vocab(vocab=inputs.vocab).select(pl.col("token_id").cast(pl.Int32), "category")
    return frame.join(cats.lazy(), on="token_id", how="left").with_columns(pl.col("category").fill_null("support"))


@register_axis("entropy_quantile")
def _entropy_quantile(frame: pl.LazyFrame, inputs: AxisInputs) -> pl.LazyFrame:
    """The token's entropy quintile among its step's accounted tokens: "q1" (lowest 20%) … "q5" (top 20%).

    Rank ``ordinal`` within the step in key order (ties broken by position in the store's order), bin
    floor((rank − 1) · 5 / n_step), as ``instance``'s quantile bucketing."""
    k = ENTROPY_QUANTILES
    rank = pl.col("entropy").rank("ordinal").over("step") - 1
    i = (rank * k // pl.len().over("step")).cast(pl.Int64)
    return frame.sort(TOKEN_KEY).with_columns(
        i.replace_strict({j: f"q{j + 1}" for j in range(k)}, return_dtype=pl.Utf8).alias("entropy_quantile"))


# ------------------------------------------------------------------------------------------------ the account


def token_account(tokens: pl.LazyFrame, samples: pl.LazyFrame, *, vocab: pl.LazyFrame | None = None,
                  updates: pl.LazyFrame | None = None, boundary=None,
                  axes: Sequence[str] | None = None) -> pl.DataFrame:
    """One row per accounted token (non-null ``dH_pred``), sorted by the token key.

    Columns: the key, ``token_id``, ``entropy``, ``logprob``, ``advantage_used``, ``dH_pred``, ``stage``
    ("rising"/"plateau", or "all" without a boundary), one column per axis of ``axes`` (default: every
    registered axis the inputs allow; the ``position`` axis's bin replaces the integer ``position``), and, when
    ``updates`` carries ``entropy_next`` values, ``dH_real`` (entropy_next − entropy) and ``dlogp_real``
    (logprob_next − logprob), null where the token has no update.  The same inputs give the same frame, row for
    row.
    """
    t = token_entropy_change(tokens, samples).filter(pl.col("dH_pred").is_not_null())
    t = t.select(*TOKEN_KEY, "token_id", "rel_position", "entropy", "logprob", "advantage_used", "dH_pred")
    if updates is not None and has_values(updates, "entropy_next"):
        u = require(lazy(updates, "updates"), [*TOKEN_KEY, "logprob_next", "entropy_next"], "updates")
        t = t.join(u.select(*TOKEN_KEY, "logprob_next", "entropy_next"), on=TOKEN_KEY, how="left").with_columns(
            (pl.col("entropy_next").cast(pl.Float64) - pl.col("entropy").cast(pl.Float64)).alias("dH_real"),
            (pl.col("logprob_next").cast(pl.Float64) - pl.col("logprob").cast(pl.Float64)).alias("dlogp_real"),
        ).drop("logprob_next", "entropy_next")
    # Rows in key order, kept through the axes by a row number: the ``position`` axis replaces the integer
    # position with its bin, after which the key no longer orders the rows (a sort would leave ties unordered).
    t = restage(t, boundary).sort(TOKEN_KEY).with_row_index("_row")
    inputs = AxisInputs(samples, vocab)
    for name in (AXES.names() if axes is None else axes):
        added = AXES.get(name)(t, inputs)
        if added is not None:
            t = added
    return t.drop("rel_position").sort("_row").drop("_row").collect()


def restage(account, boundary):
    """``account`` (a token account, frame or lazy) with its ``stage`` column from ``boundary``: "rising" before
    it, "plateau" from it on, "all" without one.  Nothing else in an account depends on the boundary."""
    b = boundary_step(boundary)
    return account.with_columns(pl.lit("all").alias("stage") if b is None else stage_expr(b))


def run_account(view) -> pl.DataFrame:
    """:func:`token_account` of a :class:`~entropy_lens.analysis.context.RunView`: its rollouts (the training
    run's when they carry advantages), their updates, its vocabulary and its stage boundary.  The account is
    computed once per run (``view.memo``) and only restaged for another boundary."""
    r = view.rollouts
    account = view.memo("token_account", lambda: token_account(r.tokens, r.samples, vocab=view.vocab, updates=r.updates))
    return restage(account, view.boundary_step)


def all_contributions(account: pl.DataFrame, value: str = "dH_pred") -> dict[str, pl.DataFrame]:
    """``{axis: step_contributions(account, axis, value)}`` for every axis the account has."""
    return {a: step_contributions(account, a, value) for a in axes_of(account)}


def axes_of(account: pl.DataFrame) -> list[str]:
    """The registered axes ``account`` has a column for, in registry order."""
    return [a for a in AXES.names() if a in account.columns]


def _stages(account: pl.DataFrame) -> list[str]:
    present = [s for s in ("rising", "plateau", "all") if s in set(account["stage"].unique().to_list())]
    return present + (["all steps"] if len(present) > 1 else [])


def _stage_rows(account: pl.DataFrame, stage: str) -> pl.DataFrame:
    return account if stage == "all steps" else account.filter(pl.col("stage") == stage)


# ------------------------------------------------------------------------------------------------ decomposition

#: the four sums of a group: Σ min(ΔH, 0), Σ max(ΔH, 0), Σ ΔH, Σ |ΔH|
MEASURES = ("decrease", "increase", "net", "abs")


def _measure_exprs(value: str) -> list[pl.Expr]:
    v = pl.col(value)
    return [v.clip(upper_bound=0.0).sum().alias("decrease"), v.clip(lower_bound=0.0).sum().alias("increase"),
            v.sum().alias("net"), v.abs().sum().alias("abs"), pl.len().alias("n_tokens")]


def _unit_codes(rows: pl.DataFrame) -> tuple[np.ndarray, int]:
    """Each row's prompt group (step, prompt_id) as a code 0 … n_units − 1 (in (step, prompt_id) order)."""
    key = pl.col("step").cast(pl.Int64) * (1 << 32) + pl.col("prompt_id").cast(pl.Int64)
    codes = rows.select((key.rank("dense") - 1).cast(pl.Int64)).to_series().to_numpy()
    return codes, int(codes.max()) + 1 if codes.size else 0


def _unit_sums(rows: pl.DataFrame, axis: str, value: str, units: np.ndarray,
               n_units: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per prompt group × group of ``axis``: the four :data:`MEASURES` sums of ``value``.

    ``units``: each row's prompt-group code (:func:`_unit_codes`).  Returns the group labels (sorted), the
    token count per group and a dense array [4, n_units, n_groups] (0 where a unit has no token of a group),
    by one ``np.bincount`` per measure."""
    groups = sorted(rows[axis].unique().to_list())
    g = rows[axis].replace_strict({x: i for i, x in enumerate(groups)}, return_dtype=pl.Int64).to_numpy()
    v = rows[value].cast(pl.Float64).to_numpy()
    cell, size = units * len(groups) + g, n_units * len(groups)
    parts = (np.minimum(v, 0.0), np.maximum(v, 0.0), v, np.abs(v))
    dense = np.stack([np.bincount(cell, weights=x, minlength=size).reshape(n_units, len(groups)) for x in parts])
    return groups, np.bincount(g, minlength=len(groups)), dense


def _boot_weights(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_units] resampling counts of the units (each draw: n_units units with replacement), from
    ``rng.integers`` and one ``np.bincount``, a multinomial's law at a fraction of ``rng.multinomial``'s cost."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_units, size=(n_boot, n_units)) + (np.arange(n_boot) * n_units)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n_units).reshape(n_boot, n_units).astype(np.float64)


def _shares(totals: np.ndarray) -> np.ndarray:
    """Group totals [..., n_groups] → shares of their sum (NaN where the sum is 0)."""
    whole = totals.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(whole != 0, totals / np.where(whole != 0, whole, 1.0), np.nan)


def _percentiles(draws: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``a`` and ``1 − a`` quantiles of each column of ``draws`` [B, G], NaNs dropped (NaN for a column of
    NaNs: a measure that is 0 in every resample, e.g. the increase of a stage that only decreased)."""
    lo, hi = np.full(draws.shape[1], np.nan), np.full(draws.shape[1], np.nan)
    ok = ~np.isnan(draws).all(axis=0)
    if ok.any():
        lo[ok], hi[ok] = np.nanquantile(draws[:, ok], [a, 1.0 - a], axis=0)
    return lo, hi


def _decompose_axis(rows: pl.DataFrame, axis: str, value: str, units: tuple[np.ndarray, int],
                    weights: np.ndarray | None, level: float) -> pl.DataFrame:
    """One stage's rows, one axis: the groups' sums, shares and share CIs (columns of :func:`decompose`)."""
    groups, counts, dense = _unit_sums(rows, axis, value, *units)
    totals = dense.sum(axis=1)  # [4, G]
    out = {"group": groups, "n_tokens": counts.astype(np.int64)}
    a = (1.0 - level) / 2.0
    boot = None if weights is None else np.matmul(weights, dense)  # [B, U] @ [4, U, G] → [4, B, G]
    for m, name in enumerate(MEASURES):
        out[name] = totals[m]
        out[f"share_{name}"] = _shares(totals[m])
        lo, hi = _percentiles(_shares(boot[m]), a) if boot is not None else (np.full(len(groups), np.nan),) * 2
        out[f"share_{name}_ci_low"], out[f"share_{name}_ci_high"] = lo, hi
    return pl.DataFrame(out).with_columns(pl.lit(axis).alias("axis"))


def decompose(account: pl.DataFrame, *, value: str = "dH_pred", axes: Sequence[str] | None = None,
              n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pl.DataFrame:
    """Each group's part of the entropy change ``value`` (``dH_pred`` or ``dH_real``), per stage and axis.

    Columns: ``stage`` (each stage of the account, and "all steps" when there are two), ``axis``, ``group``,
    ``n_tokens``, the sums ``decrease`` = Σ min(ΔH, 0), ``increase`` = Σ max(ΔH, 0), ``net`` = Σ ΔH,
    ``abs`` = Σ |ΔH| (Float64, per unit η for ``dH_pred``), and for each the group's share of the stage's
    total, ``share_<m>`` with ``share_<m>_ci_low`` / ``_ci_high``: percentile bootstrap over prompt groups
    (step, prompt_id), ``n_boot`` draws with one set of draws per stage (so all axes' CIs come from the same
    resamples).  The groups of an axis partition the stage's tokens: their sums add up to its totals and
    their shares to 1.  Rows with a null ``value`` (tokens without an update) are left out.
    """
    require(account.lazy(), [*TOKEN_KEY, "stage", value], "token account")
    names = axes_of(account) if axes is None else list(axes)
    parts = []
    for i, stage in enumerate(_stages(account)):
        rows = _stage_rows(account, stage).filter(pl.col(value).is_not_null())
        if rows.height == 0:
            continue
        units = _unit_codes(rows)
        weights = _boot_weights(units[1], n_boot, seed + i) if n_boot and units[1] > 1 else None
        for axis in names:
            parts.append(_decompose_axis(rows, axis, value, units, weights, level).with_columns(pl.lit(stage).alias("stage")))
    if not parts:
        raise UserError(f"the token account has no rows with {value}")
    front = ["stage", "axis", "group", "n_tokens", *MEASURES]
    out = pl.concat(parts, how="vertical")
    return out.select(*front, *[c for c in out.columns if c not in front])


def stage_share(decomposition: pl.DataFrame, stage: str, axis: str, group: str, measure: str = "net"):
    """The row of ``decomposition`` for (stage, axis, group) as an :class:`~entropy_lens.analysis.stats.Estimate`
    of ``share_<measure>`` (n = the group's tokens), or None when absent."""
    r = decomposition.filter((pl.col("stage") == stage) & (pl.col("axis") == axis) & (pl.col("group") == group))
    if r.height == 0:
        return None
    c = f"share_{measure}"
    return Estimate(float(r[c][0]), float(r[f"{c}_ci_low"][0]), float(r[f"{c}_ci_high"][0]), int(r["n_tokens"][0]))


# ------------------------------------------------------------------------------------------------ per step


def step_account(account: pl.DataFrame) -> pl.DataFrame:
    """Per step: ``stage``, ``n_tokens``, ``entropy_mean``, ``dH_pred_sum`` / ``_mean``, Cui et al.'s batch
    covariance ``cov_logp_adv`` = mean over tokens of (log p − mean)(A − mean) (population, the advantage the
    update used), and with realized changes ``dH_real_sum`` / ``_mean``, ``n_realized`` and ``r_token`` (the
    Pearson correlation of dH_pred and dH_real over the step's tokens that have both)."""
    lp, a = pl.col("logprob").cast(pl.Float64), pl.col("advantage_used")
    aggs = [pl.first("stage"), pl.len().alias("n_tokens"), pl.col("entropy").cast(pl.Float64).mean().alias("entropy_mean"),
            pl.col("dH_pred").sum().alias("dH_pred_sum"), pl.col("dH_pred").mean().alias("dH_pred_mean"),
            ((lp - lp.mean()) * (a - a.mean())).mean().alias("cov_logp_adv")]
    if "dH_real" in account.columns:
        both = pl.col("dH_real").is_not_null()
        aggs += [pl.col("dH_real").sum().alias("dH_real_sum"), pl.col("dH_real").mean().alias("dH_real_mean"),
                 both.sum().alias("n_realized"),
                 pl.corr(pl.col("dH_pred").filter(both), pl.col("dH_real").filter(both)).alias("r_token")]
    return account.group_by("step").agg(aggs).sort("step")


def step_contributions(account: pl.DataFrame, axis: str, value: str = "dH_pred") -> pl.DataFrame:
    """Per step and group of ``axis``: ``contribution`` = the group's Σ ``value`` divided by the step's token
    count, so that a step's groups add up to its mean ΔH per token; with ``n_tokens`` of the group."""
    per_step = account.group_by("step").agg(pl.len().alias("_n_step"))
    return (account.filter(pl.col(value).is_not_null()).group_by("step", axis)
            .agg(pl.col(value).sum().alias("_sum"), pl.len().alias("n_tokens"))
            .join(per_step, on="step").with_columns((pl.col("_sum") / pl.col("_n_step")).alias("contribution"))
            .select("step", pl.col(axis).alias("group"), "contribution", "n_tokens").sort("step", "group"))


def top_tokens(account: pl.DataFrame, vocab: pl.LazyFrame | None = None, n: int = 15,
               value: str = "dH_pred") -> pl.DataFrame:
    """Per stage, the vocabulary items whose tokens burned the most entropy (most negative Σ ``value``) and
    raised the most (most positive).  Columns: ``stage``, ``direction`` ("burned"/"raised"), ``rank``,
    ``token_id``, ``token`` (null without a vocabulary), ``n_tokens``, ``total``, ``mean``, ``share`` (of the
    stage's total decrease resp. increase)."""
    rows = []
    for stage in _stages(account):
        d = _stage_rows(account, stage).filter(pl.col(value).is_not_null())
        per = d.group_by("token_id").agg(pl.len().alias("n_tokens"), pl.col(value).sum().alias("total"),
                                         pl.col(value).mean().alias("mean"))
        dec = float(d[value].clip(upper_bound=0.0).sum())
        inc = float(d[value].clip(lower_bound=0.0).sum())
        for direction, descending, whole in (("burned", False, dec), ("raised", True, inc)):
            best = per.sort(["total", "token_id"], descending=[descending, False]).head(n)
            best = best.filter(pl.col("total") < 0) if direction == "burned" else best.filter(pl.col("total") > 0)
            rows.append(best.with_columns(pl.lit(stage).alias("stage"), pl.lit(direction).alias("direction"),
                                          (pl.int_range(pl.len()) + 1).alias("rank"),
                                          (pl.col("total") / whole if whole else pl.lit(None, pl.Float64)).alias("share")))
    out = pl.concat(rows, how="diagonal_relaxed") if rows else pl.DataFrame()
    if vocab is not None and out.height:
        v = lazy(vocab, "vocab").select(pl.col("token_id").cast(out["token_id"].dtype), "token").collect()
        out = out.join(v, on="token_id", how="left")
    elif out.height:
        out = out.with_columns(pl.lit(None, pl.Utf8).alias("token"))
    cols = ["stage", "direction", "rank", "token_id", "token", "n_tokens", "total", "mean", "share"]
    return out.select(cols) if out.height else pl.DataFrame(schema={c: pl.Utf8 for c in cols})


# ------------------------------------------------------------------------------------------------ validation


def _fit_row(level: str, axis: str | None, group: str | None, pred: np.ndarray, real: np.ndarray) -> dict:
    r = correlation(pred, real, method="pearson")
    ok = ~(np.isnan(pred) | np.isnan(real))
    nonzero = ok & (pred != 0) & (real != 0)
    return dict(level=level, axis=axis, group=group, n=r.n, r=r.estimate, ci_low=r.ci_low, ci_high=r.ci_high,
                slope=ols_slope(pred, real),
                sign_agreement=float((np.sign(pred[nonzero]) == np.sign(real[nonzero])).mean())
                if nonzero.any() else float("nan"))


def validation(account: pl.DataFrame, axes: Sequence[str] | None = None) -> pl.DataFrame:
    """Predicted (``dH_pred``, per unit η) against realized (``dH_real``) entropy change.

    Rows (``level``): "token" (every token with both; n = tokens), "step" (the steps' sums; n = steps), and
    per axis and group "group" (that group's per-step sums across steps).  Columns: ``level``, ``axis``,
    ``group``, ``n``, ``r`` (Pearson) with its Fisher-z ``ci_low`` / ``ci_high``, ``slope`` (OLS of realized
    on predicted: the effective step size η, which Adam, clipping and the other tokens' updates set) and
    ``sign_agreement`` (share of non-zero pairs with the same sign).  The token-level CI treats tokens as
    independent, which tokens of one response are not: read it as a lower bound on the uncertainty.
    """
    if "dH_real" not in account.columns:
        raise UserError("no realized entropy change (updates with entropy_next): the prediction cannot be validated")
    both = account.filter(pl.col("dH_real").is_not_null())
    if both.height == 0:
        raise UserError("no token has both a predicted and a realized entropy change")
    rows = [_fit_row("token", None, None, both["dH_pred"].to_numpy(), both["dH_real"].to_numpy())]
    steps = both.group_by("step").agg(pl.col("dH_pred").sum(), pl.col("dH_real").sum()).sort("step")
    rows.append(_fit_row("step", None, None, steps["dH_pred"].to_numpy(), steps["dH_real"].to_numpy()))
    for axis in (axes_of(account) if axes is None else axes):
        cells = both.group_by("step", axis).agg(pl.col("dH_pred").sum(), pl.col("dH_real").sum()).sort("step")
        for g in sorted(cells[axis].unique().to_list()):
            c = cells.filter(pl.col(axis) == g)
            rows.append(_fit_row("group", axis, g, c["dH_pred"].to_numpy(), c["dH_real"].to_numpy()))
    return pl.DataFrame(rows, schema_overrides={"axis": pl.Utf8, "group": pl.Utf8})


def weakest_groups(valid: pl.DataFrame, n: int = 3) -> pl.DataFrame:
    """The ``n`` groups where the prediction tracks the realized change worst (lowest ``r``; NaN first)."""
    g = valid.filter(pl.col("level") == "group")
    return g.sort(pl.col("r").fill_nan(-2.0)).head(n)


def validation_bins(account: pl.DataFrame, n_bins: int = 20) -> pl.DataFrame:
    """Tokens with both changes, in ``n_bins`` equal-count bins of ``dH_pred`` (ordinal rank): per bin and
    stage, ``n``, ``dH_pred_mean`` and ``dH_real_mean`` (the binned scatter of predicted vs realized)."""
    if "dH_real" not in account.columns:
        raise UserError("no realized entropy change (updates with entropy_next): nothing to bin")
    both = account.filter(pl.col("dH_real").is_not_null())
    rank = pl.col("dH_pred").rank("ordinal").over("stage") - 1
    return (both.with_columns((rank * n_bins // pl.len().over("stage")).alias("bin"))
            .group_by("stage", "bin").agg(pl.len().alias("n"), pl.col("dH_pred").mean().alias("dH_pred_mean"),
                                          pl.col("dH_real").mean().alias("dH_real_mean"))
            .sort("stage", "bin"))
