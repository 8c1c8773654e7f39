"""Fig. 2 (rising stage, paper-notes §2.1 A–C): (b) token types with the largest entropy drop / frequency rise,
(c) entropy of positive vs negative samples, (d) proportions of defective responses.

Reads the baseline's sweep (else the baseline training store); (b) and (d) the training rollouts when they
record more steps than the sweep (``RunView.rising_rollouts``); the stage boundary is the run's.
Usage: python -m figures.fig2_rising --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

from entropy_lens.analysis import defects, polarity, vocab
from entropy_lens.errors import UserError
from entropy_lens.plots import stages as stage_plots
from figures.figlib import Figures, Layout, cli


def main(run_dir, out_dir="figures/out") -> list[Path]:
    lay, figs = Layout(Path(run_dir)), Figures("fig2_rising", out_dir)
    view = lay.view
    if view is None:
        figs.skip("fig2b/c/d", f"no baseline training store or sweep under {run_dir}")
        return figs.done()
    boundary = view.boundary_step
    try:
        # B and C on the densest responses the run has (RunView.rising_rollouts), as the report's findings
        shift = vocab.token_shift(tokens=view.rising_rollouts.tokens, vocab=view.vocab, boundary=boundary)
        top = vocab.top_token_shifts(shift, n=15)
        if top.height:
            figs.save("fig2b_token_shift", stage_plots.plot_token_shift(top))
        else:
            figs.skip("fig2b_token_shift", "no token type occurs often enough in the rising-stage windows")
    except UserError as e:
        figs.skip("fig2b_token_shift", str(e))
    pol = polarity.polarity_entropy(tokens=view.tokens, samples=view.samples)
    figs.save("fig2c_polarity_entropy", stage_plots.plot_polarity_entropy(pol, boundary=boundary))
    shares = defects.defect_proportions(samples=view.rising_rollouts.samples)
    figs.save("fig2d_defects", stage_plots.plot_defect_proportions(shares, boundary=boundary))
    return figs.done()


if __name__ == "__main__":
    sys.exit(cli(main, __doc__))
