"""Shared plumbing of the figure scripts: the run layout (figures/README.md), skipping, saving.

A figure whose inputs are absent is skipped with a printed reason; nothing is ever drawn from made-up data.
The stage boundary, the Δp scope and the late-training start come from the run's
:class:`~entropy_lens.analysis.context.RunView` (:attr:`Layout.view`), as in ``entropy-lens report``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import polars as pl

import entropy_lens
from entropy_lens.analysis.context import INTERVENTIONS_FILE, RunView, read_interventions

# run name in the layout → label in the figures (paper-notes §3, §7.4)
RUNS = {
    "baseline": "GRPO",
    "ppl": "GRPO+PPL",
    "ppl-high": "GRPO+high-PPL",
    "position": "GRPO+POSITION",
    "position-begin": "GRPO+POSITION-begin",
}


SEED_RUN = "baseline-seed{}"  # RUN/<name> of baseline seed s > 0; seed 0 is RUN/baseline


def seed_runs(n: int) -> list[str]:
    """The baseline's run names for seeds 0 … n − 1."""
    return ["baseline"] + [SEED_RUN.format(s) for s in range(1, n)]


def _is_store(p: Path) -> bool:
    return (p / "lens.json").is_file()


@dataclass
class Layout:
    """The stores of one experiment folder ``RUN``, found by name (see figures/README.md).  ``baseline``
    names the baseline seed whose stores the per-token figures and findings read (seed 0 by default)."""

    root: Path
    baseline: str = "baseline"

    def seeds(self) -> list[str]:
        """The baseline seeds present: ``baseline``, ``baseline-seed1``, … while they exist."""
        out = []
        for name in seed_runs(100):
            if self.run_dir(name) is None:
                break
            out.append(name)
        return out

    def for_seed(self, name: str) -> "Layout":
        return Layout(self.root, name)

    def run_dir(self, name: str) -> Path | None:
        """``RUN/<name>``; for the baseline also ``RUN`` itself when it is a training store (make_all's layout)."""
        p = self.root / name
        if _is_store(p):
            return p
        if name == "baseline" and _is_store(self.root):
            return self.root
        return None

    def run(self, name: str):
        d = self.run_dir(name)
        return entropy_lens.open(d) if d is not None else None

    def sweep_dir(self) -> Path | None:
        """The collect store of the baseline: ``RUN/<baseline>/sweep`` (or ``RUN/sweep`` for seed 0)."""
        found = [self.root / self.baseline / "sweep"] + ([self.root / "sweep"] if self.baseline == "baseline" else [])
        return next((p for p in found if _is_store(p)), None)

    def sweep(self):
        d = self.sweep_dir()
        return entropy_lens.open(d) if d is not None else None

    @cached_property
    def view(self) -> RunView | None:
        """The run context of the per-token figures: the sweep (it has Δp), else the baseline training store,
        with the baseline training run for the curves and the stage boundary; None when there is neither."""
        store_dir, base_dir = self.sweep_dir(), self.run_dir(self.baseline)
        store_dir = store_dir or base_dir
        if store_dir is None:
            return None
        base = self.run(self.baseline)
        train = base_dir if base is not None and base_dir != store_dir and base.manifest.get("kind") == "train" else None
        return RunView.open(store_dir, train)

    @property
    def boundary(self):
        """The run's stage boundary (a StageBoundary), None without one or without stores."""
        return self.view.boundary if self.view is not None else None

    @property
    def boundary_step(self) -> int | None:
        return self.view.boundary_step if self.view is not None else None

    def steps(self, name: str) -> pl.DataFrame | None:
        s = self.run(name)
        if s is None or s.steps is None:
            return None
        return s.steps.collect()

    def interventions_path(self) -> Path | None:
        """The baseline seed's ``RUN/<baseline>/interventions.parquet`` (written by ``entropy-lens intervene``;
        ``RUN/interventions.parquet`` too for seed 0, an older layout), when present."""
        found = [self.root / self.baseline / INTERVENTIONS_FILE]
        found += [self.root / INTERVENTIONS_FILE] if self.baseline == "baseline" else []
        return next((p for p in found if p.is_file()), None)

    def interventions(self) -> pl.DataFrame | None:
        p = self.interventions_path()
        return read_interventions(p) if p is not None else None

    def method_steps(self, names) -> pl.DataFrame | None:
        """Long table (run, step, metrics...) of the named runs that exist and have a training log."""
        frames = []
        for n in names:
            st = self.steps(n)
            if st is None:
                continue
            cols = [c for c in ("eval_accuracy", "accuracy", "entropy", "response_length") if c in st.columns]
            frames.append(st.select(pl.col("step").cast(pl.Int64), *[pl.col(c).cast(pl.Float64) for c in cols])
                          .with_columns(pl.lit(RUNS[n]).alias("run")))
        return pl.concat(frames, how="diagonal") if frames else None


class Figures:
    """Collects what a script wrote and why it skipped what it skipped."""

    def __init__(self, script: str, out_dir):
        self.script, self.out = script, Path(out_dir)
        self.written: list[Path] = []
        self.skipped: list[tuple[str, str]] = []

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append((name, reason))
        print(f"{self.script}: skipped {name}: {reason}")

    def save(self, name: str, fig) -> None:
        import matplotlib.pyplot as plt

        from entropy_lens.plots.style import save_figure

        try:
            self.written += save_figure(fig, self.out / name)
        finally:
            plt.close(fig)

    def done(self) -> list[Path]:
        pngs = [p for p in self.written if p.suffix == ".png"]
        print(f"{self.script}: wrote {len(pngs)} figure(s) to {self.out}" + (f": {', '.join(p.name for p in pngs)}" if pngs else ""))
        return self.written


def accuracy_metric(table: pl.DataFrame) -> str | None:
    """``eval_accuracy`` when the runs log it, else the training-batch ``accuracy``."""
    for m in ("eval_accuracy", "accuracy"):
        if m in table.columns and table[m].drop_nulls().len():
            return m
    return None


def intervention_panel(figs: Figures, lay: Layout, kind: str, name: str, by: str) -> None:
    """Bars of Δaccuracy after token replacement, for the interventions of ``kind`` (Figs. 4b, 5b)."""
    from entropy_lens.plots.instance import plot_intervention

    iv = lay.interventions()
    rows = iv.filter(pl.col("kind") == kind) if iv is not None else None
    if rows is None or rows.height == 0:
        figs.skip(name, f"no RUN/baseline/interventions.parquet rows with kind = '{kind}' (run `entropy-lens intervene`)")
    else:
        figs.save(name, plot_intervention(rows, title=f"Accuracy change after replacing high-entropy tokens, by {by}"))


def method_curves_panel(figs: Figures, lay: Layout, name: str, runs: list[str], metrics: tuple[str, ...]) -> None:
    """Accuracy and ``metrics`` vs step for ``runs`` (≥ 2 of them with a steps.parquet; Figs. 4c/d, 5c/d)."""
    from entropy_lens.plots.methods import plot_method_curves

    curves = lay.method_steps(runs)
    have = [] if curves is None else curves["run"].unique().to_list()
    acc = accuracy_metric(curves) if curves is not None else None
    if curves is None or len(have) < 2 or acc is None:
        figs.skip(name, f"needs at least two of {', '.join('RUN/' + r for r in runs)} with steps.parquet; "
                        f"found {have}")
    else:
        shown = [m for m in (acc, *metrics) if m in curves.columns]
        figs.save(name, plot_method_curves(curves, metrics=shown, boundary=lay.boundary_step))


def cli(main, doc: str) -> int:
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--run", default="data/runs/demo", help="Experiment folder (layout: figures/README.md).")
    ap.add_argument("--out", default="figures/out", help="Output folder for PNG + PDF.")
    args = ap.parse_args()
    if not Path(args.run).is_dir():
        print(f"{args.run}: no such run folder; run `make figures` first or pass --run")
        return 2
    main(args.run, args.out)
    return 0
