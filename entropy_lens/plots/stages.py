"""Stage-level figures: Fig. 1 and the rising-stage panels of Fig. 2 (paper-notes §2.1 A–C, §3)."""

from __future__ import annotations

import polars as pl

from entropy_lens.plots.style import (
    ENTROPY_LABEL,
    PALETTE,
    POLARITY_COLORS,
    STEP_LABEL,
    as_frame,
    lens_style,
    mark_boundary,
    new_figure,
)


ACCURACY_LABELS = {"accuracy": "accuracy (training batch)", "eval_accuracy": "accuracy (held-out)"}


def plot_entropy_accuracy(curves, boundary: int | None = None, accuracy_cols=None, title: str | None = None,
                          boundary_ci: tuple[int, int] | None = None):
    """Fig. 1: policy entropy (left axis, nats) and accuracy (right axis) vs step, red line at the boundary
    (``boundary``: the first plateau step) over a band of its 95% interval ``boundary_ci``.

    ``curves`` is :func:`entropy_lens.analysis.stages.step_curves` output, optionally with more accuracy
    columns (one per benchmark: pass their names in ``accuracy_cols``; default: ``accuracy`` and
    ``eval_accuracy`` when present).
    """
    df = as_frame(curves).sort("step")
    cols = accuracy_cols or [c for c in ("accuracy", "eval_accuracy") if c in df.columns]
    with lens_style():
        fig, ax = new_figure(width=5.5)
        ax.plot(df["step"], df["entropy"], color="#333333", label="entropy")
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel(ENTROPY_LABEL)
        ax2 = ax.twinx()
        ax2.grid(False)
        for i, c in enumerate(cols):
            d = df.drop_nulls(c)
            # A per-step training-batch accuracy is noisy; a periodic held-out accuracy is the headline.
            dense = d.height > 0.5 * df.height and len(cols) > 1
            ax2.plot(d["step"], d[c], color=PALETTE[i % len(PALETTE)], marker=None if dense else "o",
                     markersize=3, linewidth=0.8 if dense else 1.8, alpha=0.45 if dense else 1.0,
                     label=ACCURACY_LABELS.get(c, c))
        ax2.set_ylabel("accuracy (fraction correct)")
        ax2.spines["right"].set_visible(True)
        mark_boundary(ax, boundary, ci=boundary_ci)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        ax.set_title(title or "Entropy and accuracy during training")
        fig.tight_layout()
    return fig


def plot_seed_curves(curves, boundaries: dict, metrics=("entropy", "eval_accuracy")):
    """Fig. 1 over seeds: one panel per metric, a thin line per seed and the band between the seeds' lowest
    and highest value at each step; each seed's stage boundary as a line in its colour, over a band of its
    95% interval.

    ``curves``: long table with ``seed`` (a label), ``step`` and the ``metrics`` (step_curves columns of each
    seed's run); ``boundaries``: seed label → (first plateau step, (ci low, ci high) or None), or None for a
    seed without a boundary.
    """
    df = as_frame(curves).sort("seed", "step")
    shown = [m for m in metrics if m in df.columns and df[m].drop_nulls().len()]
    seeds = df["seed"].unique(maintain_order=True).to_list()
    with lens_style():
        fig, axes = new_figure(1, len(shown), width=4.2, squeeze=False)
        for ax, metric in zip(axes[0], shown):
            d = df.drop_nulls(metric)
            band = d.group_by("step").agg(pl.col(metric).min().alias("lo"), pl.col(metric).max().alias("hi")).sort("step")
            ax.fill_between(band["step"], band["lo"], band["hi"], color="#999999", alpha=0.25, linewidth=0,
                            label=f"range over {len(seeds)} seeds")
            for i, seed in enumerate(seeds):
                color = PALETTE[i % len(PALETTE)]
                s = d.filter(pl.col("seed") == seed)
                dense = s.height > 0.5 * df.filter(pl.col("seed") == seed).height
                ax.plot(s["step"], s[metric], color=color, linewidth=0.9, marker=None if dense else "o",
                        markersize=2.5, label=str(seed))
                found = boundaries.get(seed)
                if found is not None:
                    step, ci = found
                    ax.axvline(step, color=color, linewidth=1.0, linestyle="--", zorder=5)
                    if ci is not None and ci[1] > ci[0]:
                        ax.axvspan(ci[0], ci[1], color=color, alpha=0.08, linewidth=0, zorder=0)
            ax.set_xlabel(STEP_LABEL)
            ax.set_ylabel(ENTROPY_LABEL if metric == "entropy" else ACCURACY_LABELS.get(metric, metric))
        axes[0][0].legend(loc="upper center", bbox_to_anchor=(0.5 * len(shown), -0.2), ncol=len(seeds) + 1, frameon=False)
        fig.suptitle("Entropy and accuracy over seeds (dashed: each seed's stage boundary and its 95% CI)")
        fig.tight_layout()
    return fig


def plot_polarity_entropy(table, boundary: int | None = None, value: str = "entropy_token_mean"):
    """Fig. 2c: mean entropy of positive vs negative samples vs step (``polarity_entropy`` output)."""
    df = as_frame(table).sort("step")
    with lens_style():
        fig, ax = new_figure()
        for pol in ("positive", "negative", "all"):
            d = df.filter(pl.col("polarity") == pol)
            if d.height:
                ax.plot(d["step"], d[value], color=POLARITY_COLORS[pol], label=f"{pol} samples")
        mark_boundary(ax, boundary)
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel(f"{'token' if 'token' in value else 'sample'}-mean entropy (nats)")
        ax.set_title("Entropy of positive vs negative samples")
        ax.legend()
        fig.tight_layout()
    return fig


def plot_token_shift(top, n: int = 15):
    """Fig. 2b: token types with the largest entropy drop and the largest frequency rise
    (``top_token_shifts`` output: ``ranking``, ``rank``, ``score``, ``token``/``token_id``)."""
    df = as_frame(top)
    rankings = [r for r in ("entropy_drop", "freq_rise") if r in df["ranking"].unique().to_list()]
    xlabels = {"entropy_drop": "entropy decrease (nats)", "freq_rise": "frequency increase (share of tokens)"}
    with lens_style():
        fig, axes = new_figure(1, max(1, len(rankings)), width=4.0, height=0.25 * n + 1.2, squeeze=False)
        for ax, name in zip(axes[0], rankings):
            d = df.filter(pl.col("ranking") == name).sort("rank").head(n)
            labels = [repr(t) if t is not None else str(i) for t, i in zip(d["token"].to_list(), d["token_id"].to_list())]
            ax.barh(range(d.height), d["score"].to_list(), color="#1f77b4" if name == "entropy_drop" else "#ff7f0e")
            ax.set_yticks(range(d.height), labels)
            ax.invert_yaxis()
            ax.set_xlabel(xlabels[name])
            ax.set_title("largest entropy drop" if name == "entropy_drop" else "largest frequency rise")
        fig.tight_layout()
    return fig


def plot_defect_proportions(table, boundary: int | None = None, show_any: bool = False):
    """Fig. 2d: share of defective responses per category vs step (``defect_proportions`` output)."""
    df = as_frame(table).sort("step")
    with lens_style():
        fig, ax = new_figure()
        kinds = [k for k in df["defect"].unique(maintain_order=True).to_list() if show_any or k != "any"]
        for i, k in enumerate(kinds):
            d = df.filter(pl.col("defect") == k)
            ax.plot(d["step"], d["proportion"], color=PALETTE[i % len(PALETTE)], label=k.replace("_", " "))
            if "ci_low" in d.columns:
                ax.fill_between(d["step"], d["ci_low"], d["ci_high"], color=PALETTE[i % len(PALETTE)], alpha=0.15, linewidth=0)
        mark_boundary(ax, boundary)
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel("proportion of responses")
        ax.set_ylim(bottom=0)
        ax.set_title("Defective responses")
        ax.legend()
        fig.tight_layout()
    return fig
