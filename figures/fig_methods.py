"""Fig. R and the methods' entropy curves (PAPER §3): accuracy and policy entropy vs step for the baseline
(RUN/baseline), GRPO+PPL (RUN/ppl) and GRPO+POSITION (RUN/position); raw values thin, EMA bold.
Usage: python figures/fig_methods.py --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _figlib as F  # noqa: E402
from entropy_lens.plots import methods as pmeth  # noqa: E402


def main(run_dir, out_dir="figures/out") -> list[Path]:
    lay, figs = F.Layout(Path(run_dir)), F.Figures("fig_methods", out_dir)
    curves = lay.method_steps(["baseline", "ppl", "position"])
    have = [] if curves is None else curves["run"].unique().to_list()
    acc = F.accuracy_metric(curves) if curves is not None else None
    if curves is None or len(have) < 2 or acc is None or "baseline" not in [k for k, v in F.RUNS.items() if v in have]:
        figs.skip("figR_methods", f"needs RUN/baseline and RUN/ppl or RUN/position with steps.parquet; found {have}")
    else:
        figs.save("figR_methods", pmeth.plot_method_curves(curves, metrics=(acc, "entropy"), boundary=lay.boundary()))
    return figs.done()


if __name__ == "__main__":
    sys.exit(F.cli(main, __doc__))
