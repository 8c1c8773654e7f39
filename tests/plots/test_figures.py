import matplotlib.pyplot as plt
import polars as pl
import pytest

from entropy_lens.analysis import categories, defects, instance, polarity, position, stages, updates, vocab
from entropy_lens.plots import instance as pinst
from entropy_lens.plots import methods as pmeth
from entropy_lens.plots import position as ppos
from entropy_lens.plots import stages as pst
from entropy_lens.plots import updates as pupd
from tests.plots.conftest import check_saved


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_fig1(store, tmp_path):
    curves = stages.step_curves(tokens=store["tokens"], samples=store["samples"])
    check_saved(pst.plot_entropy_accuracy(curves, boundary=3), tmp_path, "fig1")


def test_polarity(store, tmp_path):
    t = polarity.polarity_entropy(tokens=store["tokens"], samples=store["samples"])
    check_saved(pst.plot_polarity_entropy(t, boundary=3), tmp_path, "pol")


def test_token_shift(store, tmp_path):
    sh = vocab.token_shift(tokens=store["tokens"], vocab=store["vocab"], boundary=4, window=2, min_count=1)
    check_saved(pst.plot_token_shift(vocab.top_token_shifts(sh, n=3)), tmp_path, "shift")


def test_defects(store, tmp_path):
    d = defects.defect_proportions(samples=store["samples"])
    check_saved(pst.plot_defect_proportions(d, boundary=3), tmp_path, "defects")


def test_delta_p_hist(store, tmp_path):
    h = updates.delta_p_histogram(tokens=store["tokens"], updates=store["updates"], samples=store["samples"], boundary=3)
    check_saved(pupd.plot_delta_p_histogram(h), tmp_path, "dp")


def test_entropy_bins(store, tmp_path):
    b = updates.update_by_entropy_bin(tokens=store["tokens"], updates=store["updates"], n_bins=5)
    check_saved(pupd.plot_entropy_bins(b), tmp_path, "bins")


def test_categories(store, tmp_path):
    c = categories.category_updates(tokens=store["tokens"], updates=store["updates"], vocab=store["vocab"], top_frac=0.1)
    check_saved(pupd.plot_category_updates(c), tmp_path, "cats")


def test_ppl_share(store, tmp_path):
    p = instance.ppl_bucket_updates(tokens=store["tokens"], updates=store["updates"], samples=store["samples"], top_frac=0.1)
    check_saved(pinst.plot_ppl_bucket_share(p), tmp_path, "ppl")


def test_intervention(tmp_path):
    t = pl.DataFrame({"group": ["low PPL", "high PPL"], "delta_accuracy": [-0.05, -0.2], "ci_low": [-0.1, -0.3],
                      "ci_high": [0.0, -0.1], "n": [40, 40]})
    check_saved(pinst.plot_intervention(t), tmp_path, "interv")


def test_u_curve(store, tmp_path):
    e = position.entropy_by_position(tokens=store["tokens"], samples=store["samples"], n_bins=5)
    u = position.update_by_position(tokens=store["tokens"], updates=store["updates"], n_bins=5)
    check_saved(ppos.plot_u_curve(e, u), tmp_path, "u")
    check_saved(ppos.plot_u_curve(e), tmp_path, "u1")


def test_method_curves_and_length(tmp_path):
    rows = [dict(run=r, step=s, accuracy=0.1 + 0.01 * s + 0.02 * i, entropy=1.0 - 0.01 * s, response_length=100 + s * (i + 1))
            for i, r in enumerate(["GRPO", "GRPO+PPL"]) for s in range(20)]
    t = pl.DataFrame(rows)
    check_saved(pmeth.plot_method_curves(t, boundary=10), tmp_path, "methods")
    check_saved(pmeth.plot_response_length(t), tmp_path, "len")
    check_saved(pmeth.plot_response_length(t.group_by("run").agg(pl.col("response_length").mean())), tmp_path, "len_bar")
