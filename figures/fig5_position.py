"""Fig. 5 (token level, paper-notes §2.3 J–L): (a) mean entropy vs relative position (U-curve; with Δp, also
|Δp| by position over the run's Δp scope, as in the report), (b) accuracy change after replacing
high-entropy tokens at the beginning vs the end (RUN/baseline/interventions.parquet, kind "position"), (c, d) accuracy,
entropy and response length vs step for the end-bonus (RUN/position) and begin-bonus (RUN/position-begin)
runs against the baseline.
Usage: python -m figures.fig5_position --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

from entropy_lens.plots import position as position_plots
from entropy_lens.report.sections import position_tables
from figures.figlib import Figures, Layout, cli, intervention_panel, method_curves_panel


def main(run_dir, out_dir="figures/out") -> list[Path]:
    lay, figs = Layout(Path(run_dir)), Figures("fig5_position", out_dir)
    view = lay.view
    if view is None:
        figs.skip("fig5a_position", f"no baseline training store or sweep under {run_dir}")
    else:
        by_position, by_position_updates = position_tables(view)
        if by_position_updates is None:
            print("fig5_position: |Δp|-by-position panel left out: the store has no `updates`")
        figs.save("fig5a_position", position_plots.plot_u_curve(by_position, by_position_updates))
    intervention_panel(figs, lay, "position", "fig5b_intervention_position", by="position")
    method_curves_panel(figs, lay, "fig5cd_position_runs", ["baseline", "position", "position-begin"],
                        metrics=("entropy", "response_length"))
    return figs.done()


if __name__ == "__main__":
    sys.exit(cli(main, __doc__))
