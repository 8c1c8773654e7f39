"""Fig. 4 (instance level, PAPER §2.2 G–I): (a) share of the top-|Δp| tokens by PPL bucket, (b) accuracy
change after replacing high-entropy tokens in low- vs high-PPL samples (RUN/interventions.parquet, kind
"ppl"), (c, d) accuracy and entropy vs step for the low-PPL (RUN/ppl) and high-PPL (RUN/ppl-high) weighted
runs against the baseline.  Usage: python figures/fig4_instance.py --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _figlib as F  # noqa: E402
from entropy_lens.analysis import instance  # noqa: E402
from entropy_lens.analysis.report import update_stage  # noqa: E402
from entropy_lens.plots import instance as pinst  # noqa: E402


def main(run_dir, out_dir="figures/out", top_frac: float = 0.01) -> list[Path]:
    lay, figs = F.Layout(Path(run_dir)), F.Figures("fig4_instance", out_dir)
    store = lay.analysis_store()
    b = lay.boundary()
    if store is None or store.updates.select(pl.len()).collect().item() == 0:
        figs.skip("fig4a_ppl_share", "no store with `updates` (Δp) under RUN/baseline/sweep")
    else:
        stage, _ = update_stage(store.updates, None if b is None else b.step)
        kw = dict(boundary=b.step, stage=stage) if stage else {}
        t = instance.ppl_bucket_updates(tokens=store.tokens, updates=store.updates, samples=store.samples,
                                        top_frac=top_frac, **kw)
        figs.save("fig4a_ppl_share", pinst.plot_ppl_bucket_share(t, stage=stage))
    F.intervention_panel(figs, lay, "ppl", "fig4b_intervention_ppl", by="PPL")
    F.method_curves_panel(figs, lay, "fig4cd_ppl_runs", ["baseline", "ppl", "ppl-high"], metrics=("entropy",))
    return figs.done()


if __name__ == "__main__":
    sys.exit(F.cli(main, __doc__))
