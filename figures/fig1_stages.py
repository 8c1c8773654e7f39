"""Fig. 1: policy entropy and accuracy vs training step, red line at the rising → plateau boundary (paper-notes §2.1).

The curves and the boundary are the run's (its RunView: the baseline's training log with the sweep's rollouts,
or the baseline's own rollouts without a sweep).
Usage: python -m figures.fig1_stages --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

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
        figs.save("fig1_entropy_accuracy", stage_plots.plot_entropy_accuracy(view.curves, boundary=view.boundary_step))
    return figs.done()


if __name__ == "__main__":
    sys.exit(cli(main, __doc__))
