"""Fig. 4 (instance level, paper-notes §2.2 G–I): (a) share of the top-|Δp| tokens by PPL bucket, (b) accuracy
change after replacing high-entropy tokens in low- vs high-PPL samples (RUN/baseline/interventions.parquet, kind
"ppl"), (c, d) accuracy and entropy vs step for the low-PPL (RUN/ppl) and high-PPL (RUN/ppl-high) weighted
runs against the baseline.  Usage: python -m figures.fig4_instance --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

from entropy_lens.analysis import instance
from entropy_lens.plots import instance as instance_plots
from figures.figlib import Figures, Layout, cli, intervention_panel, method_curves_panel


def main(run_dir, out_dir="figures/out", top_frac: float = 0.01) -> list[Path]:
    lay, figs = Layout(Path(run_dir)), Figures("fig4_instance", out_dir)
    view = lay.view
    if view is None or not view.has_updates:
        figs.skip("fig4a_ppl_share", "no store with `updates` (Δp) under RUN/baseline/sweep")
    else:
        scope = view.delta_p_scope
        t = instance.ppl_bucket_updates(tokens=view.tokens_by_step, updates=view.updates_by_step, samples=view.samples,
                                        top_frac=top_frac, **scope.kwargs)
        figs.save("fig4a_ppl_share", instance_plots.plot_ppl_bucket_share(t, stage=scope.stage))
    intervention_panel(figs, lay, "ppl", "fig4b_intervention_ppl", by="PPL")
    method_curves_panel(figs, lay, "fig4cd_ppl_runs", ["baseline", "ppl", "ppl-high"], metrics=("entropy",))
    return figs.done()


if __name__ == "__main__":
    sys.exit(cli(main, __doc__))
