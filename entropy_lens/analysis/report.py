"""``entropy-lens report``: every analysis a store's data supports, as tables, figures and ``REPORT.md``.

:func:`build_report` opens a store (a ``collect`` sweep, a ``train`` run, or a sweep plus the training run it
came from), finds the rising → plateau boundary, runs each analysis of PAPER §2 whose inputs exist, and
writes under ``out_dir``::

    REPORT.md          boundary (detector or manual), one section per analysis with numbers, n and CIs,
                       the paper's findings with verdicts, and a "Skipped" section saying what was not run and why
    tables/NAME.csv    one table per analysis (the analysis function's output, unchanged)
    figures/NAME.png   the figures (and .pdf), drawn by :mod:`entropy_lens.plots`

Nothing here computes an analysis itself: the tables come from :mod:`entropy_lens.analysis` functions.
What this module adds is *verdicts* — the :func:`finding_*` functions turn analysis tables into a
:class:`Finding` (what the data shows, with an interval, and whether it agrees with the paper) under rules
stated in :data:`RULES`.  ``figures/findings.py`` reuses them for the multi-run findings (I, L, methods).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from entropy_lens.analysis import categories, defects, instance, polarity, position, stages, updates, vocab
from entropy_lens.analysis.stats import Estimate, bootstrap_ci, correlation, wilson_ci
from entropy_lens.errors import UserError

AGREES, DISAGREES, NOT_MEASURED = "agrees", "does not agree", "not measured"

#: The paper's findings (PAPER §0, §2), keyed by letter; "M" = the methods keep entropy higher late (§3).
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
}


# ------------------------------------------------------------------------------------------------ results


@dataclass
class Finding:
    """One paper finding evaluated on this data: ``verdict`` ∈ {agrees, does not agree, not measured}."""

    key: str
    measured: str
    verdict: str
    why: str = ""

    @property
    def claim(self) -> str:
        return CLAIMS[self.key]

    @property
    def rule(self) -> str:
        return RULES[self.key]

    @property
    def verdict_text(self) -> str:
        return f"{self.verdict} ({self.why})" if self.why else self.verdict

    def markdown(self) -> str:
        return (f"- **{self.key}. {self.claim}.** {self.measured}\n"
                f"  - Verdict: **{self.verdict_text}**. Rule: {self.rule}.")


def not_measured(key: str, why: str) -> Finding:
    return Finding(key, "Not measured.", NOT_MEASURED, why)


@dataclass
class Section:
    """One analysis of the report: its summary lines (markdown), table files and figure files."""

    key: str
    title: str
    lines: list[str] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


@dataclass
class Report:
    """What :func:`build_report` wrote and found."""

    out_dir: Path
    report_path: Path
    store: Path
    train_run: Path | None
    boundary: stages.StageBoundary | None
    sections: list[Section]
    findings: list[Finding]
    skipped: list[tuple[str, str]]
    tables: dict[str, pl.DataFrame]

    @property
    def files(self) -> list[Path]:
        return [self.report_path] + [p for s in self.sections for p in (*s.tables, *s.figures)]

    def __str__(self) -> str:
        nf = sum(1 for s in self.sections for p in s.figures if p.suffix == ".png")
        return (f"report: {self.report_path} ({len(self.sections)} analyses, {len(self.skipped)} skipped, "
                f"{sum(len(s.tables) for s in self.sections)} tables, {nf} figures under {self.out_dir})")


# ------------------------------------------------------------------------------------------------ numbers


def fmt(x, digits: int = 3) -> str:
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


def proportion(k: int, n: int, level: float = 0.95) -> Estimate:
    lo, hi = wilson_ci(int(k), int(n), level)
    return Estimate(k / n if n else float("nan"), lo, hi, int(n), level)


def diff_proportions(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> Estimate:
    """``k1/n1 − k2/n2`` with Newcombe's hybrid score interval (from the two Wilson intervals)."""
    if not n1 or not n2:
        return Estimate(float("nan"), float("nan"), float("nan"), int(n1 + n2), level)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_ci(k1, n1, level)
    l2, u2 = wilson_ci(k2, n2, level)
    d = p1 - p2
    return Estimate(d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2), int(n1 + n2), level)


def diff_of_estimates(a: Estimate, b: Estimate) -> Estimate:
    """``a − b`` for two independent estimates with (symmetric, normal) CIs at the same level."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + a.level / 2))
    if any(math.isnan(x) for x in (a.ci_low, a.ci_high, b.ci_low, b.ci_high)):
        return Estimate(a.estimate - b.estimate, float("nan"), float("nan"), a.n + b.n, a.level)
    se = math.hypot((a.ci_high - a.ci_low) / (2 * z), (b.ci_high - b.ci_low) / (2 * z))
    d = a.estimate - b.estimate
    return Estimate(d, d - z * se, d + z * se, a.n + b.n, a.level)


def paired_step_diff(a: pl.DataFrame, b: pl.DataFrame, metric: str, from_step: int | None = None,
                     n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Mean over shared steps (≥ ``from_step``) of ``a[metric] − b[metric]``, bootstrap CI over steps."""
    if metric not in a.columns or metric not in b.columns:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    j = (a.select("step", pl.col(metric).cast(pl.Float64).alias("_a"))
         .join(b.select("step", pl.col(metric).cast(pl.Float64).alias("_b")), on="step")
         .drop_nulls().filter(pl.col("_a").is_not_nan() & pl.col("_b").is_not_nan()))
    if from_step is not None:
        j = j.filter(pl.col("step") >= from_step)
    return bootstrap_ci((j["_a"] - j["_b"]).to_numpy(), n_boot=n_boot, seed=seed)


def late_start(steps: pl.DataFrame, boundary) -> int | None:
    """First step of "late training": the boundary when known, else the median step."""
    if boundary is not None:
        return int(getattr(boundary, "step", boundary))
    s = steps["step"].to_numpy() if steps.height else np.array([])
    return int(np.median(s)) if s.size else None


# ------------------------------------------------------------------------------------------------ findings


def finding_A(pol: pl.DataFrame, boundary, n_boot: int = 1000, seed: int = 0) -> Finding:
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
    measured = (f"Rising stage (steps < {b}): H_neg − H_pos = {fmt_est(level)} nats (steps); slope of the difference "
                f"{fmt_est(slope, 4)} nats/step ({sl}).")
    ok = ci_above(level) and ci_below(slope)
    why = "" if ok else "; ".join(x for x in (
        None if ci_above(level) else f"level: {direction_word(level, '>')}",
        None if ci_below(slope) else f"slope: {direction_word(slope, '<')}") if x)
    return Finding("A", measured, AGREES if ok else DISAGREES, why)


def finding_B(tokens: pl.LazyFrame, vocab_lf: pl.LazyFrame | None, shift: pl.DataFrame | None, boundary,
              window: int = 3, n_boot: int = 1000, seed: int = 0) -> Finding:
    if vocab_lf is None:
        return not_measured("B", "the store has no vocab.parquet to classify token types")
    if shift is None or shift.height == 0:
        return not_measured("B", "no token-shift table (the rising stage has fewer than 2 steps)")
    start, end = vocab._windows(tokens, None if boundary is None else int(boundary), window)
    props = categories.category_proportions(tokens=tokens.filter(pl.col("step").is_in(start + end)), vocab=vocab_lf)
    props = props.with_columns(pl.col("step").is_in(start).alias("_start"))
    def counts(is_start: bool) -> tuple[int, int]:
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
    ok = ci_above(rise) and ci_below(drop)
    why = "" if ok else "; ".join(x for x in (
        None if ci_above(rise) else f"formal share: {direction_word(rise, '>')}",
        None if ci_below(drop) else f"support entropy: {direction_word(drop, '<')}") if x)
    return Finding("B", measured, AGREES if ok else DISAGREES, why)


def finding_C(flags: pl.DataFrame, boundary, window: int = 3) -> Finding:
    all_steps = sorted(flags["step"].unique().to_list())
    rising = [s for s in all_steps if boundary is None or s < int(boundary)]
    if len(rising) < 2:
        return not_measured("C", f"the rising stage has {len(rising)} step(s); need ≥ 2")
    w = max(1, min(window, len(rising) // 2))
    first, last = rising[:w], rising[-w:]
    def kn(steps, col="any_defect"):
        d = flags.filter(pl.col("step").is_in(steps))
        return int(d[col].sum()), d.height
    (k1, n1), (k0, n0) = kn(last), kn(first)
    e = diff_proportions(k1, n1, k0, n0)
    per = ", ".join(f"{c.replace('_', ' ')} {fmt(kn(first, c)[0] / n0)} → {fmt(kn(last, c)[0] / n1)}"
                    for c in defects.DEFAULT_DEFECTS if c in flags.columns)
    measured = (f"Any defect: {fmt(k0 / n0)} (steps {first}, n = {n0}) → {fmt(k1 / n1)} (steps {last}, n = {n1}); "
                f"difference {fmt_est(e)} (responses). Per kind: {per}.")
    ok = ci_below(e)
    return Finding("C", measured, AGREES if ok else DISAGREES, "" if ok else direction_word(e, "<"))


def finding_D(dist: pl.DataFrame, stage: str | None) -> Finding:
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
    ok = ci_above(d) and ci_above(g)
    why = "" if ok else "; ".join(x for x in (
        None if ci_above(d) else f"entropy of updated tokens: {direction_word(d, '>')}",
        None if ci_above(g) else f"gradient: {direction_word(g, '>')}") if x)
    return Finding("E", measured, AGREES if ok else DISAGREES, why)


def finding_F(cat: pl.DataFrame, stage: str | None) -> Finding:
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
    return _intervention_pair(iv, "ppl", "low", "high", "H")


def finding_K(iv: pl.DataFrame | None) -> Finding:
    return _intervention_pair(iv, "position", "end", "begin", "K")


def finding_J(u: pl.DataFrame) -> Finding:
    a = u.filter(pl.col("polarity") == "all")
    if a.height == 0:
        return not_measured("J", "no responses with tokens in the first, middle and last 10%")
    est = {r["contrast"]: Estimate(r["estimate"], r["ci_low"], r["ci_high"], int(r["n"])) for r in a.iter_rows(named=True)}
    s, e = est["start-middle"], est["end-middle"]
    measured = f"Start − middle {fmt_est(s)} nats; end − middle {fmt_est(e)} nats (responses)."
    ok = ci_above(s) and ci_above(e)
    why = "" if ok else "; ".join(x for x in (
        None if ci_above(s) else f"start: {direction_word(s, '>')}",
        None if ci_above(e) else f"end: {direction_word(e, '>')}") if x)
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


def finding_I(runs: dict[str, pl.DataFrame], from_step: int | None, **kw) -> Finding:
    return _compare_runs("I", runs, [("ppl", "ppl-high", "eval_accuracy", ">"), ("ppl", "ppl-high", "entropy", "<")],
                         from_step, **kw)


def finding_L(runs: dict[str, pl.DataFrame], from_step: int | None, **kw) -> Finding:
    return _compare_runs("L", runs, [
        ("position", "position-begin", "eval_accuracy", ">"), ("position", "baseline", "eval_accuracy", ">"),
        ("position", "baseline", "entropy", ">"), ("position-begin", "baseline", "entropy", ">"),
        ("position", "baseline", "response_length", ">")], from_step, **kw)


def finding_M(runs: dict[str, pl.DataFrame], from_step: int | None, **kw) -> Finding:
    return _compare_runs("M", runs, [("ppl", "baseline", "entropy", ">"), ("position", "baseline", "entropy", ">")],
                         from_step, **kw)


# ------------------------------------------------------------------------------------------------ the report


def read_interventions(path: Path) -> pl.DataFrame:
    """Read an interventions table (columns: kind, group, n, accuracy_before, accuracy_after, delta_accuracy,
    ci_low, ci_high); a malformed one is a :class:`UserError`."""
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path}: unreadable interventions table ({e})") from None
    need = ["kind", "group", "n", "delta_accuracy", "ci_low", "ci_high"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise UserError(f"{path}: interventions table lacks column(s) {', '.join(missing)}")
    return df


def _is_empty(lf: pl.LazyFrame | None) -> bool:
    return lf is None or lf.select(pl.len()).collect().item() == 0


def _open(path, what: str):
    import entropy_lens

    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} {p}: no such directory")
    return entropy_lens.open(p)


def detect_boundary(curves: pl.DataFrame, boundary: int | None = None, detector: str = "knee"):
    """The stage boundary, or ``(None, reason)`` when the curves are too short: returns ``(boundary, reason)``."""
    if boundary is not None:
        return stages.detect_stage_boundary(curves, boundary=int(boundary)), ""
    stages.STAGE_DETECTORS.get(detector)  # unknown names fail loudly, not as a skip
    try:
        return stages.detect_stage_boundary(curves, detector), ""
    except UserError as e:
        return None, str(e)


def update_stage(updates_lf: pl.LazyFrame | None, boundary) -> tuple[str | None, str]:
    """Stage for the plateau-stage Δp analyses (PAPER §2.1 D–F): ``"plateau"`` when the plateau has Δp rows,
    else ``None`` (all steps); with a sentence saying which."""
    if boundary is None:
        return None, "all steps (no stage boundary)"
    if updates_lf is None:
        return None, "all steps (no Δp)"
    b = int(boundary)
    if updates_lf.filter(pl.col("step") >= b).select(pl.len()).collect().item():
        return "plateau", f"plateau steps (≥ {b})"
    return None, (f"all steps: the plateau (steps ≥ {b}) has no Δp rows (the last checkpoint has no next one "
                  "to score it)")


class _Writer:
    def __init__(self, out: Path, draw: bool):
        self.out, self.draw = out, draw
        self.tables: dict[str, pl.DataFrame] = {}

    def table(self, sec: Section, name: str, df: pl.DataFrame) -> pl.DataFrame:
        p = self.out / "tables" / f"{name}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        df.write_csv(p)
        sec.tables.append(p)
        self.tables[name] = df
        return df

    def figure(self, sec: Section, name: str, make) -> None:
        if not self.draw:
            return
        import matplotlib.pyplot as plt

        from entropy_lens.plots.style import save_figure

        fig = make()
        try:
            sec.figures += save_figure(fig, self.out / "figures" / name)
        finally:
            plt.close(fig)


def build_report(
    store_path,
    out_dir,
    *,
    boundary: int | None = None,
    detector: str = "knee",
    train_run=None,
    interventions=None,
    top_frac: float = 0.01,
    entropy_bins: int = 10,
    position_bins: int = 20,
    window: int = 3,
    n_boot: int = 1000,
    seed: int = 0,
    draw_figures: bool = True,
) -> Report:
    """Run every analysis ``store_path``'s data supports; write tables, figures and REPORT.md to ``out_dir``.

    ``train_run``: the training run's store (``entropy-lens train --out RUN``) whose ``steps.parquet`` gives the
    training curves and the stage boundary while the Δp analyses come from ``store_path`` (its sweep).
    ``boundary``: manual stage boundary (first plateau step); otherwise the registered ``detector``.
    ``interventions``: an interventions Parquet table; default ``STORE/interventions.parquet`` or the one in
    the store's parent folder when present.  ``top_frac``: the per-step top-x% |Δp| that counts as a
    significant update (PAPER §1.7).
    """
    store_path = Path(store_path)
    out = Path(out_dir)
    store = _open(store_path, "store")
    train = _open(train_run, "--train-run") if train_run is not None else None
    if train is not None and train.manifest.get("kind") != "train":
        raise UserError(f"--train-run {train_run}: a {train.manifest.get('kind')!r} store, expected a training run "
                        "(`entropy-lens train --out RUN`)")
    if not 0 < top_frac <= 1:
        raise UserError(f"--top-frac {top_frac}: must be in (0, 1]")
    kind = store.manifest.get("kind", "?")
    tokens, samples = store.tokens, store.samples
    if _is_empty(samples) or _is_empty(tokens):
        raise UserError(f"{store_path}: the store has no completed steps; run `entropy-lens collect` (or train) first")
    steps_lf = train.steps if train is not None else store.steps
    vocab_lf = store.vocab if store.vocab is not None else (train.vocab if train is not None else None)
    has_updates = not _is_empty(store.updates)
    upd = store.updates if has_updates else None
    out.mkdir(parents=True, exist_ok=True)
    w = _Writer(out, draw_figures)
    sections: list[Section] = []
    skipped: list[tuple[str, str]] = []
    found: dict[str, Finding] = {}
    from entropy_lens.plots import instance as pinst
    from entropy_lens.plots import methods as pmeth
    from entropy_lens.plots import position as ppos
    from entropy_lens.plots import stages as pst
    from entropy_lens.plots import updates as pupd

    # -- stage boundary and Fig. 1
    sec = Section("stages", "Stage curves and the rising → plateau boundary (PAPER §1.6, Fig. 1)")
    steps_df = steps_lf.collect() if steps_lf is not None else None
    curves = w.table(sec, "stage_curves", stages.step_curves(tokens=tokens, samples=samples, steps=steps_lf))
    b, why = detect_boundary(curves, boundary, detector)
    src = "training log (steps.parquet)" if steps_lf is not None else "the store's own samples (no training log)"
    sec.lines.append(f"Curves from {src}: {curves.height} step(s), {fmt(curves['step'].min())}–{fmt(curves['step'].max())}.")
    if b is not None:
        how = "set manually" if b.detector == "manual" else f"detector `{b.detector}` (PAPER §1.6 [I])"
        sec.lines.append(f"Stage boundary s* = **{b.step}** ({how}); rising = steps < {b.step}, plateau = steps ≥ {b.step}.")
        if b.step == int(curves["step"].min()):
            sec.lines.append("The boundary is the first step: there is no rising stage in these curves.")
    else:
        sec.lines.append("No stage boundary: " + why + " (pass --boundary STEP to set one).")
        skipped.append(("stage split (rising vs plateau)", why + "; every analysis below pools all steps"))
    for col in ("entropy", "accuracy", "eval_accuracy"):
        if col in curves.columns and curves[col].drop_nulls().len():
            c = curves.drop_nulls(col)
            sec.lines.append(f"{col}: {fmt(c[col][0])} at step {c['step'][0]} → {fmt(c[col][-1])} at step {c['step'][-1]}.")
    w.figure(sec, "fig1_entropy_accuracy", lambda: pst.plot_entropy_accuracy(curves, boundary=b))
    sections.append(sec)
    bstep = None if b is None else b.step

    # -- training curves
    if steps_df is not None and steps_df.height:
        sec = Section("training", "Training curves (steps.parquet)")
        metrics = [m for m in ("eval_accuracy", "accuracy", "entropy", "entropy_pos", "entropy_neg", "response_length")
                   if m in steps_df.columns and steps_df[m].drop_nulls().len()]
        w.table(sec, "training_steps", steps_df)
        sec.lines.append(f"{steps_df.height} training steps; metrics: {', '.join(metrics) or 'none of the known ones'}.")
        panel = [m for m in ("eval_accuracy", "entropy", "response_length") if m in metrics]
        if panel:
            t = steps_df.select("step", *panel).with_columns(pl.lit("run").alias("run"))
            w.figure(sec, "training_curves", lambda: pmeth.plot_method_curves(t, metrics=panel, boundary=b))
        sections.append(sec)
    else:
        skipped.append(("training curves", f"no steps.parquet — this is a {kind} store"
                        + ("" if kind == "train" else "; pass --train-run RUN to take them from the training run")))

    # -- A. polarity entropy
    sec = Section("polarity", "A. Entropy of positive vs negative samples (PAPER §2.1 A, Fig. 2c)")
    pol = w.table(sec, "polarity_entropy", polarity.polarity_entropy(tokens=tokens, samples=samples))
    rates = w.table(sec, "polarity_rates", polarity.polarity_rates(pol, bstep, n_boot=n_boot, seed=seed))
    for r in rates.iter_rows(named=True):
        sec.lines.append(f"{r['stage']}, {r['polarity']}: slope {fmt_est(Estimate(r['slope'], r['ci_low'], r['ci_high'], r['n']), 4)} "
                         f"nats/step; {fmt(r['start'])} → {fmt(r['end'])} nats.")
    if steps_df is not None and {"entropy_pos", "entropy_neg"} <= set(steps_df.columns):
        sec.lines.append("The training log's entropy_pos/entropy_neg are in tables/training_steps.csv.")
    w.figure(sec, "fig2c_polarity_entropy", lambda: pst.plot_polarity_entropy(pol, boundary=b))
    found["A"] = finding_A(pol, b, n_boot, seed)
    sections.append(sec)

    # -- B. token shift
    shift = None
    try:
        shift = vocab.token_shift(tokens=tokens, vocab=vocab_lf, boundary=bstep, window=window)
    except UserError as e:
        skipped.append(("B. token-type shift", str(e)))
    if shift is not None:
        sec = Section("token_shift", "B. Token-type shift across the rising stage (PAPER §2.1 B, Fig. 2b)")
        w.table(sec, "token_shift", shift)
        top = w.table(sec, "token_shift_top", vocab.top_token_shifts(shift, n=15))
        for rk in ("entropy_drop", "freq_rise"):
            d = top.filter(pl.col("ranking") == rk).head(5)
            sec.lines.append(f"Top {rk.replace('_', ' ')}: " + ", ".join(
                f"{t!r} ({fmt(s)})" if t is not None else f"id {i} ({fmt(s)})"
                for t, i, s in zip(d["token"], d["token_id"], d["score"])) + ".")
        if vocab_lf is None:
            sec.lines.append("No vocab.parquet: token types are shown by id.")
        if top.height:
            w.figure(sec, "fig2b_token_shift", lambda: pst.plot_token_shift(top))
        sections.append(sec)
    found["B"] = finding_B(tokens, vocab_lf, shift, bstep, window, n_boot, seed)

    # -- C. defects
    sec = Section("defects", "C. Defective responses (PAPER §2.1 C, Fig. 2d)")
    flags = defects.defect_flags(samples=samples)
    dprop = w.table(sec, "defect_proportions", defects.defect_proportions(samples=samples))
    tot = flags.select([pl.col(c).mean() for c in (*defects.DEFAULT_DEFECTS, "any_defect")]).row(0, named=True)
    sec.lines.append(f"{flags.height:,} responses; overall shares: " + ", ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in tot.items()) + ".")
    w.figure(sec, "fig2d_defects", lambda: pst.plot_defect_proportions(dprop, boundary=b))
    found["C"] = finding_C(flags, bstep, window)
    sections.append(sec)

    # stage for the plateau-stage analyses: the plateau when it has Δp rows, else all steps
    ustage, ustage_note = update_stage(upd, bstep)
    bkw = dict(boundary=bstep, stage=ustage) if ustage else {}

    # -- D/E/F. updates
    no_upd = ("the store has no `updates` (run `entropy-lens collect CHECKPOINTS --out STORE` with at least two "
              "checkpoints and without --no-updates)")
    if kind == "train" and (store_path / "sweep").is_dir():
        no_upd += f"; a sweep exists: `entropy-lens report {store_path / 'sweep'} --train-run {store_path}`"
    if has_updates:
        sec = Section("delta_p", "D. Which tokens change probability (PAPER §2.1 D, Fig. 3a)")
        sec.lines.append(f"Δp = p_next − p per token; analyses use {ustage_note}.")
        dist = w.table(sec, "delta_p_distribution", updates.delta_p_distribution(tokens=tokens, updates=upd, samples=samples, boundary=bstep))
        hist = w.table(sec, "delta_p_histogram", updates.delta_p_histogram(tokens=tokens, updates=upd, samples=samples, boundary=bstep))
        for r in dist.iter_rows(named=True):
            sec.lines.append(f"{r['stage']}, {r['polarity']}: n = {r['n']:,}, mean Δp {fmt(r['mean_delta_p'])}, "
                             f"|Δp| < 1e-3: {fmt(r['share_small'], 4)}, increases {fmt(r['share_increase'], 4)}, "
                             f"decreases {fmt(r['share_decrease'], 4)}.")
        w.figure(sec, "fig3a_delta_p_histogram", lambda: pupd.plot_delta_p_histogram(hist, stage=ustage))
        found["D"] = finding_D(dist, ustage)
        sections.append(sec)
    else:
        skipped.append(("D–G. Δp analyses (Δp distribution, significant updates, categories, PPL buckets, position updates)", no_upd))
        for k in "DEFG":
            found[k] = not_measured(k, "no `updates` in the store")

    sec = Section("entropy_bins", "E. Updates and gradient norm by entropy bin (PAPER §2.1 E, Fig. 3b)")
    bins = w.table(sec, "entropy_bins", updates.update_by_entropy_bin(tokens=tokens, updates=upd, n_bins=entropy_bins,
                                                                      top_frac=top_frac, **bkw))
    g = correlation(bins["entropy_mean"].to_numpy(), bins["mean_grad_norm"].to_numpy(), "spearman")
    sec.lines.append(f"{bins.height} entropy quantile bins ({ustage_note if has_updates else 'all steps'}); "
                     f"Spearman(entropy, logit-gradient norm) = {fmt_est(g)} (bins).")
    if has_updates:
        sig = w.table(sec, "significant_updates", updates.significant_update_sets(
            tokens=tokens, updates=upd, samples=samples, top_frac=top_frac, **bkw))
        for r in sig.iter_rows(named=True):
            extra = "" if r["set"] == "all" else \
                f", entropy vs rest {fmt_est(Estimate(r['diff_vs_rest'], r['ci_low'], r['ci_high'], r['n']))}"
            sec.lines.append(f"set {r['set']}: n = {r['n']:,}, mean entropy {fmt(r['entropy_mean'])} nats, "
                             f"mean |Δp| {fmt(r['mean_abs_delta_p'])}{extra}.")
        found["E"] = finding_E(sig, bins, top_frac)
    w.figure(sec, "fig3b_entropy_bins", lambda: pupd.plot_entropy_bins(bins))
    sections.append(sec)

    if vocab_lf is not None:
        sec = Section("categories", "F. Semantic token categories (PAPER §1.8, §2.1 F, Fig. 3 category panel)")
        props = w.table(sec, "category_proportions", categories.category_proportions(tokens=tokens, vocab=vocab_lf, by=()))
        sec.lines.append("Token shares: " + ", ".join(f"{c} {fmt(p)}" for c, p in zip(props["category"], props["proportion"])) + ".")
        if has_updates:
            cat = w.table(sec, "category_updates", categories.category_updates(tokens=tokens, updates=upd, vocab=vocab_lf,
                                                                               top_frac=top_frac, **bkw))
            for r in cat.iter_rows(named=True):
                sec.lines.append(f"{r['stage']}, {r['category']}: n = {r['n']:,}, mean |Δp| {fmt(r['mean_abs_delta_p'])}, "
                                 f"share of tokens {fmt(r['share_tokens'])}, of significant updates {fmt(r['share_of_significant'])}.")
            w.figure(sec, "fig3c_categories", lambda: pupd.plot_category_updates(cat, stage=ustage))
            found["F"] = finding_F(cat, ustage)
        sections.append(sec)
    else:
        skipped.append(("F. semantic token categories", "the store has no vocab.parquet (token id → string)"))
        found["F"] = not_measured("F", "no vocab.parquet")

    # -- G. PPL buckets
    sec = Section("ppl", "G. Perplexity buckets (PAPER §1.4, §2.2 G, Fig. 4a)")
    pb = instance.ppl_buckets(samples=samples)
    acc = pb.join(samples.select("step", "prompt_id", "sample_id", "correct").collect(), on=["step", "prompt_id", "sample_id"])
    acc_t = w.table(sec, "ppl_bucket_accuracy", acc.group_by("ppl_bucket").agg(
        pl.len().alias("n_samples"), pl.col("correct").sum().alias("n_correct"),
        pl.col("correct").cast(pl.Float64).mean().alias("accuracy"), pl.col("w_ppl").mean().alias("w_ppl_mean")).sort("ppl_bucket"))
    sec.lines.append("Accuracy by group-z PPL bucket: " + ", ".join(
        f"{r['ppl_bucket']} {fmt_est(proportion(r['n_correct'], r['n_samples']))}" for r in acc_t.iter_rows(named=True)) + ".")
    if has_updates:
        ppl = w.table(sec, "ppl_bucket_updates", instance.ppl_bucket_updates(tokens=tokens, updates=upd, samples=samples,
                                                                            top_frac=top_frac, **bkw))
        for r in ppl.iter_rows(named=True):
            sec.lines.append(f"{r['stage']}, {r['ppl_bucket']} PPL: {r['n_tokens']:,} tokens ({fmt(r['share_tokens'])}), "
                             f"{r['n_top']:,} top-|Δp| ({fmt(r['share_top'])}), enrichment {fmt(r['enrichment'])}.")
        w.figure(sec, "fig4a_ppl_share", lambda: pinst.plot_ppl_bucket_share(ppl, stage=ustage))
        found["G"] = finding_G(ppl, ustage)
    sections.append(sec)

    # -- H/K. interventions
    iv_path = Path(interventions) if interventions is not None else next(
        (p for p in (store_path / "interventions.parquet", store_path.parent / "interventions.parquet") if p.is_file()), None)
    iv = None
    if iv_path is not None:
        if not iv_path.is_file():
            raise UserError(f"--interventions {iv_path}: no such file")
        iv = read_interventions(iv_path)
        sec = Section("interventions", "H/K. Token-replacement interventions (PAPER §2.2 H, §2.3 K, Figs. 4b, 5b)")
        w.table(sec, "interventions", iv)
        sec.lines.append(f"From {iv_path}.")
        for kind_ in ("ppl", "position"):
            d = iv.filter(pl.col("kind") == kind_)
            if d.height:
                w.figure(sec, f"fig{'4b' if kind_ == 'ppl' else '5b'}_intervention_{kind_}", lambda d=d: pinst.plot_intervention(d))
        sections.append(sec)
    else:
        skipped.append(("H/K. replacement interventions", "no interventions.parquet next to the store "
                        "(written by `entropy-lens intervene`; or pass --interventions PATH)"))
    found["H"], found["K"] = finding_H(iv), finding_K(iv)

    # -- J. position
    sec = Section("position", "J. Entropy by relative position (PAPER §2.3 J, Fig. 5a)")
    ebp = w.table(sec, "entropy_by_position", position.entropy_by_position(tokens=tokens, samples=samples, n_bins=position_bins))
    u = w.table(sec, "u_shape", position.u_shape_summary(tokens=tokens, samples=samples, n_boot=n_boot, seed=seed))
    for r in u.iter_rows(named=True):
        sec.lines.append(f"{r['polarity']}, {r['contrast']}: {fmt_est(Estimate(r['estimate'], r['ci_low'], r['ci_high'], r['n']))} nats.")
    ubp = None
    if has_updates:
        ubp = w.table(sec, "update_by_position", position.update_by_position(tokens=tokens, updates=upd, n_bins=position_bins,
                                                                            top_frac=top_frac, **bkw))
    w.figure(sec, "fig5a_position", lambda: ppos.plot_u_curve(ebp, ubp))
    found["J"] = finding_J(u)
    sections.append(sec)

    # -- advantages (training rollouts)
    adv_src = tokens if not _is_empty(tokens.filter(pl.col("advantage").is_not_null())) else (
        train.tokens if train is not None and not _is_empty(train.tokens.filter(pl.col("advantage").is_not_null())) else None)
    if adv_src is not None:
        sec = Section("advantage", "Advantages of the training rollouts (PAPER §1.1)")
        src_samples = samples if adv_src is tokens else train.samples
        sec.lines.append(f"From the rollouts of {'this store' if adv_src is tokens else f'the training run {train_run}'}; "
                         "polarity by correctness (PAPER §1.1: also record the sign of A).")
        a = pl.col("advantage").cast(pl.Float64)
        lf = adv_src.filter(a.is_not_null()).join(src_samples.select("step", "prompt_id", "sample_id", "correct"),
                                                  on=["step", "prompt_id", "sample_id"])
        lf = lf.with_columns(pl.when(pl.col("step") < bstep).then(pl.lit("rising")).otherwise(pl.lit("plateau")).alias("stage")
                             if bstep is not None else pl.lit("all").alias("stage"))
        adv = w.table(sec, "advantage_summary", lf.group_by("stage", "correct").agg(
            pl.len().alias("n_tokens"), a.mean().alias("mean_advantage"), a.abs().mean().alias("mean_abs_advantage"),
            (a > 0).mean().alias("share_positive"), (a < 0).mean().alias("share_negative"), (a == 0).mean().alias("share_zero"),
            (pl.col("shaped_advantage").cast(pl.Float64) - a).abs().mean().alias("mean_abs_shaping"),
        ).sort("stage", "correct").collect())
        for r in adv.iter_rows(named=True):
            sec.lines.append(f"{r['stage']}, {'positive' if r['correct'] else 'negative'} samples: {r['n_tokens']:,} tokens, "
                             f"A > 0 {fmt(r['share_positive'])}, A < 0 {fmt(r['share_negative'])}, A = 0 {fmt(r['share_zero'])}, "
                             f"mean |A| {fmt(r['mean_abs_advantage'])}, mean |Ã − A| {fmt(r['mean_abs_shaping'])}.")
        sections.append(sec)
    else:
        skipped.append(("advantage analyses", "no advantage column with values (a sweep's rollouts are not training "
                        "rollouts; pass --train-run RUN or report on the training run's store)"))

    findings = [found[k] for k in sorted(found)]
    rep = Report(out, out / "REPORT.md", store_path, Path(train_run) if train_run else None, b, sections, findings, skipped, w.tables)
    _write_markdown(rep, store)
    return rep


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


def _write_markdown(rep: Report, store) -> None:
    m = store.manifest
    settings = m.get("settings", {})
    lines = [f"# entropy-lens report: `{rep.store}`", ""]
    lines.append(f"- Store kind: **{m.get('kind')}**, schema v{m.get('schema_version')}, toolkit {m.get('toolkit_version', '?')}; "
                 f"steps {store.completed_steps}.")
    if rep.train_run:
        lines.append(f"- Training curves and boundary from the training run `{rep.train_run}`.")
    keep = {k: settings[k] for k in ("dataset", "samples_per_prompt", "max_new_tokens", "temperature", "entropy_temperature", "top_p") if k in settings}
    if keep:
        lines.append("- Settings: " + ", ".join(f"{k} = {v}" for k, v in keep.items()) + ".")
    if rep.boundary is not None:
        b = rep.boundary
        how = "manual (--boundary)" if b.detector == "manual" else f"detector `{b.detector}`"
        lines.append(f"- **Stage boundary: step {b.step}** ({how}). Rising = steps < {b.step}; plateau = steps ≥ {b.step}.")
    else:
        lines.append("- **Stage boundary: none** (see Skipped).")
    lines.append("- Intervals are 95% CIs (bootstrap, Wilson or Welch as stated in each rule); n counts the unit named.")
    lines += ["", "## Findings", "", "Verdicts follow the rules stated under each finding. A finding this run does not "
              "reproduce is reported as such.", ""]
    lines += [f.markdown() for f in rep.findings]
    for s in rep.sections:
        lines += ["", f"## {s.title}", ""]
        lines += [f"- {x}" for x in s.lines]
        if s.figures:
            lines.append("")
            lines += [f"![{p.stem}]({_rel(p, rep.out_dir)})" for p in s.figures if p.suffix == ".png"]
            lines.append("Figures: " + ", ".join(f"[{p.name}]({_rel(p, rep.out_dir)})" for p in s.figures))
        if s.tables:
            lines.append("Tables: " + ", ".join(f"[{p.name}]({_rel(p, rep.out_dir)})" for p in s.tables))
    lines += ["", "## Skipped", ""]
    lines += [f"- **{name}**: {why}." for name, why in rep.skipped] or ["- Nothing: every analysis ran."]
    rep.report_path.write_text("\n".join(lines) + "\n")
