"""Each figure function on tables from the analysis functions: what it draws (lines, bars, panels, the stage
line) matches the table it is given, and it saves as PNG and PDF."""

import matplotlib.pyplot as plt
import polars as pl
import pytest

from entropy_lens.analysis import categories, defects, instance, polarity, position, stages, updates, vocab
from entropy_lens.plots import instance as instance_plots
from entropy_lens.plots import methods as method_plots
from entropy_lens.plots import position as position_plots
from entropy_lens.plots import stages as stage_plots
from entropy_lens.plots import updates as update_plots
from tests.plots.conftest import bar_containers, bar_counts, boundary_lines, check_saved, labels


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_fig1(store, tmp_path):
    curves = stages.step_curves(tokens=store["tokens"], samples=store["samples"])
    fig = stage_plots.plot_entropy_accuracy(curves, boundary=3)
    ax, acc_ax = fig.axes
    assert labels(ax) == ["entropy", "stage boundary (step 3)"] and boundary_lines(ax) == [3]
    assert list(ax.lines[0].get_xdata()) == curves["step"].to_list()
    assert labels(acc_ax) == ["accuracy (training batch)"]  # one line per accuracy column of the curves
    check_saved(fig, tmp_path, "fig1")
    assert boundary_lines(stage_plots.plot_entropy_accuracy(curves).axes[0]) == []


def test_polarity(store, tmp_path):
    t = polarity.polarity_entropy(tokens=store["tokens"], samples=store["samples"])
    fig = stage_plots.plot_polarity_entropy(t, boundary=3)
    (ax,) = fig.axes
    assert labels(ax) == ["positive samples", "negative samples", "stage boundary (step 3)"]  # one line per polarity
    for line, pol in zip(ax.lines, ("positive", "negative")):
        assert list(line.get_ydata()) == t.filter(pl.col("polarity") == pol)["entropy_token_mean"].to_list()
    check_saved(fig, tmp_path, "pol")


def test_token_shift(store, tmp_path):
    sh = vocab.token_shift(tokens=store["tokens"], vocab=store["vocab"], boundary=4, window=2, min_count=1)
    top = vocab.top_token_shifts(sh, n=3)
    fig = stage_plots.plot_token_shift(top)
    assert [a.get_title() for a in fig.axes] == ["largest entropy drop", "largest frequency rise"]
    assert [bar_counts(a) for a in fig.axes] == [[top.filter(pl.col("ranking") == r).height]
                                                  for r in ("entropy_drop", "freq_rise")]
    check_saved(fig, tmp_path, "shift")


def test_defects(store, tmp_path):
    d = defects.defect_proportions(samples=store["samples"])
    fig = stage_plots.plot_defect_proportions(d, boundary=3)
    (ax,) = fig.axes
    kinds = [k for k in d["defect"].unique(maintain_order=True).to_list() if k != "any"]
    assert labels(ax) == [k.replace("_", " ") for k in kinds] + ["stage boundary (step 3)"]
    assert len(ax.collections) == len(kinds)  # one CI band per kind
    check_saved(fig, tmp_path, "defects")


def test_delta_p_hist(store, tmp_path):
    h = updates.delta_p_histogram(tokens=store["tokens"], updates=store["updates"], samples=store["samples"], boundary=3)
    fig = update_plots.plot_delta_p_histogram(h)
    shown = h.filter((pl.col("stage") == "plateau") & (pl.col("direction") != "zero"))
    for ax, pol in zip(fig.axes, ("positive", "negative")):
        d = shown.filter(pl.col("polarity") == pol)
        want = [d.filter(pl.col("direction") == x).height for x in ("increase", "decrease")]
        assert bar_counts(ax) == [n for n in want if n] and ax.get_title() == f"{pol} samples (plateau)"
    check_saved(fig, tmp_path, "dp")


def test_entropy_bins(store, tmp_path):
    b = updates.update_by_entropy_bin(tokens=store["tokens"], updates=store["updates"], n_bins=5)
    fig = update_plots.plot_entropy_bins(b)
    assert [a.get_ylabel() for a in fig.axes] == ["mean |Δp|", "mean logit-gradient norm"]
    for ax, col in zip(fig.axes, ("mean_abs_delta_p", "mean_grad_norm")):
        (line,) = ax.lines
        assert list(line.get_ydata()) == b[col].to_list()
    check_saved(fig, tmp_path, "bins")
    tokens_only = updates.update_by_entropy_bin(tokens=store["tokens"], n_bins=5)
    assert [a.get_ylabel() for a in update_plots.plot_entropy_bins(tokens_only).axes] == ["mean logit-gradient norm"]


def test_categories(store, tmp_path):
    c = categories.category_updates(tokens=store["tokens"], updates=store["updates"], vocab=store["vocab"], top_frac=0.1)
    fig = update_plots.plot_category_updates(c)
    n = c.filter(pl.col("stage") == "all").height
    assert [bar_counts(a) for a in fig.axes] == [[n, n], [n]]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == c["category"].to_list()
    check_saved(fig, tmp_path, "cats")


def test_ppl_share(store, tmp_path):
    p = instance.ppl_bucket_updates(tokens=store["tokens"], updates=store["updates"], samples=store["samples"], top_frac=0.1)
    fig = instance_plots.plot_ppl_bucket_share(p)
    (ax,) = fig.axes
    assert bar_counts(ax) == [p.height, p.height]  # tokens' share and top-|Δp| share per bucket
    assert [r.get_height() for r in bar_containers(ax)[1]] == p["share_top"].to_list()
    check_saved(fig, tmp_path, "ppl")


def test_intervention(tmp_path):
    t = pl.DataFrame({"group": ["low PPL", "high PPL"], "delta_accuracy": [-0.05, -0.2], "ci_low": [-0.1, -0.3],
                      "ci_high": [0.0, -0.1], "n": [40, 40]})
    fig = instance_plots.plot_intervention(t)
    (ax,) = fig.axes
    assert bar_counts(ax) == [2] and [r.get_height() for r in bar_containers(ax)[0]] == [-0.05, -0.2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["low PPL\n(n=40)", "high PPL\n(n=40)"]
    check_saved(fig, tmp_path, "interv")


def test_u_curve(store, tmp_path):
    e = position.entropy_by_position(tokens=store["tokens"], samples=store["samples"], n_bins=5)
    u = position.update_by_position(tokens=store["tokens"], updates=store["updates"], n_bins=5)
    fig = position_plots.plot_u_curve(e, u)
    entropy_ax, update_ax = fig.axes
    assert labels(entropy_ax) == ["all", "positive", "negative"]  # one line per polarity
    assert all(len(ln.get_xdata()) == 5 for ln in entropy_ax.lines)
    (line,) = update_ax.lines
    assert list(line.get_ydata()) == u["mean_abs_delta_p"].to_list()
    check_saved(fig, tmp_path, "u")
    fig = position_plots.plot_u_curve(e)
    assert len(fig.axes) == 1
    check_saved(fig, tmp_path, "u1")


def test_method_curves_and_length(tmp_path):
    rows = [dict(run=r, step=s, accuracy=0.1 + 0.01 * s + 0.02 * i, entropy=1.0 - 0.01 * s, response_length=100 + s * (i + 1))
            for i, r in enumerate(["GRPO", "GRPO+PPL"]) for s in range(20)]
    t = pl.DataFrame(rows)
    fig = method_plots.plot_method_curves(t, boundary=10)
    for ax in fig.axes:  # per run a thin raw line and a bold EMA line, then the stage line
        assert labels(ax) == ["GRPO", "GRPO+PPL"] and len(ax.lines) == 5 and boundary_lines(ax) == [10]
    check_saved(fig, tmp_path, "methods")
    fig = method_plots.plot_response_length(t)
    assert labels(fig.axes[0]) == ["GRPO", "GRPO+PPL"]
    check_saved(fig, tmp_path, "len")
    fig = method_plots.plot_response_length(t.group_by("run", maintain_order=True).agg(pl.col("response_length").mean()))
    assert bar_counts(fig.axes[0]) == [2]
    check_saved(fig, tmp_path, "len_bar")


def test_ema():
    from entropy_lens.plots.methods import ema

    assert ema([1.0, 3.0], alpha=0.5).tolist() == [1.0, 2.0]
