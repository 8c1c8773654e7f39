"""Fig. 2 (rising stage, PAPER §2.1 A–C): (b) token types with the largest entropy drop / frequency rise,
(c) entropy of positive vs negative samples, (d) proportions of defective responses.

Reads the baseline's sweep (else the baseline training store); the stage boundary from the baseline's curves.
Usage: python figures/fig2_rising.py --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _figlib as F  # noqa: E402
from entropy_lens.analysis import defects, polarity, vocab  # noqa: E402
from entropy_lens.errors import UserError  # noqa: E402
from entropy_lens.plots import stages as pst  # noqa: E402


def main(run_dir, out_dir="figures/out") -> list[Path]:
    lay, figs = F.Layout(Path(run_dir)), F.Figures("fig2_rising", out_dir)
    store = lay.analysis_store()
    if store is None:
        figs.skip("fig2b/c/d", f"no baseline training store or sweep under {run_dir}")
        return figs.done()
    b = lay.boundary()
    bstep = None if b is None else b.step
    try:
        shift = vocab.token_shift(tokens=store.tokens, vocab=store.vocab, boundary=bstep)
        top = vocab.top_token_shifts(shift, n=15)
        if top.height:
            figs.save("fig2b_token_shift", pst.plot_token_shift(top))
        else:
            figs.skip("fig2b_token_shift", "no token type occurs often enough in the rising-stage windows")
    except UserError as e:
        figs.skip("fig2b_token_shift", str(e))
    pol = polarity.polarity_entropy(tokens=store.tokens, samples=store.samples)
    figs.save("fig2c_polarity_entropy", pst.plot_polarity_entropy(pol, boundary=b))
    figs.save("fig2d_defects", pst.plot_defect_proportions(defects.defect_proportions(samples=store.samples), boundary=b))
    return figs.done()


if __name__ == "__main__":
    sys.exit(F.cli(main, __doc__))
