"""The report as a document: its sections, the files they write, and REPORT.md.

A report folder holds::

    REPORT.md          boundary (detector or manual), the paper's findings with verdicts, one section per
                       analysis with numbers, n and CIs, and a "Skipped" section saying what was not run and why
    tables/NAME.csv    one table per analysis (the analysis function's output, unchanged)
    figures/NAME.png   the figures (and .pdf), drawn by :mod:`entropy_lens.plots`
    view.html          the explorer page of the same run (:mod:`entropy_lens.view`), linked from REPORT.md
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl

from entropy_lens.analysis.findings import Finding
from entropy_lens.analysis.stages import StageBoundary
from entropy_lens.store import Store


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
    """What the report wrote and found: ``skipped`` holds (analysis, why) for each analysis not run."""

    out_dir: Path
    report_path: Path
    store: Path
    train_run: Path | None
    boundary: StageBoundary | None
    sections: list[Section]
    findings: list[Finding]
    skipped: list[tuple[str, str]]
    tables: dict[str, pl.DataFrame]
    view: Path | None = None  # the explorer page, when written

    @property
    def files(self) -> list[Path]:
        page = [self.view] if self.view is not None else []
        return [self.report_path, *page] + [p for s in self.sections for p in (*s.tables, *s.figures)]

    def __str__(self) -> str:
        nf = sum(1 for s in self.sections for p in s.figures if p.suffix == ".png")
        return (f"report: {self.report_path} ({len(self.sections)} analyses, {len(self.skipped)} skipped, "
                f"{sum(len(s.tables) for s in self.sections)} tables, {nf} figures under {self.out_dir}"
                + (f"; explorer page {self.view}" if self.view is not None else "") + ")")


class SectionFiles:
    """Writes a section's tables (``OUT/tables/NAME.csv``) and figures (``OUT/figures/NAME.png`` and .pdf),
    and keeps every table by name; with ``draw`` False figures are not drawn."""

    def __init__(self, out: Path, draw: bool):
        self.out, self.draw = out, draw
        self.tables: dict[str, pl.DataFrame] = {}

    def table(self, section: Section, name: str, df: pl.DataFrame) -> pl.DataFrame:
        p = self.out / "tables" / f"{name}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        df.write_csv(p)
        section.tables.append(p)
        self.tables[name] = df
        return df

    def figure(self, section: Section, name: str, make: Callable) -> None:
        """Draw ``make()`` (a matplotlib Figure) and save it, unless figures are off."""
        if not self.draw:
            return
        import matplotlib.pyplot as plt

        from entropy_lens.plots.style import save_figure

        fig = make()
        try:
            section.figures += save_figure(fig, self.out / "figures" / name)
        finally:
            plt.close(fig)


class DiscardedFiles(SectionFiles):
    """Tables and figures that are computed but neither written nor drawn: the sections' re-runs with the
    boundary at the ends of its interval need only their findings."""

    def __init__(self):
        super().__init__(Path("."), draw=False)

    def table(self, section: Section, name: str, df: pl.DataFrame) -> pl.DataFrame:
        return df


def path_in(p: Path, root: Path) -> str:
    """``p`` relative to ``root`` when it is under it, else ``p`` as given."""
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


SETTINGS_SHOWN = ("dataset", "samples_per_prompt", "max_new_tokens", "temperature", "entropy_temperature", "top_p")


def write_markdown(report: Report, store: Store) -> None:
    """REPORT.md: the store and its settings, the boundary, the findings, each section, what was skipped."""
    m = store.manifest
    settings = m.get("settings", {})
    lines = [f"# entropy-lens report: `{report.store}`", ""]
    lines.append(f"- Store kind: **{m.get('kind')}**, schema v{m.get('schema_version')}, toolkit {m.get('toolkit_version', '?')}; "
                 f"steps {store.completed_steps}.")
    if report.train_run:
        lines.append(f"- Training curves and boundary from the training run `{report.train_run}`.")
    keep = {k: settings[k] for k in SETTINGS_SHOWN if k in settings}
    if keep:
        lines.append("- Settings: " + ", ".join(f"{k} = {v}" for k, v in keep.items()) + ".")
    if report.boundary is not None:
        b = report.boundary
        how = "manual (--boundary)" if b.detector == "manual" else f"detector `{b.detector}`"
        lines.append(f"- **Stage boundary: step {b.step}** ({how}). Rising = steps < {b.step}; plateau = steps ≥ {b.step}.")
    else:
        lines.append("- **Stage boundary: none** (see Skipped).")
    lines.append("- Intervals are 95% CIs (bootstrap, Wilson or Welch as stated in each rule); n counts the unit named.")
    if report.view is not None:
        lines.append(f"- **Explore it token by token: [{report.view.name}]({path_in(report.view, report.out_dir)})**, one "
                     "offline page (curves, each step's prompts and groups side by side, tokens coloured by entropy and "
                     "the other per-token metrics, heat maps); open it in a browser.")
    lines += ["", "## Findings", "", "Verdicts follow the rules stated under each finding. A finding this run does not "
              "reproduce is reported as such.", ""]
    lines += [f.markdown() for f in report.findings]
    for s in report.sections:
        lines += ["", f"## {s.title}", ""]
        lines += [f"- {x}" for x in s.lines]
        if s.figures:
            lines.append("")
            lines += [f"![{p.stem}]({path_in(p, report.out_dir)})" for p in s.figures if p.suffix == ".png"]
            lines.append("Figures: " + ", ".join(f"[{p.name}]({path_in(p, report.out_dir)})" for p in s.figures))
        if s.tables:
            lines.append("Tables: " + ", ".join(f"[{p.name}]({path_in(p, report.out_dir)})" for p in s.tables))
    lines += ["", "## Skipped", ""]
    lines += [f"- **{name}**: {why}." for name, why in report.skipped] or ["- Nothing: every analysis ran."]
    report.report_path.write_text("\n".join(lines) + "\n")
