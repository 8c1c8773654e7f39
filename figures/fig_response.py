"""Response analysis of the methods (paper-notes §3, §5.5): response length vs step, and the share of each
semantic token category (formal, logical, metacognitive, support) in late-training responses, for the
baseline, GRPO+PPL and GRPO+POSITION runs (each run's rollouts; token strings from a vocab.parquet).
Usage: python -m figures.fig_response --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

from entropy_lens.analysis import categories
from entropy_lens.analysis.context import late_start
from entropy_lens.plots import methods as method_plots
from entropy_lens.plots.style import CATEGORY_COLORS, lens_style, new_figure
from figures.figlib import RUNS, Figures, Layout, cli

METHODS = ["baseline", "ppl", "position"]


def plot_category_shares(table: pl.DataFrame):
    """Stacked bars: category proportions per run (``run``, ``category``, ``proportion``)."""
    runs = table["run"].unique(maintain_order=True).to_list()
    x = np.arange(len(runs))
    with lens_style():
        fig, ax = new_figure(width=1.2 * len(runs) + 2.5)
        bottom = np.zeros(len(runs))
        for c in categories.CATEGORIES:
            v = np.array([table.filter((pl.col("run") == r) & (pl.col("category") == c))["proportion"].sum() for r in runs])
            ax.bar(x, v, bottom=bottom, color=CATEGORY_COLORS[c], label=c, width=0.6)
            bottom += v
        ax.set_xticks(x, runs)
        ax.set_ylabel("share of response tokens")
        ax.set_ylim(0, 1)
        ax.set_title("Token categories of late-training responses")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
    return fig


def main(run_dir, out_dir="figures/out") -> list[Path]:
    lay, figs = Layout(Path(run_dir)), Figures("fig_response", out_dir)
    stores = {n: lay.run(n) for n in METHODS if lay.run(n) is not None}
    if len(stores) < 2:
        figs.skip("fig_response_*", f"needs at least two of RUN/{', RUN/'.join(METHODS)}; found {sorted(stores)}")
        return figs.done()
    # response length: the training log's response_length, else the rollouts' mean length per step
    frames = []
    for n, s in stores.items():
        st = s.steps.collect() if s.steps is not None else None
        if st is not None and "response_length" in st.columns:
            d = st.select(pl.col("step").cast(pl.Int64), pl.col("response_length").cast(pl.Float64))
        else:
            d = s.samples.group_by("step").agg(pl.col("length").cast(pl.Float64).mean().alias("response_length")).collect()
            d = d.with_columns(pl.col("step").cast(pl.Int64))
        frames.append(d.with_columns(pl.lit(RUNS[n]).alias("run")))
    figs.save("fig_response_length", method_plots.plot_response_length(pl.concat(frames).sort("run", "step")))
    vocab_lf = next((s.vocab for s in [*stores.values(), lay.sweep()] if s is not None and s.vocab is not None), None)
    if vocab_lf is None:
        figs.skip("fig_response_categories", "no vocab.parquet in the runs or the sweep to classify tokens")
        return figs.done()
    rows = []
    for n, s in stores.items():
        steps = s.tokens.select(pl.col("step").unique()).collect()
        start = lay.view.late_start(steps) if lay.view is not None else late_start(steps, None)
        t = s.tokens.filter(pl.col("step") >= start) if start is not None else s.tokens
        p = categories.category_proportions(tokens=t, vocab=vocab_lf, by=())
        rows.append(p.with_columns(pl.lit(RUNS[n]).alias("run")))
    figs.save("fig_response_categories", plot_category_shares(pl.concat(rows)))
    return figs.done()


if __name__ == "__main__":
    sys.exit(cli(main, __doc__))
