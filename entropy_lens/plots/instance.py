"""Instance-level figures (Fig. 4a–b): PPL-bucket share of large updates, intervention bars."""

from __future__ import annotations

import numpy as np
import polars as pl

from entropy_lens.plots.style import PALETTE, as_frame, lens_style, new_figure


def plot_ppl_bucket_share(table, stage: str | None = None):
    """Fig. 4a: share of top-|Δp| tokens coming from each PPL bucket, next to the bucket's share of all
    tokens (``ppl_bucket_updates`` output)."""
    df = as_frame(table)
    stages = df["stage"].unique().to_list()
    st = stage or ("plateau" if "plateau" in stages else stages[0])
    df = df.filter(pl.col("stage") == st)
    x = np.arange(df.height)
    with lens_style():
        fig, ax = new_figure()
        ax.bar(x - 0.2, df["share_tokens"].to_list(), width=0.4, color="#7f7f7f", label="share of all tokens")
        ax.bar(x + 0.2, df["share_top"].to_list(), width=0.4, color="#1f77b4", label="share of top-|Δp| tokens")
        ax.set_xticks(x, [f"{b} PPL" for b in df["ppl_bucket"].to_list()])
        ax.set_ylabel("share")
        ax.set_title(f"Where large updates come from ({st})")
        ax.legend()
        fig.tight_layout()
    return fig


def plot_intervention(table, title: str = "Accuracy change after replacing high-entropy tokens"):
    """Fig. 4b / 5b: Δaccuracy per group with CI error bars and n (table: ``group``, ``delta_accuracy``,
    ``ci_low``, ``ci_high``, ``n``)."""
    df = as_frame(table)
    x = np.arange(df.height)
    d = df["delta_accuracy"].to_numpy()
    err = np.vstack([d - df["ci_low"].to_numpy(), df["ci_high"].to_numpy() - d])
    with lens_style():
        fig, ax = new_figure()
        ax.bar(x, d, yerr=err, capsize=3, color=[PALETTE[i % len(PALETTE)] for i in range(df.height)])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(x, [f"{g}\n(n={n})" for g, n in zip(df["group"].to_list(), df["n"].to_list())])
        ax.set_ylabel("Δ accuracy (fraction correct)")
        ax.set_title(title)
        fig.tight_layout()
    return fig
