"""One look for every figure: rc theme, palette, the red stage line, and PNG + PDF saving."""

from __future__ import annotations

import contextlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

BOUNDARY_COLOR = "#d62728"
POLARITY_COLORS = {"positive": "#2ca02c", "negative": "#9467bd", "all": "#333333"}
CATEGORY_COLORS = {"formal": "#1f77b4", "logical": "#ff7f0e", "metacognitive": "#2ca02c", "support": "#7f7f7f"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]

RC = {
    "figure.dpi": 110,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "lines.linewidth": 1.6,
    "pdf.fonttype": 42,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
}

ENTROPY_LABEL = "entropy (nats)"
STEP_LABEL = "step"
POSITION_LABEL = "relative position"


@contextlib.contextmanager
def lens_style():
    """Context in which every figure of the toolkit is drawn (``with lens_style(): ...``)."""
    with plt.rc_context(RC):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 4.2, height: float = 3.0, **kw):
    """``plt.subplots`` sized per panel (inches), squeezed like matplotlib's default."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), **kw)


def mark_boundary(ax, step: int | None, label: bool = True, ci: tuple[int, int] | None = None) -> None:
    """Red vertical line at the rising → plateau transition, ``step`` = the first plateau step, and a light
    band over its 95% interval ``ci`` when given; no-op for None."""
    if step is None:
        return
    step = int(step)
    ax.axvline(step, color=BOUNDARY_COLOR, linewidth=1.2, linestyle="-", zorder=5,
               label=f"stage boundary (step {step})" if label else None)
    if ci is not None and ci[1] > ci[0]:
        ax.axvspan(ci[0], ci[1], color=BOUNDARY_COLOR, alpha=0.12, linewidth=0, zorder=0,
                   label=f"95% CI of the boundary ({ci[0]}–{ci[1]})" if label else None)


def as_frame(table, name: str = "table") -> pl.DataFrame:
    """Accept a polars DataFrame/LazyFrame (or pandas) and return a polars DataFrame."""
    if isinstance(table, pl.LazyFrame):
        return table.collect()
    if isinstance(table, pl.DataFrame):
        return table
    try:
        return pl.from_pandas(table)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{name}: expected a polars DataFrame, got {type(table).__name__}") from e


def save_figure(fig, path_stem) -> list[Path]:
    """Write ``{path_stem}.png`` and ``{path_stem}.pdf`` (parents created); return both paths."""
    stem = Path(path_stem)
    if stem.suffix in (".png", ".pdf"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        p = stem.parent / f"{stem.name}.{ext}"
        fig.savefig(p)
        out.append(p)
    return out
