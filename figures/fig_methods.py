"""Fig. R and the methods' entropy curves (paper-notes §3): accuracy and policy entropy vs step for the baseline
(RUN/baseline), GRPO+PPL (RUN/ppl) and GRPO+POSITION (RUN/position); raw values thin, EMA bold.
Usage: python -m figures.fig_methods --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

from entropy_lens.plots import methods as method_plots
from figures.figlib import RUNS, Figures, Layout, accuracy_metric, cli


def main(run_dir, out_dir="figures/out") -> list[Path]:
    lay, figs = Layout(Path(run_dir)), Figures("fig_methods", out_dir)
    curves = lay.method_steps(["baseline", "ppl", "position"])
    have = [] if curves is None else curves["run"].unique().to_list()
    acc = accuracy_metric(curves) if curves is not None else None
    if curves is None or len(have) < 2 or acc is None or "baseline" not in [k for k, v in RUNS.items() if v in have]:
        figs.skip("figR_methods", f"needs RUN/baseline and RUN/ppl or RUN/position with steps.parquet; found {have}")
    else:
        figs.save("figR_methods", method_plots.plot_method_curves(curves, metrics=(acc, "entropy"),
                                                                  boundary=lay.boundary_step))
    return figs.done()


if __name__ == "__main__":
    sys.exit(cli(main, __doc__))
