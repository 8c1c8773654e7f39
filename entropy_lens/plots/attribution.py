""""Where the entropy went" figures: each group's contribution to the entropy change across steps, and the
first-order prediction against the realized change (tables of :mod:`entropy_lens.analysis.attribution`)."""

from __future__ import annotations

import numpy as np
import polars as pl

from entropy_lens.plots.style import (
    CATEGORY_COLORS,
    PALETTE,
    POLARITY_COLORS,
    STEP_LABEL,
    as_frame,
    lens_style,
    mark_boundary,
    new_figure,
)

AXIS_TITLES = {"polarity": "polarity", "entropy_quantile": "entropy quintile (per step)", "position": "relative position",
               "ppl_bucket": "PPL bucket (within the prompt group)", "category": "token category"}


def _colors(axis: str, groups: list[str]) -> dict:
    known = {"polarity": POLARITY_COLORS, "category": CATEGORY_COLORS}.get(axis, {})
    return {g: known.get(g, PALETTE[i % len(PALETTE)]) for i, g in enumerate(groups)}


def plot_contributions(contributions: dict, boundary: int | None = None, ci: tuple[int, int] | None = None,
                       value_label: str = "predicted ΔH per token (per unit η)"):
    """One panel per axis: each group's contribution to the step's mean entropy change, across steps
    (``{axis: step_contributions(account, axis)}``); the groups of a panel add up to the step's mean."""
    items = [(a, as_frame(t)) for a, t in contributions.items()]
    with lens_style():
        fig, axes = new_figure(1, max(1, len(items)), width=3.6, squeeze=False)
        for ax, (axis, df) in zip(axes[0], items):
            groups = sorted(df["group"].unique().to_list())
            colors = _colors(axis, groups)
            for g in groups:
                d = df.filter(pl.col("group") == g).sort("step")
                ax.plot(d["step"].to_numpy(), d["contribution"].to_numpy(), label=str(g), color=colors[g], linewidth=1.1)
            ax.axhline(0.0, color="#333333", linewidth=0.6)
            mark_boundary(ax, boundary, label=False, ci=ci)
            ax.set_title(AXIS_TITLES.get(axis, axis))
            ax.set_xlabel(STEP_LABEL)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel(value_label)
        fig.suptitle("Where the entropy went: contributions by group")
        fig.tight_layout()
    return fig


def plot_predicted_vs_realized(steps, bins):
    """Left: each step's summed predicted ΔH (per unit η) against its summed realized ΔH, coloured by stage
    (``step_account`` output). Right: realized ΔH against predicted, tokens in equal-count bins of the
    prediction (``validation_bins`` output), per stage."""
    s, b = as_frame(steps, "steps"), as_frame(bins, "bins")
    stage_colors = {"rising": "#1f77b4", "plateau": "#ff7f0e", "all": "#333333"}
    with lens_style():
        fig, axes = new_figure(1, 2, squeeze=False)
        left, right = axes[0]
        for stage in sorted(s["stage"].unique().to_list()):
            d = s.filter(pl.col("stage") == stage)
            left.scatter(d["dH_pred_sum"].to_numpy(), d["dH_real_sum"].to_numpy(), s=12, label=stage,
                         color=stage_colors.get(stage, PALETTE[0]))
        left.set_xlabel("predicted Σ ΔH of the step (per unit η)")
        left.set_ylabel("realized Σ ΔH of the step (nats)")
        left.set_title("per step")
        for stage in sorted(b["stage"].unique().to_list()):
            d = b.filter(pl.col("stage") == stage).sort("bin")
            right.plot(d["dH_pred_mean"].to_numpy(), d["dH_real_mean"].to_numpy(), marker="o", markersize=3,
                       label=stage, color=stage_colors.get(stage, PALETTE[0]))
        for ax in (left, right):
            ax.axhline(0.0, color="#333333", linewidth=0.6)
            ax.axvline(0.0, color="#333333", linewidth=0.6)
            ax.legend()
        right.set_xlabel("predicted ΔH, bin mean (per unit η)")
        right.set_ylabel("realized ΔH, bin mean (nats)")
        right.set_title("per token, equal-count bins")
        fig.suptitle("First-order prediction against the realized entropy change")
        fig.tight_layout()
    return fig


def plot_shares(decomposition, stage: str, measure: str = "abs"):
    """Bars: each group's share of the stage's Σ|ΔH| (``measure`` "abs") or net ΔH ("net"), with its bootstrap
    CI, one panel per axis (``decompose`` output)."""
    d = as_frame(decomposition).filter(pl.col("stage") == stage)
    axes_present = [a for a in AXIS_TITLES if a in set(d["axis"].to_list())]
    col = f"share_{measure}"
    with lens_style():
        fig, axes = new_figure(1, max(1, len(axes_present)), width=2.8, squeeze=False)
        for ax, axis in zip(axes[0], axes_present):
            a = d.filter(pl.col("axis") == axis).sort("group")
            groups = a["group"].to_list()
            y = a[col].to_numpy()
            err = np.vstack([y - a[f"{col}_ci_low"].to_numpy(), a[f"{col}_ci_high"].to_numpy() - y])
            colors = _colors(axis, groups)
            ax.bar(range(len(groups)), y, yerr=np.nan_to_num(err), color=[colors[g] for g in groups], capsize=2)
            ax.set_xticks(range(len(groups)), groups, rotation=45, ha="right", fontsize=7)
            ax.set_title(AXIS_TITLES[axis], fontsize=8)
        axes[0][0].set_ylabel(f"share of {'Σ|ΔH|' if measure == 'abs' else 'net ΔH'} ({stage})")
        fig.tight_layout()
    return fig
