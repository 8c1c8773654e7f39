"""shaping_effect: exact values on hand-built advantages."""

import polars as pl
import pytest

from entropy_lens.analysis.advantages import shaping_effect
from entropy_lens.errors import UserError


def _tokens():
    # step 0: ratios 1.1, 0.9, 1.0 (a null row = dropped group, an A = 0 row: no ratio); step 1: unshaped
    return pl.DataFrame({
        "step": [0, 0, 0, 0, 0, 1, 1],
        "advantage": [1.0, -1.0, 0.5, None, 0.0, 2.0, -2.0],
        "shaped_advantage": [1.1, -0.9, 0.5, None, 0.3, 2.0, -2.0],
    }).lazy()


def test_whole_run_by_hand():
    r = shaping_effect(tokens=_tokens()).row(0, named=True)
    assert r["n_tokens"] == 5
    assert r["share_changed"] == pytest.approx(2 / 5)
    assert r["rel_abs_change"] == pytest.approx(0.2 / 6.5)
    assert (r["ratio_min"], r["ratio_median"], r["ratio_max"]) == pytest.approx((0.9, 1.0, 1.1))


def test_per_step_by_hand():
    got = shaping_effect(tokens=_tokens(), by=["step"])
    assert got["step"].to_list() == [0, 1] and got["n_tokens"].to_list() == [3, 2]
    assert got["share_changed"].to_list() == pytest.approx([2 / 3, 0.0])
    assert got["rel_abs_change"].to_list() == pytest.approx([0.2 / 2.5, 0.0])
    # linear quantiles of [0.9, 1.0, 1.1]: q05 = 0.9 + 0.1·(0.05·2) = 0.91
    assert got["ratio_q05"][0] == pytest.approx(0.91) and got["ratio_q95"][0] == pytest.approx(1.09)


def test_a_collect_store_has_no_advantages():
    with pytest.raises(UserError, match="shaped_advantage"):
        shaping_effect(tokens=pl.DataFrame({"step": [0], "advantage": [1.0]}).lazy())
