"""Fig. 3 (plateau stage, PAPER §2.1 D–F): (a) Δp histograms for positive / negative samples, (b) mean |Δp|
and logit-gradient norm by entropy bin, (c) update strength by semantic token category.

Needs the baseline's sweep with `updates` (Δp under the next checkpoint); the gradient-only panel (b) is
drawn from any store.  Usage: python figures/fig3_plateau.py --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _figlib as F  # noqa: E402
from entropy_lens.analysis import categories, updates  # noqa: E402
from entropy_lens.analysis.report import update_stage  # noqa: E402
from entropy_lens.plots import updates as pupd  # noqa: E402


def main(run_dir, out_dir="figures/out", top_frac: float = 0.01) -> list[Path]:
    lay, figs = F.Layout(Path(run_dir)), F.Figures("fig3_plateau", out_dir)
    store = lay.analysis_store()
    if store is None:
        figs.skip("fig3a/b/c", f"no baseline training store or sweep under {run_dir}")
        return figs.done()
    b = lay.boundary()
    bstep = None if b is None else b.step
    has_upd = store.updates.select(pl.len()).collect().item() > 0
    upd = store.updates if has_upd else None
    stage, note = update_stage(upd, bstep)
    kw = dict(boundary=bstep, stage=stage) if stage else {}
    print(f"fig3_plateau: Δp panels use {note}")
    why = "the store has no `updates` (run `entropy-lens collect` with ≥ 2 checkpoints into RUN/baseline/sweep)"
    if has_upd:
        hist = updates.delta_p_histogram(tokens=store.tokens, updates=upd, samples=store.samples, boundary=bstep)
        figs.save("fig3a_delta_p_histogram", pupd.plot_delta_p_histogram(hist, stage=stage))
    else:
        figs.skip("fig3a_delta_p_histogram", why)
    bins = updates.update_by_entropy_bin(tokens=store.tokens, updates=upd, top_frac=top_frac, **kw)
    figs.save("fig3b_entropy_bins", pupd.plot_entropy_bins(bins))
    if not has_upd:
        figs.skip("fig3b |Δp| panel", why)
        figs.skip("fig3c_categories", why)
    elif store.vocab is None:
        figs.skip("fig3c_categories", "the store has no vocab.parquet to classify tokens")
    else:
        cat = categories.category_updates(tokens=store.tokens, updates=upd, vocab=store.vocab, top_frac=top_frac, **kw)
        figs.save("fig3c_categories", pupd.plot_category_updates(cat, stage=stage))
    return figs.done()


if __name__ == "__main__":
    sys.exit(F.cli(main, __doc__))
