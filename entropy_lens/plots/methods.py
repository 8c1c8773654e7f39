"""Method-comparison figures: Fig. R (accuracy vs step, raw thin + EMA bold), entropy curves of the methods,
response-length comparison (paper-notes §3)."""

from __future__ import annotations

import numpy as np
import polars as pl

from entropy_lens.plots.style import ENTROPY_LABEL, PALETTE, STEP_LABEL, as_frame, lens_style, mark_boundary, new_figure

def ema(values, alpha: float = 0.1) -> np.ndarray:
    """Exponential moving average ``s_t = α·y_t + (1 − α)·s_{t−1}``, NaNs skipped (they repeat the last value):
    display smoothing for the bold lines of Fig. R, never used to find a stage boundary (its lag would move it)."""
    y = np.asarray(values, dtype=float)
    out = np.empty_like(y)
    acc = np.nan
    for i, v in enumerate(y):
        if np.isnan(v):
            out[i] = acc
            continue
        acc = v if np.isnan(acc) else alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


YLABELS = {"accuracy": "accuracy (fraction correct)", "eval_accuracy": "accuracy (fraction correct)",
           "entropy": ENTROPY_LABEL, "response_length": "response length (tokens)"}


def plot_method_curves(table, metrics=("accuracy", "entropy"), run_col: str = "run", alpha: float = 0.2,
                       boundary: int | None = None):
    """Several runs on shared axes, one panel per metric: raw values thin and faint, EMA(α) bold.

    ``table``: long format with ``run_col`` (e.g. "GRPO", "GRPO+PPL"), ``step`` and the ``metrics`` columns;
    ``boundary``: the first plateau step, marked in every panel.
    """
    df = as_frame(table).sort(run_col, "step")
    runs = df[run_col].unique(maintain_order=True).to_list()
    with lens_style():
        fig, axes = new_figure(1, len(metrics), squeeze=False)
        for ax, m in zip(axes[0], metrics):
            for i, run in enumerate(runs):
                d = df.filter(pl.col(run_col) == run).drop_nulls(m)
                c = PALETTE[i % len(PALETTE)]
                ax.plot(d["step"], d[m], color=c, linewidth=0.7, alpha=0.35)
                ax.plot(d["step"], ema(d[m].to_numpy(), alpha), color=c, linewidth=2.0, label=str(run))
            mark_boundary(ax, boundary, label=False)
            ax.set_xlabel(STEP_LABEL)
            ax.set_ylabel(YLABELS.get(m, m))
            ax.legend()
        fig.tight_layout()
    return fig


def plot_response_length(table, run_col: str = "run", value: str = "response_length"):
    """Response length per run: lines over ``step`` when present, else bars (one row per run)."""
    df = as_frame(table)
    runs = df[run_col].unique(maintain_order=True).to_list()
    with lens_style():
        fig, ax = new_figure()
        if "step" in df.columns:
            for i, run in enumerate(runs):
                d = df.filter(pl.col(run_col) == run).sort("step")
                ax.plot(d["step"], d[value], color=PALETTE[i % len(PALETTE)], label=str(run))
            ax.set_xlabel(STEP_LABEL)
            ax.legend()
        else:
            ax.bar(range(len(runs)), [df.filter(pl.col(run_col) == r)[value].mean() for r in runs],
                   color=[PALETTE[i % len(PALETTE)] for i in range(len(runs))])
            ax.set_xticks(range(len(runs)), [str(r) for r in runs])
        ax.set_ylabel(YLABELS[value] if value in YLABELS else value)
        ax.set_title("Response length")
        fig.tight_layout()
    return fig
