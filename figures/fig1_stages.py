"""Fig. 1: policy entropy and accuracy vs training step, red line at the rising → plateau boundary (paper-notes §2.1).

The curves and the boundary are the run's (its RunView: the baseline's training log and rollouts), with the
boundary's 95% interval shaded.  With more than one baseline seed, ``fig1_seeds`` draws every seed: the band
between them, and each seed's boundary.
Usage: python -m figures.fig1_stages --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from entropy_lens.plots import stages as stage_plots
from figures.figlib import Figures, Layout, cli


def main(run_dir, out_dir="figures/out") -> list[Path]:
    lay, figs = Layout(Path(run_dir)), Figures("fig1_stages", out_dir)
    view = lay.view
    if view is None:
        figs.skip("fig1_entropy_accuracy", f"no baseline training store or sweep under {run_dir}")
    else:
        if view.boundary is None:
            print("fig1_stages: no stage boundary (too few steps); drawn without the red line")
        ci = view.boundary.ci if view.boundary is not None else None
        figs.save("fig1_entropy_accuracy", stage_plots.plot_entropy_accuracy(view.curves, boundary=view.boundary_step,
                                                                             boundary_ci=ci))
    seeds = lay.seeds()
    if len(seeds) > 1:
        views = {f"seed {i}": lay.for_seed(name).view for i, name in enumerate(seeds)}
        curves = pl.concat([v.curves.select("step", *[c for c in ("entropy", "eval_accuracy") if c in v.curves.columns])
                            .with_columns(pl.lit(label).alias("seed")) for label, v in views.items()], how="diagonal")
        bounds = {label: None if v.boundary is None else (v.boundary_step, v.boundary.ci) for label, v in views.items()}
        figs.save("fig1_seeds", stage_plots.plot_seed_curves(curves, bounds))
    else:
        figs.skip("fig1_seeds", "one baseline seed (make_all trains RUN/baseline-seed1, -seed2 beside RUN/baseline)")
    return figs.done()


if __name__ == "__main__":
    sys.exit(cli(main, __doc__))
