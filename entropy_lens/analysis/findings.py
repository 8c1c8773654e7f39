"""The paper's findings as verdicts: pure functions from analysis tables to a :class:`Finding`.

Each ``finding_X`` takes the tables the analyses produce (``polarity_entropy``, ``delta_p_distribution``,
an interventions table, the training logs of several runs, ...) and returns what the data shows — the
number with its interval and n — and whether it agrees with the paper's claim (:data:`CLAIMS`), under the
explicit rule stated in :data:`RULES`.  A finding whose inputs are absent is "not measured", with the reason.
Verdicts never raise on missing data; they report it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from entropy_lens.analysis import attribution, categories, defects, polarity
from entropy_lens.analysis.stats import (
    Estimate,
    bootstrap_ci,
    correlation,
    diff_of_estimates,
    diff_proportions,
    paired_step_diff,
    proportion,
)
from entropy_lens.analysis.vocab import rising_steps, rising_windows, table_steps

AGREES, DISAGREES, NOT_MEASURED = "agrees", "does not agree", "not measured"

#: The paper's findings (paper-notes §0, §2), keyed by letter; "M" = the methods keep entropy higher late (§3).
CLAIMS: dict[str, str] = {
    "A": "Rising stage: negative samples' entropy is higher than positives' and falls faster",
    "B": "Rising stage: task-irrelevant tokens lose entropy, reasoning (formal) tokens rise in frequency",
    "C": "Rising stage: defective responses (format, irrelevant, language mixing) drop",
    "D": "Plateau: >99% of tokens change little; significant updates are increases in positives, decreases in negatives",
    "E": "Plateau: significantly updated tokens are high-entropy, and high-entropy tokens have larger gradients",
    "F": "Plateau: formal-reasoning tokens get the strongest update",
    "G": "Instance: the top-|Δp| tokens come mostly from low-PPL samples",
    "H": "Instance: replacing high-entropy tokens hurts low-PPL samples less than high-PPL samples",
    "I": "Instance: low-PPL weighting beats high-PPL weighting in accuracy, with lower entropy",
    "J": "Token: entropy vs relative position is U-shaped",
    "K": "Token: replacing high-entropy tokens at the beginning hurts more than at the end",
    "L": "Token: the end bonus performs best, raises entropy and lengthens responses",
    "M": "Methods (PPL, POSITION) keep entropy higher than the baseline late in training",
    "N": "Rising stage: most of the entropy decrease comes from negative samples (as a share of the first-order ΔH)",
    "O": "Plateau: most of the entropy change comes from the top 20% highest-entropy tokens",
}

#: The explicit rule behind each verdict.  "CI" = the 95% interval given next to the number.
RULES: dict[str, str] = {
    "A": "rising-stage steps: mean over steps of H_neg − H_pos (bootstrap CI over steps) > 0, AND OLS slope of "
         "(H_neg − H_pos) vs step (pairs-bootstrap CI) < 0; token-mean entropy",
    "B": "formal tokens' share of all tokens rises from the first to the last rising-stage window (Newcombe CI of "
         "the difference > 0), AND the support (non-reasoning) token types' entropy change, averaged over types "
         "(bootstrap CI over types), is < 0",
    "C": "share of responses with any defect in the last rising-stage window minus the first window: Newcombe CI < 0",
    "D": "share of tokens with |Δp| < 1e-3 ≥ 0.99 (point estimate; Wilson CI shown), AND among tokens with "
         "|Δp| ≥ 1e-3 the share of increases in positive samples and of decreases in negative samples both have "
         "Wilson CI > 0.5",
    "E": "mean entropy of the per-step top-x% |Δp| tokens minus that of the rest: Welch CI > 0, AND Spearman "
         "correlation of bin mean entropy with bin mean logit-gradient norm over entropy quantile bins: Fisher CI > 0",
    "F": "formal tokens have the largest mean |Δp| of the four categories, AND their share of the significant "
         "updates has a Wilson CI above their share of all tokens",
    "G": "the low-PPL bucket's share of the top-|Δp| tokens has a Wilson CI above its share of all tokens, AND "
         "exceeds the high-PPL bucket's share",
    "H": "Δaccuracy(low-PPL) − Δaccuracy(high-PPL) > 0, CI from the two groups' CIs (normal approximation)",
    "I": "late training (plateau of the baseline, else the last half of steps), paired by step: eval accuracy "
         "PPL − PPL-high has bootstrap CI > 0, AND entropy PPL − PPL-high has CI < 0",
    "J": "per response: H̄(first 10%) − H̄(middle) and H̄(last 10%) − H̄(middle), averaged over responses, both "
         "with bootstrap CI > 0",
    "K": "Δaccuracy(end) − Δaccuracy(begin) > 0, CI from the two groups' CIs (normal approximation)",
    "L": "late training, paired by step (bootstrap CI over steps): accuracy POSITION − POSITION-begin > 0 and "
         "POSITION − baseline > 0; entropy POSITION − baseline > 0 and POSITION-begin − baseline > 0; "
         "response length POSITION − baseline > 0; every available comparison must hold",
    "M": "late training, paired by step: entropy PPL − baseline and POSITION − baseline both with bootstrap CI > 0 "
         "(every available comparison must hold)",
    "N": "rising-stage trained tokens, predicted first-order ΔH (analysis.attribution): the stage's net ΔH < 0, AND "
         "the negative samples' share of the net ΔH has a bootstrap CI (over prompt groups) above 0.5",
    "O": "plateau trained tokens, predicted first-order ΔH: the share of Σ|ΔH| carried by each step's top 20% "
         "highest-entropy tokens has a bootstrap CI (over prompt groups) above 0.5",
}


# ------------------------------------------------------------------------------------------------ results


@dataclass
class Finding:
    """One paper finding evaluated on this data: ``verdict`` ∈ {agrees, does not agree, not measured}."""

    key: str
    measured: str
    verdict: str
    why: str = ""
    #: for a stage-conditioned finding, the verdicts with the boundary at the low and the high end of its 95%
    #: interval ((step, verdict) each); None when the finding does not depend on the boundary or it has no CI
    at_ci_ends: tuple[tuple[int, str], tuple[int, str]] | None = None

    @property
    def claim(self) -> str:
        return CLAIMS[self.key]

    @property
    def rule(self) -> str:
        return RULES[self.key]

    @property
    def verdict_text(self) -> str:
        return f"{self.verdict} ({self.why})" if self.why else self.verdict

    @property
    def sensitivity(self) -> str | None:
        """"robust" when the verdict is the same with the boundary at both ends of its CI, "sensitive to the
        boundary" (with the two verdicts) otherwise; None when not checked."""
        if self.at_ci_ends is None:
            return None
        (lo, v_lo), (hi, v_hi) = self.at_ci_ends
        if v_lo == v_hi == self.verdict:
            return "robust"
        return f"sensitive to the boundary ({v_lo} at step {lo}, {v_hi} at step {hi})"

    def markdown(self) -> str:
        robust = f" Boundary: {self.sensitivity}." if self.sensitivity else ""
        return (f"- **{self.key}. {self.claim}.** {self.measured}\n"
                f"  - Verdict: **{self.verdict_text}**.{robust} Rule: {self.rule}.")


def not_measured(key: str, why: str) -> Finding:
    """The finding ``key`` could not be evaluated on this data, and ``why``."""
    return Finding(key, "Not measured.", NOT_MEASURED, why)


# ------------------------------------------------------------------------------------------------ numbers


def fmt(x, digits: int = 3) -> str:
    """A number as the report writes it: "n/a" for None/NaN, integers with thousands separators, floats with
    ``digits`` decimals (scientific below 1e-3 and from 1e5)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    x = float(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def fmt_est(e: Estimate, digits: int = 3) -> str:
    """``0.123 [0.100, 0.150], n = 42`` (95% CI unless the estimate says otherwise)."""
    lvl = f"{round(e.level * 100)}% CI" if e.level != 0.95 else "CI"
    return f"{fmt(e.estimate, digits)} ({lvl} [{fmt(e.ci_low, digits)}, {fmt(e.ci_high, digits)}], n = {e.n:,})"


def ci_above(e: Estimate, value: float = 0.0) -> bool:
    return not math.isnan(e.ci_low) and e.ci_low > value


def ci_below(e: Estimate, value: float = 0.0) -> bool:
    return not math.isnan(e.ci_high) and e.ci_high < value


def direction_word(e: Estimate, want: str) -> str:
    """Why a CI check failed: 'CI includes 0' or 'opposite direction'."""
    if math.isnan(e.estimate) or math.isnan(e.ci_low):
        return "too few data for an interval"
    if (want == ">" and ci_below(e)) or (want == "<" and ci_above(e)):
        return "opposite direction, CI excludes 0"
    return "CI includes 0"


def check_all(*checks: tuple[str, Estimate, str]) -> tuple[bool, str]:
    """``(label, estimate, want)`` checks, ``want`` ">" (CI above 0) or "<" (CI below 0): whether all hold, and
    "label: why" for each that does not, joined by "; " ("" when all hold)."""
    failed = [f"{label}: {direction_word(e, want)}" for label, e, want in checks
              if not (ci_above(e) if want == ">" else ci_below(e))]
    return not failed, "; ".join(failed)


# ------------------------------------------------------------------------------------------------ findings


def finding_A(pol: pl.DataFrame, boundary, n_boot: int = 1000, seed: int = 0, source: str = "") -> Finding:
    """A, from ``polarity_entropy`` output (or the training log's, ``polarity_from_log``) and the boundary: the
    rising stage's mean H_neg − H_pos (bootstrap over steps) and the slope of that difference
    (``polarity_rates``); needs ≥ 3 rising steps with both.  ``source`` names where ``pol`` came from."""
    if boundary is None:
        return not_measured("A", "no stage boundary")
    b = int(boundary)
    wide = (pol.filter(pl.col("step") < b).pivot(on="polarity", index="step", values="entropy_token_mean")
            if pol.height else pl.DataFrame())
    if not {"negative", "positive"} <= set(wide.columns):
        return not_measured("A", "the rising stage lacks steps with both positive and negative samples")
    wide = wide.drop_nulls(["negative", "positive"]).sort("step")
    if wide.height < 3:
        return not_measured("A", f"{wide.height} rising-stage step(s) with both polarities; need ≥ 3")
    d = (wide["negative"] - wide["positive"]).to_numpy()
    level = bootstrap_ci(d, n_boot=n_boot, seed=seed)
    rates = polarity.polarity_rates(pol, b, n_boot=n_boot, seed=seed)
    r = rates.filter((pl.col("stage") == "rising") & (pl.col("polarity") == "negative-positive"))
    slope = Estimate(r["slope"][0], r["ci_low"][0], r["ci_high"][0], int(r["n"][0])) if r.height else \
        Estimate(float("nan"), float("nan"), float("nan"), 0)
    slopes = {p: rates.filter((pl.col("stage") == "rising") & (pl.col("polarity") == p)) for p in ("negative", "positive")}
    sl = "; ".join(f"{p} slope {fmt(t['slope'][0])} nats/step" for p, t in slopes.items() if t.height)
    measured = (("From " + source + ". " if source else "") +
                f"Rising stage (steps < {b}): H_neg − H_pos = {fmt_est(level)} nats (steps); slope of the difference "
                f"{fmt_est(slope, 4)} nats/step ({sl}).")
    ok, why = check_all(("level", level, ">"), ("slope", slope, "<"))
    return Finding("A", measured, AGREES if ok else DISAGREES, why)


def finding_B(tokens: pl.LazyFrame, vocab_lf: pl.LazyFrame | None, shift: pl.DataFrame | None, boundary,
              window: int = 3, n_boot: int = 1000, seed: int = 0) -> Finding:
    """B, from ``tokens``, the vocabulary and the ``token_shift`` table: the formal tokens' share in the rising
    stage's end window minus its start window (:func:`rising_windows`), and the mean entropy change of the
    support token types."""
    if vocab_lf is None:
        return not_measured("B", "the store has no vocab.parquet to classify token types")
    if shift is None or shift.height == 0:
        return not_measured("B", "no token-shift table (the rising stage has fewer than 2 steps)")
    start, end = rising_windows(table_steps(tokens), boundary, window)
    props = categories.category_proportions(tokens=tokens.filter(pl.col("step").is_in(start + end)), vocab=vocab_lf)
    props = props.with_columns(pl.col("step").is_in(start).alias("_start"))

    def counts(is_start: bool) -> tuple[int, int]:  # (formal tokens, tokens) in the start or the end window
        d = props.filter(pl.col("_start") == is_start)
        return int(d.filter(pl.col("category") == "formal")["n"].sum()), int(d["n"].sum())

    (k1, n1), (k0, n0) = counts(False), counts(True)
    rise = diff_proportions(k1, n1, k0, n0)
    cats = categories.classify_vocab(vocab=vocab_lf).select(pl.col("token_id").cast(shift["token_id"].dtype), "category")
    sup = shift.join(cats, on="token_id", how="left").filter(pl.col("category") == "support").drop_nulls("entropy_change")
    drop = bootstrap_ci(sup["entropy_change"].to_numpy(), n_boot=n_boot, seed=seed)
    measured = (f"Windows: steps {start} → {end}. Formal-token share {fmt(k0 / n0 if n0 else float('nan'))} → "
                f"{fmt(k1 / n1 if n1 else float('nan'))}, difference {fmt_est(rise)} (tokens). Support token types' "
                f"mean entropy change {fmt_est(drop)} nats (types).")
    ok, why = check_all(("formal share", rise, ">"), ("support entropy", drop, "<"))
    return Finding("B", measured, AGREES if ok else DISAGREES, why)


def finding_C(flags: pl.DataFrame, boundary, window: int = 3) -> Finding:
    """C, from ``defect_flags`` output: the share of responses with any defect in the last rising-stage window
    minus the first (Newcombe interval); needs ≥ 2 rising steps."""
    rising = rising_steps(flags["step"].unique().to_list(), boundary)
    if len(rising) < 2:
        return not_measured("C", f"the rising stage has {len(rising)} step(s); need ≥ 2")
    first, last = rising_windows(rising, None, window)

    def flagged(steps, col="any_defect") -> tuple[int, int]:  # (responses flagged, responses) in ``steps``
        d = flags.filter(pl.col("step").is_in(steps))
        return int(d[col].sum()), d.height

    (k1, n1), (k0, n0) = flagged(last), flagged(first)
    e = diff_proportions(k1, n1, k0, n0)
    per = ", ".join(f"{c.replace('_', ' ')} {fmt(flagged(first, c)[0] / n0)} → {fmt(flagged(last, c)[0] / n1)}"
                    for c in defects.DEFAULT_DEFECTS if c in flags.columns)
    measured = (f"Any defect: {fmt(k0 / n0)} (steps {first}, n = {n0}) → {fmt(k1 / n1)} (steps {last}, n = {n1}); "
                f"difference {fmt_est(e)} (responses). Per kind: {per}.")
    ok = ci_below(e)
    return Finding("C", measured, AGREES if ok else DISAGREES, "" if ok else direction_word(e, "<"))


def finding_D(dist: pl.DataFrame, stage: str | None) -> Finding:
    """D, from ``delta_p_distribution`` output, on ``stage`` (None: every row): the share of tokens with
    |Δp| < 1e-3, and among the others the share of increases in positive and of decreases in negative samples."""
    d = dist.filter(pl.col("stage") == stage) if stage else dist
    if d.height == 0:
        return not_measured("D", "no Δp rows")
    n = int(d["n"].sum())
    k_small = int(round(float((d["share_small"] * d["n"]).sum())))
    small = proportion(k_small, n)
    parts, oks = [], [small.estimate >= 0.99]
    for pol, want in (("positive", "share_increase"), ("negative", "share_decrease")):
        r = d.filter(pl.col("polarity") == pol)
        if r.height == 0:
            parts.append(f"no {pol} samples")
            oks.append(False)
            continue
        nn = int(r["n"].sum())
        up = int(round(float((r["share_increase"] * r["n"]).sum())))
        down = int(round(float((r["share_decrease"] * r["n"]).sum())))
        k = up if want == "share_increase" else down
        e = proportion(k, up + down)
        parts.append(f"{pol} samples ({nn:,} tokens): {'increases' if pol == 'positive' else 'decreases'} are "
                     f"{fmt_est(e)} of the |Δp| ≥ 1e-3 tokens")
        oks.append(ci_above(e, 0.5))
    measured = f"{'Plateau' if stage == 'plateau' else 'All steps'}: share with |Δp| < 1e-3 = {fmt_est(small, 4)}; " + "; ".join(parts) + "."
    ok = all(oks)
    why = "" if ok else ("little-change share below 0.99" if not oks[0] else "direction of the big updates")
    return Finding("D", measured, AGREES if ok else DISAGREES, why)


def finding_E(sig: pl.DataFrame, bins: pl.DataFrame, top_frac: float) -> Finding:
    """E, from ``significant_update_sets`` and ``update_by_entropy_bin`` output: the top-|Δp| tokens' entropy
    minus the rest's (Welch), and the Spearman correlation of bin entropy with bin gradient norm."""
    top = sig.filter(pl.col("set") == "top")
    if top.height == 0 or not top["n"][0]:
        return not_measured("E", "no significantly updated tokens")
    d = Estimate(top["diff_vs_rest"][0], top["ci_low"][0], top["ci_high"][0], int(sig.filter(pl.col("set") == "all")["n"][0]))
    b = bins.drop_nulls("mean_grad_norm")
    g = correlation(b["entropy_mean"].to_numpy(), b["mean_grad_norm"].to_numpy(), "spearman") if b.height else \
        Estimate(float("nan"), float("nan"), float("nan"), 0)
    dp = correlation(bins["entropy_mean"].to_numpy(), bins["mean_abs_delta_p"].to_numpy(), "spearman") \
        if "mean_abs_delta_p" in bins.columns else None
    measured = (f"Top-{top_frac:.1%} |Δp| tokens (n = {int(top['n'][0]):,}) have mean entropy "
                f"{fmt(top['entropy_mean'][0])} nats vs the rest: difference {fmt_est(d)}. Spearman over "
                f"{b.height} entropy bins: entropy vs gradient norm ρ = {fmt_est(g)}"
                + (f"; entropy vs mean |Δp| ρ = {fmt_est(dp)}" if dp is not None else "") + ".")
    ok, why = check_all(("entropy of updated tokens", d, ">"), ("gradient", g, ">"))
    return Finding("E", measured, AGREES if ok else DISAGREES, why)


def finding_F(cat: pl.DataFrame, stage: str | None) -> Finding:
    """F, from ``category_updates`` output on ``stage``: formal tokens have the largest mean |Δp| and more
    than their share of the significant updates (Wilson)."""
    d = cat.filter(pl.col("stage") == stage) if stage else cat
    if d.height == 0 or "formal" not in d["category"].to_list():
        return not_measured("F", "no formal-reasoning tokens in the updates")
    d = d.with_columns((pl.col("share_significant") * pl.col("n")).round().cast(pl.Int64).alias("_sig"))
    best = d.sort("mean_abs_delta_p", descending=True)["category"][0]
    f = d.filter(pl.col("category") == "formal")
    share = proportion(int(f["_sig"][0]), int(d["_sig"].sum()))
    tok_share = float(f["share_tokens"][0])
    ranks = ", ".join(f"{c} {fmt(v)}" for c, v in zip(d["category"], d["mean_abs_delta_p"]))
    measured = (f"Mean |Δp| by category: {ranks} (largest: {best}). Formal tokens are {fmt(tok_share)} of tokens "
                f"and {fmt_est(share)} of the significant updates.")
    ok = best == "formal" and ci_above(share, tok_share)
    why = "" if ok else ("largest mean |Δp| is " + best if best != "formal" else "formal not enriched among significant updates")
    return Finding("F", measured, AGREES if ok else DISAGREES, why)


def finding_G(ppl: pl.DataFrame, stage: str | None) -> Finding:
    """G, from ``ppl_bucket_updates`` output on ``stage``: the low-PPL bucket's share of the top-|Δp| tokens is
    above its share of all tokens (Wilson) and above the high-PPL bucket's share."""
    d = ppl.filter(pl.col("stage") == stage) if stage else ppl
    buckets = d["ppl_bucket"].to_list()
    if "low" not in buckets or "high" not in buckets:
        return not_measured("G", f"PPL buckets present: {buckets}; need low and high")
    n_top = int(d["n_top"].sum())
    low, high = d.filter(pl.col("ppl_bucket") == "low"), d.filter(pl.col("ppl_bucket") == "high")
    e = proportion(int(low["n_top"][0]), n_top)
    measured = (f"Of {n_top:,} top-|Δp| tokens, low-PPL samples hold {fmt_est(e)} (vs {fmt(low['share_tokens'][0])} of all "
                f"tokens; enrichment {fmt(low['enrichment'][0])}); high-PPL samples hold {fmt(high['share_top'][0])} "
                f"(vs {fmt(high['share_tokens'][0])}).")
    ok = ci_above(e, float(low["share_tokens"][0])) and float(low["share_top"][0]) > float(high["share_top"][0])
    return Finding("G", measured, AGREES if ok else DISAGREES, "" if ok else "low-PPL samples not over-represented")


def _intervention_pair(iv: pl.DataFrame | None, kind: str, better: str, worse: str, key: str) -> Finding:
    """``key`` from an interventions table: Δaccuracy of the ``kind`` group named with ``better`` minus that
    of the group named with ``worse`` must have a CI above 0 (the groups' CIs combined as normal)."""
    if iv is None:
        return not_measured(key, "no interventions table (run `entropy-lens intervene`)")
    d = iv.filter(pl.col("kind") == kind)
    got = {g: r for g, r in zip(d["group"].to_list(), d.iter_rows(named=True))}
    want_b = [g for g in got if better in g]
    want_w = [g for g in got if worse in g]
    if not want_b or not want_w:
        return not_measured(key, f"interventions table has no {kind} rows for groups containing {better!r} and {worse!r}")
    rb, rw = got[want_b[0]], got[want_w[0]]
    eb = Estimate(rb["delta_accuracy"], rb["ci_low"], rb["ci_high"], int(rb["n"]))
    ew = Estimate(rw["delta_accuracy"], rw["ci_low"], rw["ci_high"], int(rw["n"]))
    diff = diff_of_estimates(eb, ew)
    measured = (f"Δaccuracy {want_b[0]} {fmt_est(eb)}, {want_w[0]} {fmt_est(ew)}; difference {fmt_est(diff)}.")
    ok = ci_above(diff)
    return Finding(key, measured, AGREES if ok else DISAGREES, "" if ok else direction_word(diff, ">"))


def finding_H(iv: pl.DataFrame | None) -> Finding:
    """H: replacing high-entropy tokens hurts low-PPL responses less (kind ``ppl``: low − high > 0)."""
    return _intervention_pair(iv, "ppl", "low", "high", "H")


def finding_K(iv: pl.DataFrame | None) -> Finding:
    """K: replacing high-entropy tokens at the end hurts less than at the beginning (end − begin > 0)."""
    return _intervention_pair(iv, "position", "end", "begin", "K")


def finding_J(u: pl.DataFrame) -> Finding:
    """J, from ``u_shape_summary`` output: both ends' mean entropy above the middle's (polarity "all")."""
    a = u.filter(pl.col("polarity") == "all")
    if a.height == 0:
        return not_measured("J", "no responses with tokens in the first, middle and last 10%")
    est = {r["contrast"]: Estimate(r["estimate"], r["ci_low"], r["ci_high"], int(r["n"])) for r in a.iter_rows(named=True)}
    s, e = est["start-middle"], est["end-middle"]
    measured = f"Start − middle {fmt_est(s)} nats; end − middle {fmt_est(e)} nats (responses)."
    ok, why = check_all(("start", s, ">"), ("end", e, ">"))
    return Finding("J", measured, AGREES if ok else DISAGREES, why)


def _compare_runs(key: str, runs: dict[str, pl.DataFrame], checks: list[tuple[str, str, str, str]],
                  from_step: int | None, n_boot: int = 1000, seed: int = 0) -> Finding:
    """``checks``: (run a, run b, metric, ">" or "<"): a − b must have a CI on that side of 0."""
    parts, oks, missing = [], [], []
    absent = sorted({r for a, b, _, _ in checks for r in (a, b) if r not in runs})
    if absent:
        missing.append("absent run(s): " + ", ".join(f"RUN/{r}" for r in absent))
    for a, b, metric, want in checks:
        if a not in runs or b not in runs:
            continue
        e = paired_step_diff(runs[a], runs[b], metric, from_step, n_boot, seed)
        if e.n == 0:
            missing.append(f"{metric} {a} − {b} (no shared steps with {metric})")
            continue
        ok = ci_above(e) if want == ">" else ci_below(e)
        oks.append(ok)
        parts.append(f"{metric} {a} − {b} = {fmt_est(e)}" + ("" if ok else f" [{direction_word(e, want)}]"))
    if not oks:
        return not_measured(key, "; ".join(missing))
    scope = f"steps ≥ {from_step}" if from_step is not None else "all steps"
    measured = f"Paired by step ({scope}): " + "; ".join(parts) + "."
    verdict = AGREES if all(oks) else DISAGREES
    why = f"partial: {'; '.join(missing)}" if missing else ""
    return Finding(key, measured, verdict, why)


def _share_text(label: str, decomposition: pl.DataFrame, stage: str, axis: str, group: str, measure: str) -> str:
    e = attribution.stage_share(decomposition, stage, axis, group, measure)
    return f"{label} {fmt_est(e)}" if e is not None else f"{label} n/a"


def finding_N(predicted: pl.DataFrame | None, realized: pl.DataFrame | None = None) -> Finding:
    """N, from :func:`~entropy_lens.analysis.attribution.decompose` of ``dH_pred`` (and of ``dH_real`` when
    given, shown beside it): the negative samples' share of the rising stage's net entropy change."""
    if predicted is None:
        return not_measured("N", "no entropy account (needs trained tokens with sum_p2_logp: store schema 2)")
    share = attribution.stage_share(predicted, "rising", "polarity", "negative", "net")
    if share is None:
        return not_measured("N", "no rising stage (no stage boundary) or no negative samples in it")
    rows = predicted.filter((pl.col("stage") == "rising") & (pl.col("axis") == "polarity"))
    net = float(rows["net"].sum())
    measured = (f"Rising stage, predicted: net ΔH {fmt(net)} (per unit step size); negative samples' share of it "
                f"{fmt_est(share)} (tokens)")
    if realized is not None:
        measured += "; " + _share_text("realized share", realized, "rising", "polarity", "negative", "net")
    ok = net < 0 and ci_above(share, 0.5)
    why = "" if ok else ("the rising stage's predicted net ΔH is not negative" if net >= 0
                         else f"share CI not above 0.5 ({fmt(share.ci_low)})")
    return Finding("N", measured + ".", AGREES if ok else DISAGREES, why)


def finding_O(predicted: pl.DataFrame | None, realized: pl.DataFrame | None = None) -> Finding:
    """O, from the ``dH_pred`` decomposition: the share of the plateau's Σ|ΔH| in each step's top entropy
    quintile (``entropy_quantile`` "q5")."""
    if predicted is None:
        return not_measured("O", "no entropy account (needs trained tokens with sum_p2_logp: store schema 2)")
    share = attribution.stage_share(predicted, "plateau", "entropy_quantile", f"q{attribution.ENTROPY_QUANTILES}", "abs")
    if share is None:
        return not_measured("O", "no plateau (no stage boundary) with accounted tokens")
    measured = f"Plateau, predicted: the top-20%-entropy tokens' share of Σ|ΔH| {fmt_est(share)} (tokens)"
    if realized is not None:
        measured += "; " + _share_text("realized share", realized, "plateau", "entropy_quantile",
                                       f"q{attribution.ENTROPY_QUANTILES}", "abs")
    ok = ci_above(share, 0.5)
    return Finding("O", measured + ".", AGREES if ok else DISAGREES, "" if ok else f"share CI not above 0.5 ({fmt(share.ci_low)})")


def finding_I(runs: dict[str, pl.DataFrame], from_step: int | None, **kw) -> Finding:
    """I, from the training logs (``steps`` tables) by run name, paired by step from ``from_step`` on."""
    return _compare_runs("I", runs, [("ppl", "ppl-high", "eval_accuracy", ">"), ("ppl", "ppl-high", "entropy", "<")],
                         from_step, **kw)


def finding_L(runs: dict[str, pl.DataFrame], from_step: int | None, **kw) -> Finding:
    """L, from the training logs by run name (``position``, ``position-begin``, ``baseline``)."""
    return _compare_runs("L", runs, [
        ("position", "position-begin", "eval_accuracy", ">"), ("position", "baseline", "eval_accuracy", ">"),
        ("position", "baseline", "entropy", ">"), ("position-begin", "baseline", "entropy", ">"),
        ("position", "baseline", "response_length", ">")], from_step, **kw)


def finding_M(runs: dict[str, pl.DataFrame], from_step: int | None, **kw) -> Finding:
    """M, from the training logs by run name (``ppl``, ``position`` against ``baseline``)."""
    return _compare_runs("M", runs, [("ppl", "baseline", "entropy", ">"), ("position", "baseline", "entropy", ">")],
                         from_step, **kw)
