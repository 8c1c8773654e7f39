"""Token-level figures (Fig. 5a): entropy vs relative position (U-curve) and |Δp| by position."""

from __future__ import annotations

import polars as pl

from entropy_lens.plots.style import ENTROPY_LABEL, POLARITY_COLORS, POSITION_LABEL, as_frame, lens_style, new_figure


def plot_u_curve(table, updates_table=None):
    """Fig. 5a: mean entropy per relative-position bin, overall and by polarity (``entropy_by_position``);
    with ``updates_table`` (``update_by_position``) a second panel of mean |Δp| by position."""
    df = as_frame(table)
    with lens_style():
        fig, axes = new_figure(1, 2 if updates_table is not None else 1, squeeze=False)
        ax = axes[0][0]
        for pol in ("all", "positive", "negative"):
            d = df.filter(pl.col("polarity") == pol).sort("pos_bin")
            if d.height:
                ax.plot(d["rel_mid"], d["entropy_mean"], marker="o", markersize=2.5, color=POLARITY_COLORS[pol],
                        label=pol, linewidth=2.0 if pol == "all" else 1.2)
        ax.set_xlabel(POSITION_LABEL)
        ax.set_ylabel(f"mean {ENTROPY_LABEL}")
        ax.set_xlim(0, 1)
        ax.set_title("Entropy by position")
        ax.legend()
        if updates_table is not None:
            u = as_frame(updates_table, "updates_table").sort("pos_bin")
            ax = axes[0][1]
            ax.plot(u["rel_mid"], u["mean_abs_delta_p"], marker="o", markersize=2.5, color="#1f77b4")
            ax.set_xlabel(POSITION_LABEL)
            ax.set_ylabel("mean |Δp|")
            ax.set_xlim(0, 1)
            ax.set_title("Probability updates by position")
        fig.tight_layout()
    return fig
