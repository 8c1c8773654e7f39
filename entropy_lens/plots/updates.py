"""Plateau-stage figures (Fig. 3): Δp histograms, |Δp| and gradient norm by entropy bin, category bars."""

from __future__ import annotations

import numpy as np
import polars as pl

from entropy_lens.plots.style import CATEGORY_COLORS, ENTROPY_LABEL, POLARITY_COLORS, as_frame, lens_style, new_figure


def plot_delta_p_histogram(hist, stage: str | None = None):
    """Fig. 3a: log-scale histogram of |Δp| for positive and negative samples, increases to the right and
    decreases mirrored to the left (``delta_p_histogram`` output; one ``stage`` if several are present)."""
    df = as_frame(hist)
    stages = df["stage"].unique().to_list()
    st = stage or ("plateau" if "plateau" in stages else stages[0])
    df = df.filter((pl.col("stage") == st) & (pl.col("direction") != "zero"))
    with lens_style():
        fig, axes = new_figure(1, 2, sharey=True, squeeze=False)
        for ax, pol in zip(axes[0], ("positive", "negative")):
            d = df.filter(pl.col("polarity") == pol)
            for direction, sign in (("increase", 1), ("decrease", -1)):
                dd = d.filter(pl.col("direction") == direction).sort("bin_low")
                if dd.height == 0:
                    continue
                centres = sign * np.sqrt(dd["bin_low"].to_numpy() * dd["bin_high"].to_numpy())
                widths = dd["bin_high"].to_numpy() - dd["bin_low"].to_numpy()
                ax.bar(centres, dd["share"].to_list(), width=sign * widths, align="center",
                       color=POLARITY_COLORS[pol], alpha=0.9 if sign > 0 else 0.5,
                       label=f"Δp {'>' if sign > 0 else '<'} 0")
            ax.set_xscale("symlog", linthresh=float(df["bin_low"].min() or 1e-8) if df.height else 1e-8)
            ax.set_yscale("log")
            ax.set_xlabel("Δp (probability change, symlog)")
            ax.set_title(f"{pol} samples ({st})")
            ax.legend()
        axes[0][0].set_ylabel("share of tokens (log)")
        fig.tight_layout()
    return fig


def plot_entropy_bins(table):
    """Fig. 3b: mean |Δp| and mean logit-gradient norm sqrt(1 − 2p + Σp²) by entropy quantile bin
    (``update_by_entropy_bin`` output)."""
    df = as_frame(table).sort("entropy_bin")
    x = df["entropy_mean"].to_numpy()
    panels = [("mean_abs_delta_p", "mean |Δp|"), ("mean_grad_norm", "mean logit-gradient norm")]
    panels = [p for p in panels if p[0] in df.columns and df[p[0]].null_count() < df.height]
    with lens_style():
        fig, axes = new_figure(1, max(1, len(panels)), squeeze=False)
        for ax, (col, label) in zip(axes[0], panels):
            ax.plot(x, df[col].to_numpy(), marker="o", color="#1f77b4")
            ax.set_xlabel(f"token {ENTROPY_LABEL}, bin mean")
            ax.set_ylabel(label)
        fig.suptitle("Updates and gradients by entropy bin")
        fig.tight_layout()
    return fig


def plot_category_updates(table, stage: str | None = None):
    """Fig. 3 category panel: share of tokens vs share of significant updates, and mean |Δp|, per semantic
    category (``category_updates`` output)."""
    df = as_frame(table)
    stages = df["stage"].unique().to_list()
    st = stage or ("plateau" if "plateau" in stages else stages[0])
    df = df.filter(pl.col("stage") == st)
    cats = df["category"].to_list()
    colors = [CATEGORY_COLORS.get(c, "#777777") for c in cats]
    x = np.arange(len(cats))
    with lens_style():
        fig, axes = new_figure(1, 2, squeeze=False)
        ax = axes[0][0]
        ax.bar(x - 0.2, df["share_tokens"].to_list(), width=0.4, color=colors, alpha=0.45, label="share of tokens")
        ax.bar(x + 0.2, df["share_of_significant"].to_list(), width=0.4, color=colors, label="share of significant updates")
        ax.set_xticks(x, cats)
        ax.set_ylabel("share")
        ax.legend()
        ax = axes[0][1]
        ax.bar(x, df["mean_abs_delta_p"].to_list(), color=colors)
        ax.set_xticks(x, cats)
        ax.set_ylabel("mean |Δp|")
        fig.suptitle(f"Update strength by token category ({st})")
        fig.tight_layout()
    return fig
