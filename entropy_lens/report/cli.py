"""``entropy-lens report``: the report subcommand (flags generated from :class:`ReportConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from entropy_lens.command import Command


@dataclass
class ReportConfig:
    """Settings of ``entropy-lens report``: run every analysis a store supports and write tables, figures and
    REPORT.md (with a "Skipped" section saying what could not be run and why)."""

    store: str = field(metadata={"help": "Store directory (from `entropy-lens collect` or `entropy-lens train`).",
                                 "positional": True})
    out: str | None = field(default=None, metadata={"help": "Output folder (default: STORE/report)."})
    train_run: str | None = field(default=None, metadata={"help": "Training run store whose steps.parquet gives the "
                                                                   "training curves and the stage boundary, while the "
                                                                   "Δp analyses come from STORE (its sweep)."})
    boundary: int | None = field(default=None, metadata={"help": "Manual stage boundary: the first plateau step "
                                                                 "(overrides --detector)."})
    detector: str = field(default="segmented", metadata={"help": "Registered stage detector (`entropy-lens ls` "
                                                                 "lists them)."})
    interventions: str | None = field(default=None, metadata={"help": "Interventions table (Parquet; default: "
                                                                      "interventions.parquet in STORE or its parent)."})
    top_frac: float = field(default=0.01, metadata={"help": "Per-step top fraction of |Δp| counted as a significant "
                                                            "update (paper-notes §1.7)."})
    entropy_bins: int = field(default=10, metadata={"help": "Entropy quantile bins for |Δp| and gradient norm."})
    position_bins: int = field(default=20, metadata={"help": "Relative-position bins for the U-curve."})
    window: int = field(default=3, metadata={"help": "Steps in the start/end windows of the rising stage."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples for confidence intervals."})
    seed: int = field(default=0, metadata={"help": "Bootstrap seed."})
    figures: bool = field(default=True, metadata={"help": "Draw the figures (--no-figures: tables and REPORT.md only)."})
    view: bool = field(default=True, metadata={"help": "Write the explorer page view.html beside REPORT.md "
                                                       "(--no-view: skip it)."})


def run_report(cfg: ReportConfig) -> None:
    from pathlib import Path

    from entropy_lens.report.build import build_report

    out = cfg.out if cfg.out is not None else str(Path(cfg.store) / "report")
    rep = build_report(cfg.store, out, boundary=cfg.boundary, detector=cfg.detector, train_run=cfg.train_run,
                       interventions=cfg.interventions, top_frac=cfg.top_frac, entropy_bins=cfg.entropy_bins,
                       position_bins=cfg.position_bins, window=cfg.window, n_boot=cfg.n_boot, seed=cfg.seed,
                       draw_figures=cfg.figures, view_page=cfg.view)
    print(rep)


@dataclass
class StagesConfig:
    """``entropy-lens stages SOURCE``: where the rising stage ends — the break in a run's curve with its 95%
    interval, the slopes before and after it, and whether the break is clear at all."""

    source: str = field(metadata={"help": "A training run folder, a store, or a steps.parquet file.",
                                  "positional": True})
    detector: str = field(default="segmented", metadata={"help": "Registered stage detector (`entropy-lens ls` "
                                                                 "lists them)."})
    column: str = field(default="entropy", metadata={"help": "The curve to segment: a column of the run's "
                                                             "per-step curves or training log."})
    json: bool = field(default=False, metadata={"help": "Print one JSON object instead of a paragraph."})


def run_stages(cfg: StagesConfig) -> None:
    import json

    from entropy_lens.analysis.context import source_curves
    from entropy_lens.analysis.stages import boundary_paragraph, boundary_summary, detect_stage_boundary

    curves, what = source_curves(cfg.source)
    summary = boundary_summary(curves, detect_stage_boundary(curves, cfg.detector, column=cfg.column))
    print(json.dumps({**summary, "source": what}) if cfg.json else f"{what}: {boundary_paragraph(summary)}")


STAGES = Command("stages", "find the rising → plateau break of a run's curve, with its 95% interval", StagesConfig,
                 run_stages)
REPORT = Command("report", "analyse a store: stage boundary, the paper's tables and figures, REPORT.md",
                 ReportConfig, run_report)
