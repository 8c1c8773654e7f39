"""Fig. 1: policy entropy and accuracy vs training step, red line at the rising → plateau boundary (PAPER §2.1).

Reads the baseline training run (its steps.parquet and rollouts) or, without one, the sweep's samples.
Usage: python figures/fig1_stages.py --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _figlib as F  # noqa: E402
from entropy_lens.plots import stages as pst  # noqa: E402


def main(run_dir, out_dir="figures/out") -> list[Path]:
    lay, figs = F.Layout(Path(run_dir)), F.Figures("fig1_stages", out_dir)
    curves = lay.curves()
    if curves is None:
        figs.skip("fig1_entropy_accuracy", f"no baseline training store or sweep under {run_dir}")
    else:
        b = lay.boundary()
        if b is None:
            print("fig1_stages: no stage boundary (too few steps); drawn without the red line")
        figs.save("fig1_entropy_accuracy", pst.plot_entropy_accuracy(curves, boundary=b))
    return figs.done()


if __name__ == "__main__":
    sys.exit(F.cli(main, __doc__))
