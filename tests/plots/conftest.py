"""Tiny analysis tables for the figure tests, produced by the analysis functions on a small store."""

import numpy as np
import polars as pl
import pytest

from tests.analysis.store_builders import make_samples, make_tokens, make_updates


@pytest.fixture(scope="module")
def store():
    rng = np.random.default_rng(0)
    tok_rows, smp_rows, p_next = [], [], {}
    for step in range(6):
        for s in range(4):
            L = 10
            ent = list(rng.uniform(0.1, 2.0, L))
            tok_rows.append(dict(step=step, prompt_id=0, sample_id=s, entropy=ent, token_ids=list(rng.integers(0, 6, L)),
                                 probs=list(rng.uniform(0.2, 0.9, L))))
            smp_rows.append(dict(step=step, prompt_id=0, sample_id=s, correct=s % 2 == 0, logppl=float(rng.uniform(0.5, 2)),
                                 text="ok \\boxed{1}" if s else "答案", format_ok=s != 3))
            for t in range(L):
                p_next[(step, 0, s, t)] = float(rng.uniform(0.2, 0.9))
    tokens = make_tokens(tok_rows)
    vocab = pl.LazyFrame({"token_id": list(range(6)), "token": ["3", "=", " so", " wait", " the", "x"]},
                         schema={"token_id": pl.Int32, "token": pl.Utf8})
    return dict(tokens=tokens, samples=make_samples(smp_rows), updates=make_updates(tokens, p_next), vocab=vocab)


def check_saved(fig, tmp_path, name):
    from entropy_lens.plots.style import save_figure

    paths = save_figure(fig, tmp_path / name)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 0


def labels(ax) -> list[str]:
    """Labels of the axes' lines, in drawing order (matplotlib's own "_child..." labels left out)."""
    return [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")]


def bar_containers(ax) -> list:
    """The axes' bar containers, one per ``ax.bar`` / ``ax.barh`` call (error bars left out)."""
    from matplotlib.container import BarContainer

    return [c for c in ax.containers if isinstance(c, BarContainer)]


def bar_counts(ax) -> list[int]:
    """Bars per ``ax.bar`` / ``ax.barh`` call."""
    return [len(c) for c in bar_containers(ax)]


def boundary_lines(ax) -> list[float]:
    """x of the red stage-boundary lines."""
    from entropy_lens.plots.style import BOUNDARY_COLOR

    return [ln.get_xdata()[0] for ln in ax.lines if ln.get_color() == BOUNDARY_COLOR]
