"""Fig. 6 (where the entropy went, issue 12; not a figure of the paper): (a) each group's contribution to the
step's predicted entropy change across steps, per axis; (b) the first-order prediction against the realized
change (per step, and per token in equal-count bins); (c) each group's share of Σ|ΔH| in the rising stage and
in the plateau, with bootstrap CIs.

Needs the baseline's training run with store schema 2 (tokens with ``sum_p2_logp``; for (b) its ``updates``
with ``entropy_next``, written by ``entropy-lens train`` right after each update).  The tables are those of
the report's "Where the entropy went" section (``entropy_lens.analysis.attribution``), from seed 0's RunView.
Usage: python -m figures.fig6_attribution --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

from entropy_lens.analysis import attribution
from entropy_lens.errors import UserError
from entropy_lens.plots import attribution as attribution_plots
from figures.figlib import Figures, Layout, cli


def main(run_dir, out_dir="figures/out", n_boot: int = 1000) -> list[Path]:
    lay, figs = Layout(Path(run_dir)), Figures("fig6_attribution", out_dir)
    view = lay.view
    if view is None:
        figs.skip("fig6a/b/c", f"no baseline training store or sweep under {run_dir}")
        return figs.done()
    try:
        account = attribution.run_account(view)
    except UserError as e:
        figs.skip("fig6a/b/c", str(e))
        return figs.done()
    b = view.boundary
    figs.save("fig6a_entropy_contributions", attribution_plots.plot_contributions(
        attribution.all_contributions(account), boundary=view.boundary_step, ci=b.ci if b is not None else None))
    if "dH_real" in account.columns:
        figs.save("fig6b_predicted_vs_realized", attribution_plots.plot_predicted_vs_realized(
            attribution.step_account(account), attribution.validation_bins(account)))
    else:
        figs.skip("fig6b_predicted_vs_realized", "the rollouts' updates carry no entropy_next (store schema 2)")
    shares = attribution.decompose(account, n_boot=n_boot)
    for stage in [s for s in ("rising", "plateau") if s in set(shares["stage"].to_list())]:
        figs.save(f"fig6c_shares_{stage}", attribution_plots.plot_shares(shares, stage))
    return figs.done()


if __name__ == "__main__":
    sys.exit(cli(main, __doc__))
