"""``entropy-lens report``: every analysis a store's data supports, as tables, figures and REPORT.md.

:func:`build_report` opens the run (a ``collect`` sweep, a ``train`` run, or a sweep plus the training run it
came from: :class:`~entropy_lens.analysis.context.RunView`) and :func:`write_report` runs the registered
sections (:mod:`entropy_lens.report.sections`) in order, collecting their sections, skips and findings, and
writes the folder :mod:`entropy_lens.report.document` describes, with the explorer page
(:mod:`entropy_lens.view`) of the same run beside REPORT.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from entropy_lens.analysis.context import RunView
from entropy_lens.analysis.findings import Finding
from entropy_lens.errors import UserError
from entropy_lens.report.document import DiscardedFiles, Report, SectionFiles, write_markdown
from entropy_lens.report.sections import ORDER, SECTIONS, STAGE_CONDITIONED, ReportSettings, SectionInputs
from entropy_lens.view.page import write_view


def write_report(view: RunView, out_dir, settings: ReportSettings = ReportSettings(),
                 draw_figures: bool = True, view_page: bool = True) -> Report:
    """Run every section on ``view``; write tables, figures (unless ``draw_figures`` is False), the explorer
    page ``view.html`` (unless ``view_page`` is False) and REPORT.md under ``out_dir``.  Findings are listed by
    letter, sections and skips in section order."""
    settings.check()
    if view.is_empty:
        raise UserError(f"{view.path}: the store has no completed steps; run `entropy-lens collect` (or train) first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs = SectionInputs(view, settings, SectionFiles(out, draw_figures))
    sections, skipped, found = [], [], {}
    for name in ORDER:
        outcome = SECTIONS.get(name)(inputs)
        if outcome.section is not None:
            sections.append(outcome.section)
        skipped += outcome.skipped
        found.update({f.key: f for f in outcome.findings})
    found = with_boundary_sensitivity(found, view, settings)
    findings: list[Finding] = [found[k] for k in sorted(found)]
    page = None
    if view_page:
        page, why = explorer_page(view, out)
        skipped += [("explorer page (view.html)", why)] if page is None else []
    report = Report(out, out / "REPORT.md", view.path, view.train_run, view.boundary, sections, findings, skipped,
                    inputs.files.tables, page)
    write_markdown(report, view.store)
    return report


def explorer_page(view: RunView, out: Path) -> tuple[Path | None, str]:
    """``OUT/view.html``, the run's explorer page (:func:`entropy_lens.view.page.write_view`, its default
    sample and size budget), or None and why it could not be built."""
    try:
        return write_view(view, out / "view.html")[0], ""
    except UserError as e:
        return None, str(e)


def verdicts_at(view: RunView, step: int, settings: ReportSettings) -> dict[str, str]:
    """The stage-conditioned sections' verdicts with the boundary set to ``step`` (nothing is written)."""
    inputs = SectionInputs(view.with_boundary(step), settings, DiscardedFiles())
    return {f.key: f.verdict for name in STAGE_CONDITIONED for f in SECTIONS.get(name)(inputs).findings}


def with_boundary_sensitivity(found: dict[str, Finding], view: RunView, settings: ReportSettings) -> dict[str, Finding]:
    """``found`` with each stage-conditioned finding's verdicts at both ends of the boundary's 95% interval
    (:attr:`Finding.at_ci_ends`); unchanged when the boundary has no interval (a manual or knee boundary)."""
    b = view.boundary
    if b is None or b.ci is None:
        return found
    lo, hi = b.ci
    at_lo, at_hi = verdicts_at(view, lo, settings), verdicts_at(view, hi, settings)
    return {k: dataclasses.replace(f, at_ci_ends=((lo, at_lo[k]), (hi, at_hi[k]))) if k in at_lo and k in at_hi else f
            for k, f in found.items()}


def build_report(
    store_path,
    out_dir,
    *,
    boundary: int | None = None,
    detector: str = "segmented",
    train_run=None,
    interventions=None,
    top_frac: float = 0.01,
    entropy_bins: int = 10,
    position_bins: int = 20,
    window: int = 3,
    n_boot: int = 1000,
    seed: int = 0,
    draw_figures: bool = True,
    view_page: bool = True,
) -> Report:
    """Run every analysis ``store_path``'s data supports; write tables, figures and REPORT.md to ``out_dir``.

    ``train_run``: the training run's store (``entropy-lens train --out RUN``) whose ``steps.parquet`` gives the
    training curves and the stage boundary while the Δp analyses come from ``store_path`` (its sweep).
    ``boundary``: manual stage boundary (first plateau step); otherwise the registered ``detector``.
    ``interventions``: an interventions Parquet table; default ``STORE/interventions.parquet`` or the one in
    the store's parent folder when present.  ``top_frac``: the per-step top-x% |Δp| that counts as a
    significant update (paper-notes §1.7).  ``view_page``: also write the explorer page ``OUT/view.html``.
    """
    view = RunView.open(store_path, train_run, boundary=boundary, detector=detector)
    settings = ReportSettings(top_frac=top_frac, entropy_bins=entropy_bins, position_bins=position_bins, window=window,
                              n_boot=n_boot, seed=seed, interventions=interventions)
    return write_report(view, out_dir, settings, draw_figures, view_page)
