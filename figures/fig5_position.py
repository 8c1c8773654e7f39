"""Fig. 5 (token level, PAPER §2.3 J–L): (a) mean entropy vs relative position (U-curve; with Δp, also
|Δp| by position), (b) accuracy change after replacing high-entropy tokens at the beginning vs the end
(RUN/interventions.parquet, kind "position"), (c, d) accuracy, entropy and response length vs step for the
end-bonus (RUN/position) and begin-bonus (RUN/position-begin) runs against the baseline.
Usage: python figures/fig5_position.py --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _figlib as F  # noqa: E402
from entropy_lens.analysis import position  # noqa: E402
from entropy_lens.plots import position as ppos  # noqa: E402


def main(run_dir, out_dir="figures/out") -> list[Path]:
    lay, figs = F.Layout(Path(run_dir)), F.Figures("fig5_position", out_dir)
    store = lay.analysis_store()
    if store is None:
        figs.skip("fig5a_position", f"no baseline training store or sweep under {run_dir}")
    else:
        ebp = position.entropy_by_position(tokens=store.tokens, samples=store.samples)
        has_upd = store.updates.select(pl.len()).collect().item() > 0
        ubp = position.update_by_position(tokens=store.tokens, updates=store.updates) if has_upd else None
        if not has_upd:
            print("fig5_position: |Δp|-by-position panel left out: the store has no `updates`")
        figs.save("fig5a_position", ppos.plot_u_curve(ebp, ubp))
    F.intervention_panel(figs, lay, "position", "fig5b_intervention_position", by="position")
    F.method_curves_panel(figs, lay, "fig5cd_position_runs", ["baseline", "position", "position-begin"],
                          metrics=("entropy", "response_length"))
    return figs.done()


if __name__ == "__main__":
    sys.exit(F.cli(main, __doc__))
