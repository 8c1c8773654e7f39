"""The report's sections: one registered function per analysis, in registration order.

Each section function takes the :class:`SectionInputs` (the run's :class:`~entropy_lens.analysis.context.RunView`,
the :class:`ReportSettings` and the :class:`~entropy_lens.report.document.SectionFiles` that write tables and
figures) and returns an :class:`Outcome`: its :class:`~entropy_lens.report.document.Section`, or none with the
reason it was skipped, and the paper findings it decides (:mod:`entropy_lens.analysis.findings`).  Nothing here
computes an analysis: the tables come from :mod:`entropy_lens.analysis`, the figures from
:mod:`entropy_lens.plots`.  The Δp sections use the run's Δp scope (the plateau when it has Δp rows).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl

from entropy_lens.analysis import (
    attribution,
    categories,
    defects,
    instance,
    polarity,
    position,
    stages,
    updates,
    vocab,
)
from entropy_lens.analysis.context import RunView, read_interventions
from entropy_lens.analysis.findings import (
    NOT_MEASURED,
    Finding,
    finding_A,
    finding_B,
    finding_C,
    finding_D,
    finding_E,
    finding_F,
    finding_G,
    finding_H,
    finding_J,
    finding_K,
    finding_N,
    finding_O,
    fmt,
    fmt_est,
    not_measured,
)
from entropy_lens.analysis.frames import SAMPLE_KEY, stage_expr
from entropy_lens.analysis.stats import Estimate, correlation, proportion
from entropy_lens.errors import UserError
from entropy_lens.plots import attribution as attribution_plots
from entropy_lens.plots import instance as instance_plots
from entropy_lens.plots import methods as method_plots
from entropy_lens.plots import position as position_plots
from entropy_lens.plots import stages as stage_plots
from entropy_lens.plots import updates as update_plots
from entropy_lens.registry import Registry
from entropy_lens.report.document import Section, SectionFiles

NO_UPDATES = "no `updates` in the store"


@dataclass(frozen=True)
class ReportSettings:
    """The report's analysis settings (``entropy-lens report`` flags of the same names)."""

    top_frac: float = 0.01  # per-step top fraction of |Δp| that counts as a significant update (paper-notes §1.7)
    entropy_bins: int = 10
    position_bins: int = 20
    window: int = 3  # steps in the start / end windows of the rising stage
    n_boot: int = 1000
    seed: int = 0
    interventions: str | Path | None = None  # default: interventions.parquet in the store or its parent

    def check(self) -> None:
        if not 0 < self.top_frac <= 1:
            raise UserError(f"--top-frac {self.top_frac}: must be in (0, 1]")


@dataclass
class SectionInputs:
    view: RunView
    settings: ReportSettings
    files: SectionFiles


@dataclass
class Outcome:
    """What one section gives the report: its section (None when skipped), (analysis, why) skips, findings."""

    section: Section | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


SECTIONS: Registry = Registry("report section")
ORDER: list[str] = []  # registration order = the order of the report's sections (the registry sorts its names)
#: sections whose findings depend on where the stage boundary is: they are run again with the boundary at
#: both ends of its 95% interval, to say whether each verdict survives that uncertainty
STAGE_CONDITIONED: list[str] = []


def register_section(name: str, stage_conditioned: bool = False) -> Callable:
    """Register ``fn(inputs: SectionInputs) -> Outcome`` as the report section ``name``, after the others;
    ``stage_conditioned``: its findings depend on the stage boundary (listed in :data:`STAGE_CONDITIONED`)."""
    def register(fn: Callable) -> Callable:
        SECTIONS.register(name)(fn)
        ORDER.append(name)
        if stage_conditioned:
            STAGE_CONDITIONED.append(name)
        return fn

    return register


def _has_rows(lf: pl.LazyFrame) -> bool:
    return lf.select(pl.len()).collect().item() > 0


def scoped_delta_p(view: RunView, top_frac: float) -> dict:
    """The arguments every plateau-stage Δp analysis takes: tokens and updates by step partition, ``top_frac``
    and the run's Δp scope (``boundary=``, ``stage=``; none for all steps)."""
    return dict(tokens=view.tokens_by_step, updates=view.updates_by_step, top_frac=top_frac,
                **view.delta_p_scope.kwargs)


# ------------------------------------------------------------------------------------------------ sections


@register_section("stages")
def stages_section(inputs: SectionInputs) -> Outcome:
    view, files = inputs.view, inputs.files
    section = Section("stages", "Stage curves and the rising → plateau boundary (paper-notes §1.6, Fig. 1)")
    curves = files.table(section, "stage_curves", view.curves)
    boundary, out = view.boundary, Outcome(section)
    src = "training log (steps.parquet)" if view.steps is not None else "the store's own samples (no training log)"
    section.lines.append(f"Curves from {src}: {curves.height} step(s), {fmt(curves['step'].min())}–{fmt(curves['step'].max())}.")
    if boundary is not None:
        how = "set manually" if boundary.detector == "manual" else f"detector `{boundary.detector}` (paper-notes §1.6 [I])"
        ci = f", 95% CI {boundary.ci[0]}–{boundary.ci[1]}" if boundary.ci else ""
        section.lines.append(f"Stage boundary s* = **{boundary.step}** ({how}{ci}); rising = steps < {boundary.step}, "
                             f"plateau = steps ≥ {boundary.step}.")
        if boundary.detector != "manual":
            section.lines.append(stages.boundary_paragraph(stages.boundary_summary(view.curves, boundary)))
        if boundary.step == int(curves["step"].min()):
            section.lines.append("The boundary is the first step: there is no rising stage in these curves.")
    else:
        section.lines.append("No stage boundary: " + view.boundary_reason + " (pass --boundary STEP to set one).")
        out.skipped.append(("stage split (rising vs plateau)", view.boundary_reason + "; every analysis below pools all steps"))
    for col in ("entropy", "accuracy", "eval_accuracy"):
        if col in curves.columns and curves[col].drop_nulls().len():
            c = curves.drop_nulls(col)
            section.lines.append(f"{col}: {fmt(c[col][0])} at step {c['step'][0]} → {fmt(c[col][-1])} at step {c['step'][-1]}.")
    files.figure(section, "fig1_entropy_accuracy", lambda: stage_plots.plot_entropy_accuracy(
        curves, boundary=view.boundary_step, boundary_ci=boundary.ci if boundary is not None else None))
    return out


@register_section("training")
def training_section(inputs: SectionInputs) -> Outcome:
    view, files = inputs.view, inputs.files
    steps_df = view.steps_table
    if steps_df is None or not steps_df.height:
        return Outcome(skipped=[("training curves", f"no steps.parquet — this is a {view.kind} store" + (
            "" if view.kind == "train" else "; pass --train-run RUN to take them from the training run"))])
    section = Section("training", "Training curves (steps.parquet)")
    metrics = [m for m in ("eval_accuracy", "accuracy", "entropy", "entropy_pos", "entropy_neg", "response_length")
               if m in steps_df.columns and steps_df[m].drop_nulls().len()]
    files.table(section, "training_steps", steps_df)
    section.lines.append(f"{steps_df.height} training steps; metrics: {', '.join(metrics) or 'none of the known ones'}.")
    panel = [m for m in ("eval_accuracy", "entropy", "response_length") if m in metrics]
    if panel:
        t = steps_df.select("step", *panel).with_columns(pl.lit("run").alias("run"))
        files.figure(section, "training_curves",
                     lambda: method_plots.plot_method_curves(t, metrics=panel, boundary=view.boundary_step))
    return Outcome(section)


@register_section("polarity", stage_conditioned=True)
def polarity_section(inputs: SectionInputs) -> Outcome:
    view, files, cfg = inputs.view, inputs.files, inputs.settings
    section = Section("polarity", "A. Entropy of positive vs negative samples (paper-notes §2.1 A, Fig. 2c)")
    by_polarity = files.table(section, "polarity_entropy", polarity.polarity_entropy(tokens=view.tokens,
                                                                                      samples=view.samples))
    rates = files.table(section, "polarity_rates", polarity.polarity_rates(by_polarity, view.boundary_step,
                                                                           n_boot=cfg.n_boot, seed=cfg.seed))
    for r in rates.iter_rows(named=True):
        section.lines.append(f"{r['stage']}, {r['polarity']}: slope {fmt_est(Estimate(r['slope'], r['ci_low'], r['ci_high'], r['n']), 4)} "
                         f"nats/step; {fmt(r['start'])} → {fmt(r['end'])} nats.")
    # Finding A uses the densest data the run has: the training log's per-step polarity entropies when it
    # has more steps than the store's samples (a sweep of every 10th checkpoint), else the store's.
    from_log = polarity.polarity_from_log(view.steps_table) if view.steps_table is not None else None
    dense = from_log is not None and from_log["step"].n_unique() > by_polarity["step"].n_unique()
    source = ("the training log (entropy_pos / entropy_neg at every step)" if dense
              else "the store's samples (token-mean entropy)")
    section.lines.append(f"Finding A is measured on {source}.")
    files.figure(section, "fig2c_polarity_entropy",
                 lambda: stage_plots.plot_polarity_entropy(by_polarity, boundary=view.boundary_step))
    return Outcome(section, findings=[finding_A(from_log if dense else by_polarity, view.boundary, cfg.n_boot,
                                                cfg.seed, source)])


@register_section("token_shift", stage_conditioned=True)
def token_shift_section(inputs: SectionInputs) -> Outcome:
    view, files, cfg = inputs.view, inputs.files, inputs.settings
    src = view.rising_rollouts
    out = Outcome()
    try:
        shift = vocab.token_shift(tokens=src.tokens, vocab=view.vocab, boundary=view.boundary_step, window=cfg.window)
    except UserError as e:
        shift = None
        out.skipped.append(("B. token-type shift", str(e)))
    if shift is not None:
        section = out.section = Section("token_shift", "B. Token-type shift across the rising stage (paper-notes §2.1 B, Fig. 2b)")
        section.lines.append(f"Measured on {src.where}.")
        files.table(section, "token_shift", shift)
        top = files.table(section, "token_shift_top", vocab.top_token_shifts(shift, n=15))
        for ranking in ("entropy_drop", "freq_rise"):
            d = top.filter(pl.col("ranking") == ranking).head(5)
            section.lines.append(f"Top {ranking.replace('_', ' ')}: " + ", ".join(
                f"{t!r} ({fmt(s)})" if t is not None else f"id {i} ({fmt(s)})"
                for t, i, s in zip(d["token"], d["token_id"], d["score"])) + ".")
        if view.vocab is None:
            section.lines.append("No vocab.parquet: token types are shown by id.")
        if top.height:
            files.figure(section, "fig2b_token_shift", lambda: stage_plots.plot_token_shift(top))
    out.findings.append(measured_on(src, finding_B(src.tokens, view.vocab, shift, view.boundary_step, cfg.window,
                                                   cfg.n_boot, cfg.seed)))
    return out


def measured_on(src, finding: Finding) -> Finding:
    """``finding`` with the data it was measured on (``src.where``) leading its ``measured`` text."""
    if finding.verdict == NOT_MEASURED:
        return finding
    return dataclasses.replace(finding, measured=f"From {src.where}. {finding.measured}")


@register_section("defects", stage_conditioned=True)
def defects_section(inputs: SectionInputs) -> Outcome:
    view, files, cfg = inputs.view, inputs.files, inputs.settings
    section = Section("defects", "C. Defective responses (paper-notes §2.1 C, Fig. 2d)")
    src = view.rising_rollouts
    flags = defects.defect_flags(samples=src.samples)
    shares = files.table(section, "defect_proportions", defects.defect_proportions(samples=src.samples))
    tot = flags.select([pl.col(c).mean() for c in (*defects.DEFAULT_DEFECTS, "any_defect")]).row(0, named=True)
    section.lines.append(f"{flags.height:,} responses of {src.where}; overall shares: " + ", ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in tot.items()) + ".")
    files.figure(section, "fig2d_defects", lambda: stage_plots.plot_defect_proportions(shares, boundary=view.boundary_step))
    return Outcome(section, findings=[measured_on(src, finding_C(flags, view.boundary_step, cfg.window))])


@register_section("delta_p", stage_conditioned=True)
def delta_p_section(inputs: SectionInputs) -> Outcome:
    view, files = inputs.view, inputs.files
    if not view.has_updates:
        why = ("the store has no `updates` (run `entropy-lens collect CHECKPOINTS --out STORE` with at least two "
               "checkpoints and without --no-updates)")
        if view.kind == "train" and (view.path / "sweep").is_dir():
            why += f"; a sweep exists: `entropy-lens report {view.path / 'sweep'} --train-run {view.path}`"
        return Outcome(skipped=[("D–G. Δp analyses (Δp distribution, significant updates, categories, PPL buckets, "
                                 "position updates)", why)], findings=[not_measured("D", NO_UPDATES)])
    scope = view.delta_p_scope
    section = Section("delta_p", "D. Which tokens change probability (paper-notes §2.1 D, Fig. 3a)")
    section.lines.append(f"Δp = p_next − p per token; analyses use {scope.note}.")
    tables = dict(tokens=view.tokens_by_step, updates=view.updates_by_step, samples=view.samples,
                  boundary=view.boundary_step)
    dist = files.table(section, "delta_p_distribution", updates.delta_p_distribution(**tables))
    hist = files.table(section, "delta_p_histogram", updates.delta_p_histogram(**tables))
    for r in dist.iter_rows(named=True):
        section.lines.append(f"{r['stage']}, {r['polarity']}: n = {r['n']:,}, mean Δp {fmt(r['mean_delta_p'])}, "
                         f"|Δp| < 1e-3: {fmt(r['share_small'], 4)}, increases {fmt(r['share_increase'], 4)}, "
                         f"decreases {fmt(r['share_decrease'], 4)}.")
    files.figure(section, "fig3a_delta_p_histogram", lambda: update_plots.plot_delta_p_histogram(hist, stage=scope.stage))
    return Outcome(section, findings=[finding_D(dist, scope.stage)])


@register_section("entropy_bins", stage_conditioned=True)
def entropy_bins_section(inputs: SectionInputs) -> Outcome:
    view, files, cfg = inputs.view, inputs.files, inputs.settings
    scope = view.delta_p_scope
    section = Section("entropy_bins", "E. Updates and gradient norm by entropy bin (paper-notes §2.1 E, Fig. 3b)")
    bins = files.table(section, "entropy_bins", updates.update_by_entropy_bin(
        **scoped_delta_p(view, cfg.top_frac), n_bins=cfg.entropy_bins))
    g = correlation(bins["entropy_mean"].to_numpy(), bins["mean_grad_norm"].to_numpy(), "spearman")
    section.lines.append(f"{bins.height} entropy quantile bins ({scope.note if view.has_updates else 'all steps'}); "
                     f"Spearman(entropy, logit-gradient norm) = {fmt_est(g)} (bins).")
    found = not_measured("E", NO_UPDATES)
    if view.has_updates:
        sig = files.table(section, "significant_updates", updates.significant_update_sets(
            **scoped_delta_p(view, cfg.top_frac), samples=view.samples))
        for r in sig.iter_rows(named=True):
            extra = "" if r["set"] == "all" else \
                f", entropy vs rest {fmt_est(Estimate(r['diff_vs_rest'], r['ci_low'], r['ci_high'], r['n']))}"
            section.lines.append(f"set {r['set']}: n = {r['n']:,}, mean entropy {fmt(r['entropy_mean'])} nats, "
                             f"mean |Δp| {fmt(r['mean_abs_delta_p'])}{extra}.")
        found = finding_E(sig, bins, cfg.top_frac)
    files.figure(section, "fig3b_entropy_bins", lambda: update_plots.plot_entropy_bins(bins))
    return Outcome(section, findings=[found])


@register_section("categories", stage_conditioned=True)
def categories_section(inputs: SectionInputs) -> Outcome:
    view, files, cfg = inputs.view, inputs.files, inputs.settings
    if view.vocab is None:
        return Outcome(skipped=[("F. semantic token categories", "the store has no vocab.parquet (token id → string)")],
                       findings=[not_measured("F", "no vocab.parquet")])
    scope = view.delta_p_scope
    section = Section("categories", "F. Semantic token categories (paper-notes §1.8, §2.1 F, Fig. 3 category panel)")
    props = files.table(section, "category_proportions", categories.category_proportions(tokens=view.tokens, vocab=view.vocab, by=()))
    section.lines.append("Token shares: " + ", ".join(f"{c} {fmt(p)}" for c, p in zip(props["category"], props["proportion"])) + ".")
    found = not_measured("F", NO_UPDATES)
    if view.has_updates:
        cat = files.table(section, "category_updates", categories.category_updates(
            **scoped_delta_p(view, cfg.top_frac), vocab=view.vocab))
        for r in cat.iter_rows(named=True):
            section.lines.append(f"{r['stage']}, {r['category']}: n = {r['n']:,}, mean |Δp| {fmt(r['mean_abs_delta_p'])}, "
                             f"share of tokens {fmt(r['share_tokens'])}, of significant updates {fmt(r['share_of_significant'])}.")
        files.figure(section, "fig3c_categories", lambda: update_plots.plot_category_updates(cat, stage=scope.stage))
        found = finding_F(cat, scope.stage)
    return Outcome(section, findings=[found])


@register_section("ppl", stage_conditioned=True)
def ppl_section(inputs: SectionInputs) -> Outcome:
    view, files, cfg = inputs.view, inputs.files, inputs.settings
    section = Section("ppl", "G. Perplexity buckets (paper-notes §1.4, §2.2 G, Fig. 4a)")
    buckets = instance.ppl_buckets(samples=view.samples)
    graded = buckets.join(view.samples.select(*SAMPLE_KEY, "correct").collect(), on=SAMPLE_KEY)
    accuracy = files.table(section, "ppl_bucket_accuracy", graded.group_by("ppl_bucket").agg(
        pl.len().alias("n_samples"), pl.col("correct").sum().alias("n_correct"),
        pl.col("correct").cast(pl.Float64).mean().alias("accuracy"), pl.col("w_ppl").mean().alias("w_ppl_mean")).sort("ppl_bucket"))
    section.lines.append("Accuracy by group-z PPL bucket: " + ", ".join(
        f"{r['ppl_bucket']} {fmt_est(proportion(r['n_correct'], r['n_samples']))}" for r in accuracy.iter_rows(named=True)) + ".")
    found = not_measured("G", NO_UPDATES)
    if view.has_updates:
        scope = view.delta_p_scope
        ppl = files.table(section, "ppl_bucket_updates", instance.ppl_bucket_updates(
            **scoped_delta_p(view, cfg.top_frac), samples=view.samples))
        for r in ppl.iter_rows(named=True):
            section.lines.append(f"{r['stage']}, {r['ppl_bucket']} PPL: {r['n_tokens']:,} tokens ({fmt(r['share_tokens'])}), "
                             f"{r['n_top']:,} top-|Δp| ({fmt(r['share_top'])}), enrichment {fmt(r['enrichment'])}.")
        files.figure(section, "fig4a_ppl_share", lambda: instance_plots.plot_ppl_bucket_share(ppl, stage=scope.stage))
        found = finding_G(ppl, scope.stage)
    return Outcome(section, findings=[found])


@register_section("interventions")
def interventions_section(inputs: SectionInputs) -> Outcome:
    files = inputs.files
    path = inputs.view.interventions_path(inputs.settings.interventions)
    if path is None:
        return Outcome(skipped=[("H/K. replacement interventions", "no interventions.parquet next to the store "
                                 "(written by `entropy-lens intervene`; or pass --interventions PATH)")],
                       findings=[finding_H(None), finding_K(None)])
    iv = read_interventions(path)
    section = Section("interventions", "H/K. Token-replacement interventions (paper-notes §2.2 H, §2.3 K, Figs. 4b, 5b)")
    files.table(section, "interventions", iv)
    section.lines.append(f"From {path}.")
    for kind in ("ppl", "position"):
        rows = iv.filter(pl.col("kind") == kind)
        if rows.height:
            files.figure(section, f"fig{'4b' if kind == 'ppl' else '5b'}_intervention_{kind}",
                         lambda rows=rows: instance_plots.plot_intervention(rows))
    return Outcome(section, findings=[finding_H(iv), finding_K(iv)])


def position_tables(view: RunView, n_bins: int = 20, top_frac: float = 0.01) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The tables Fig. 5a is drawn from: ``entropy_by_position`` over every step, and with Δp
    ``update_by_position`` over the run's Δp scope (None without updates)."""
    by_position = position.entropy_by_position(tokens=view.tokens, samples=view.samples, n_bins=n_bins)
    if not view.has_updates:
        return by_position, None
    return by_position, position.update_by_position(**scoped_delta_p(view, top_frac), n_bins=n_bins)


@register_section("position")
def position_section(inputs: SectionInputs) -> Outcome:
    view, files, cfg = inputs.view, inputs.files, inputs.settings
    section = Section("position", "J. Entropy by relative position (paper-notes §2.3 J, Fig. 5a)")
    by_position, update_table = position_tables(view, cfg.position_bins, cfg.top_frac)
    files.table(section, "entropy_by_position", by_position)
    u = files.table(section, "u_shape", position.u_shape_summary(tokens=view.tokens_by_step, samples=view.samples,
                                                             n_boot=cfg.n_boot, seed=cfg.seed))
    for r in u.iter_rows(named=True):
        section.lines.append(f"{r['polarity']}, {r['contrast']}: {fmt_est(Estimate(r['estimate'], r['ci_low'], r['ci_high'], r['n']))} nats.")
    if update_table is not None:
        files.table(section, "update_by_position", update_table)
    files.figure(section, "fig5a_position", lambda: position_plots.plot_u_curve(by_position, update_table))
    return Outcome(section, findings=[finding_J(u)])


@register_section("advantage")
def advantage_section(inputs: SectionInputs) -> Outcome:
    view, files = inputs.view, inputs.files
    r = view.rollouts
    if not r.has_advantages:
        return Outcome(skipped=[("advantage analyses", "no advantage column with values (a sweep's rollouts are not "
                                 "training rollouts; pass --train-run RUN or report on the training run's store)")])
    tokens, samples, where = r.tokens, r.samples, r.where
    section = Section("advantage", "Advantages of the training rollouts (paper-notes §1.1)")
    section.lines.append(f"From the rollouts of {where}; polarity by correctness (paper-notes §1.1: also record the sign of A).")
    a = pl.col("advantage").cast(pl.Float64)
    lf = tokens.filter(a.is_not_null()).join(samples.select(*SAMPLE_KEY, "correct"), on=SAMPLE_KEY)
    step = view.boundary_step
    lf = lf.with_columns(stage_expr(step) if step is not None else pl.lit("all").alias("stage"))
    summary = files.table(section, "advantage_summary", lf.group_by("stage", "correct").agg(
        pl.len().alias("n_tokens"), a.mean().alias("mean_advantage"), a.abs().mean().alias("mean_abs_advantage"),
        (a > 0).mean().alias("share_positive"), (a < 0).mean().alias("share_negative"), (a == 0).mean().alias("share_zero"),
        (pl.col("shaped_advantage").cast(pl.Float64) - a).abs().mean().alias("mean_abs_shaping"),
    ).sort("stage", "correct").collect())
    for row in summary.iter_rows(named=True):
        section.lines.append(f"{row['stage']}, {'positive' if row['correct'] else 'negative'} samples: {row['n_tokens']:,} tokens, "
                         f"A > 0 {fmt(row['share_positive'])}, A < 0 {fmt(row['share_negative'])}, A = 0 {fmt(row['share_zero'])}, "
                         f"mean |A| {fmt(row['mean_abs_advantage'])}, mean |Ã − A| {fmt(row['mean_abs_shaping'])}.")
    return Outcome(section)


@register_section("attribution", stage_conditioned=True)
def attribution_section(inputs: SectionInputs) -> Outcome:
    """Where the entropy went: the first-order ΔH account of the trained tokens (analysis.attribution)."""
    view, files, cfg = inputs.view, inputs.files, inputs.settings
    r = view.rollouts
    try:
        account = attribution.run_account(view)
    except UserError as e:
        why = str(e)
        return Outcome(skipped=[("where the entropy went", why)], findings=[not_measured("N", why), not_measured("O", why)])
    section = Section("attribution", "Where the entropy went: the first-order entropy account of the updates")
    source = {"shaped_advantage": "the advantage the update used (`shaped_advantage`)",
              "advantage": "the trainer's advantage"}.get(attribution.advantage_source(r.tokens),
                                                          "GRPO's group-normalised rewards (the store has no advantages)")
    section.lines.append(f"{account.height:,} tokens of {r.where}; ΔH_pred = A·[Σp² log p + H·Σp² − p_a(log p_a + H)] per unit "
                         f"step size, with A = {source}. Shares: bootstrap over prompt groups, {cfg.n_boot} draws.")
    steps = files.table(section, "attribution_steps", attribution.step_account(account))
    predicted = files.table(section, "attribution_decomposition", attribution.decompose(
        account, n_boot=cfg.n_boot, seed=cfg.seed))
    realized = None
    if "dH_real" in account.columns:
        realized = files.table(section, "attribution_decomposition_realized", attribution.decompose(
            account, value="dH_real", n_boot=cfg.n_boot, seed=cfg.seed))
    top = files.table(section, "attribution_top_tokens", attribution.top_tokens(account, view.vocab))
    section.lines += attribution_lines(predicted, steps, top)
    if realized is not None:
        section.lines += validation_lines(files.table(section, "attribution_validation", attribution.validation(account)),
                                          updates_note(r.kind))
        bins = files.table(section, "attribution_validation_bins", attribution.validation_bins(account))
        files.figure(section, "attribution_predicted_vs_realized",
                     lambda: attribution_plots.plot_predicted_vs_realized(steps, bins))
    else:
        section.lines.append("No realized change: the rollouts' updates carry no `entropy_next` (store schema 2 writes it).")
    b = view.boundary
    files.figure(section, "attribution_contributions", lambda: attribution_plots.plot_contributions(
        attribution.all_contributions(account), boundary=view.boundary_step, ci=b.ci if b is not None else None))
    for stage in [s for s in ("rising", "plateau") if s in set(predicted["stage"].to_list())]:
        files.figure(section, f"attribution_shares_{stage}", lambda stage=stage: attribution_plots.plot_shares(predicted, stage))
    return Outcome(section, findings=[finding_N(predicted, realized), finding_O(predicted, realized)])


def updates_note(kind: str) -> str:
    """What the realized change measures: the step's own update (a training run's updates) or the interval to
    the next stored checkpoint (a sweep's)."""
    if kind == "train":
        return "realized ΔH = the entropy of the same context under the weights right after the step's update"
    return "realized ΔH = the entropy of the same context under the next stored checkpoint (several updates later)"


def attribution_lines(predicted: pl.DataFrame, steps: pl.DataFrame, top: pl.DataFrame) -> list[str]:
    """The section's summary: per stage the net ΔH and the largest shares, Cui et al.'s covariance beside the
    account, the tokens that burned and raised the most."""
    lines = []
    for stage in predicted["stage"].unique(maintain_order=True).to_list():
        d = predicted.filter(pl.col("stage") == stage)
        net = float(d.filter(pl.col("axis") == d["axis"][0])["net"].sum())
        parts = []
        for axis in d["axis"].unique(maintain_order=True).to_list():
            a = d.filter(pl.col("axis") == axis).sort("share_abs", descending=True)
            g = a.row(0, named=True)
            parts.append(f"{axis} {g['group']} {fmt(g['share_abs'])} of Σ|ΔH| "
                         f"[{fmt(g['share_abs_ci_low'])}, {fmt(g['share_abs_ci_high'])}], net share {fmt(g['share_net'])}")
        lines.append(f"{stage}: net predicted ΔH {fmt(net)}; largest groups: " + "; ".join(parts) + ".")
    cov = correlation(steps["cov_logp_adv"].to_numpy(), steps["dH_pred_sum"].to_numpy(), method="spearman")
    lines.append(f"Cui et al.'s batch covariance Cov(log p, A) against the step's predicted Σ ΔH: Spearman {fmt_est(cov)} "
                 "(steps; the covariance view predicts a negative relation).")
    for direction in ("burned", "raised"):
        t = top.filter((pl.col("direction") == direction) & (pl.col("stage") == top["stage"][-1])).head(5) if top.height else top
        if t.height:
            lines.append(f"Most entropy {direction} ({t['stage'][0]}): " + ", ".join(
                f"{tok!r} {fmt(share)}" for tok, share in zip(t["token"].to_list(), t["share"].to_list())) + ".")
    return lines


def validation_lines(valid: pl.DataFrame, note: str) -> list[str]:
    """Predicted against realized: token and step correlations, and where the approximation tracks worst."""
    lines = [f"Validation ({note}):"]
    for level in ("token", "step"):
        v = valid.filter(pl.col("level") == level).row(0, named=True)
        lines.append(f"per {level}: Pearson r {fmt_est(Estimate(v['r'], v['ci_low'], v['ci_high'], v['n']))}, slope "
                     f"{fmt(v['slope'])} (the effective step size), same sign {fmt(v['sign_agreement'])}.")
    weak = attribution.weakest_groups(valid)
    if weak.height:
        lines.append("weakest groups (per-step sums across steps): " + "; ".join(
            f"{w['axis']} {w['group']} r {fmt(w['r'])}, same sign {fmt(w['sign_agreement'])}" for w in weak.iter_rows(named=True)) + ".")
    return lines

