"""Fig. 3 (plateau stage, paper-notes §2.1 D–F): (a) Δp histograms for positive / negative samples, (b) mean |Δp|
and logit-gradient norm by entropy bin, (c) update strength by semantic token category.

Needs the baseline's sweep with `updates` (Δp under the next checkpoint); the gradient-only panel (b) is
drawn from any store.  The Δp panels use the run's Δp scope (the plateau when it has Δp rows).
Usage: python -m figures.fig3_plateau --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

from entropy_lens.analysis import categories, updates
from entropy_lens.plots import updates as update_plots
from figures.figlib import Figures, Layout, cli

NO_UPDATES = "the store has no `updates` (run `entropy-lens collect` with ≥ 2 checkpoints into RUN/baseline/sweep)"


def main(run_dir, out_dir="figures/out", top_frac: float = 0.01) -> list[Path]:
    lay, figs = Layout(Path(run_dir)), Figures("fig3_plateau", out_dir)
    view = lay.view
    if view is None:
        figs.skip("fig3a/b/c", f"no baseline training store or sweep under {run_dir}")
        return figs.done()
    scope = view.delta_p_scope
    print(f"fig3_plateau: Δp panels use {scope.note}")
    tables = dict(tokens=view.tokens_by_step, updates=view.updates_by_step)
    if view.has_updates:
        hist = updates.delta_p_histogram(**tables, samples=view.samples, boundary=view.boundary_step)
        figs.save("fig3a_delta_p_histogram", update_plots.plot_delta_p_histogram(hist, stage=scope.stage))
    else:
        figs.skip("fig3a_delta_p_histogram", NO_UPDATES)
    bins = updates.update_by_entropy_bin(**tables, top_frac=top_frac, **scope.kwargs)
    figs.save("fig3b_entropy_bins", update_plots.plot_entropy_bins(bins))
    if not view.has_updates:
        figs.skip("fig3b |Δp| panel", NO_UPDATES)
        figs.skip("fig3c_categories", NO_UPDATES)
    elif view.vocab is None:
        figs.skip("fig3c_categories", "the store has no vocab.parquet to classify tokens")
    else:
        cat = categories.category_updates(**tables, vocab=view.vocab, top_frac=top_frac, **scope.kwargs)
        figs.save("fig3c_categories", update_plots.plot_category_updates(cat, stage=scope.stage))
    return figs.done()


if __name__ == "__main__":
    sys.exit(cli(main, __doc__))
