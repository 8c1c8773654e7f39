"""The per-token entropy account: the formula against a hand computation and a finite difference, the
decomposition's exact additivity, planted effects, the validation and GRPO's advantage."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from entropy_lens.analysis import attribution as att
from entropy_lens.errors import UserError
from tests.analysis.store_builders import make_samples

SCHEMA = dict(step=pl.Int32, prompt_id=pl.Int32, sample_id=pl.Int32, position=pl.Int32, rel_position=pl.Float32,
              token_id=pl.Int32, logprob=pl.Float64, entropy=pl.Float64, sum_p2=pl.Float64, sum_p2_logp=pl.Float64,
              advantage=pl.Float64, shaped_advantage=pl.Float64)


def _row(p, a, advantage, **key):
    """A token row whose statistics are those of the distribution ``p`` with sampled token ``a``."""
    p = np.asarray(p, float)
    logp = np.log(p)
    return dict(key, logprob=logp[a], entropy=-(p * logp).sum(), sum_p2=(p * p).sum(), sum_p2_logp=(p * p * logp).sum(),
                advantage=advantage, shaped_advantage=advantage, token_id=a)


def _frame(rows):
    base = dict(step=0, prompt_id=0, sample_id=0, position=0, rel_position=0.0)
    return pl.DataFrame([{**base, **r} for r in rows], schema=SCHEMA).lazy()


# --- the formula ---------------------------------------------------------------------------------------------

THREE = [([0.5, 0.25, 0.25], 0, 1.0), ([0.5, 0.25, 0.25], 1, 1.0), ([0.7, 0.2, 0.1], 2, -0.5)]


def test_dh_pred_matches_hand_computation_on_three_tokens():
    # By hand, for p = (1/2, 1/4, 1/4): H = 1.5 log 2, Σp² = 3/8, Σp² log p = −(1/4 + 2/16 · 2) log 2 = −(1/2) log 2;
    # a = 0: [−1/2 + 1.5·3/8 − 1/2 (−1 + 1.5)] log 2 = (−8 + 9 − 4)/16 log 2 = −(3/16) log 2  (A = 1)
    # a = 1: [−1/2 + 9/16 − 1/4 (−2 + 1.5)] log 2 = (−8 + 9 + 2)/16 log 2 = (3/16) log 2
    # (and 1/2 · (−3/16) + 2 · 1/4 · (3/16) = 0: the expectation over a ~ p vanishes)
    rows = [_row(p, a, adv, position=i) for i, (p, a, adv) in enumerate(THREE)]
    got = att.token_entropy_change(_frame(rows)).collect()["dH_pred"].to_list()
    ln2 = math.log(2)
    p = np.array([0.7, 0.2, 0.1])
    lp = np.log(p)
    h = -(p * lp).sum()
    third = -0.5 * ((p * p * lp).sum() + h * (p * p).sum() - p[2] * (lp[2] + h))
    assert got == pytest.approx([-3 * ln2 / 16, 3 * ln2 / 16, third], rel=1e-12)


@pytest.mark.parametrize(("p", "a", "adv"), THREE + [([0.05, 0.9, 0.03, 0.02], 0, 1.3)])
def test_dh_pred_is_the_first_order_change_of_a_tabular_step(p, a, adv):
    # Δz = ηA(e_a − p) on the logits log p, then the exact entropy: (H(z + Δz) − H(z)) / η → dH_pred as η → 0.
    def entropy(z):
        q = np.exp(z - z.max())
        q /= q.sum()
        return -(q * np.log(q)).sum()

    z = np.log(np.asarray(p))
    step = np.eye(len(p))[a] - np.asarray(p)
    eta = 1e-6
    fd = (entropy(z + eta * adv * step) - entropy(z - eta * adv * step)) / (2 * eta)
    got = att.token_entropy_change(_frame([_row(p, a, adv)])).collect()["dH_pred"][0]
    assert got == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_expectation_over_the_sampled_token_is_zero():
    p = [0.6, 0.3, 0.07, 0.03]
    rows = [_row(p, a, 1.0, position=a) for a in range(4)]
    dh = att.token_entropy_change(_frame(rows)).collect()["dH_pred"].to_numpy()
    assert float(np.dot(p, dh)) == pytest.approx(0.0, abs=1e-15)


def test_shaped_advantage_is_used_when_present_and_null_advantage_is_not_trained():
    rows = [_row([0.5, 0.5], 0, 1.0), _row([0.6, 0.4], 1, 1.0, position=1)]
    rows[0]["shaped_advantage"] = 2.0
    rows[1]["advantage"] = rows[1]["shaped_advantage"] = None
    out = att.token_entropy_change(_frame(rows)).collect()
    assert att.advantage_source(_frame(rows)) == "shaped_advantage"
    assert out["advantage_used"].to_list() == [2.0, None] and out["dH_pred"][1] is None


def test_store_before_schema_2_says_so():
    rows = [_row([0.5, 0.5], 0, 1.0)]
    rows[0]["sum_p2_logp"] = None
    with pytest.raises(UserError, match="schema 2"):
        att.token_entropy_change(_frame(rows))


def test_group_normalised_advantage_equals_the_trainers():
    torch = pytest.importorskip("torch")
    from entropy_lens.train.core import group_advantages

    rng = np.random.default_rng(0)
    groups = [(s, p) for s in range(2) for p in range(3)]
    rows = [dict(step=s, prompt_id=p, sample_id=i, reward=float(rng.choice([-1.0, 1.0, 0.5])))
            for s, p in groups for i in range(4)] + [dict(step=2, prompt_id=0, sample_id=0, reward=1.0)]
    got = att.group_normalised_advantage(make_samples(rows)).collect().sort("step", "prompt_id", "sample_id")
    r = torch.tensor([x["reward"] for x in rows], dtype=torch.float32)
    gid = torch.tensor([x["step"] * 10 + x["prompt_id"] for x in rows])
    want = group_advantages(r, gid).double().numpy()
    np.testing.assert_allclose(got["advantage_used"].to_numpy(), want, rtol=1e-6, atol=1e-6)


# --- the decomposition ---------------------------------------------------------------------------------------


def _account(n_steps=4, n_prompts=6, seed=0, neg_burn=-0.25, pos_burn=-0.0625):
    """A token account with planted, dyadic ΔH (so float sums are exact): negatives burn ``neg_burn`` per
    token, positives ``pos_burn``; the step's top-entropy tokens carry ±1 noise that cancels per prompt."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_steps):
        for p in range(n_prompts):
            for i in range(4):
                correct = i < 2
                for t in range(5):
                    h = float(rng.integers(0, 64)) / 8
                    rows.append(dict(step=s, prompt_id=p, sample_id=i, position=t, token_id=t, entropy=h,
                                     logprob=-1.0, advantage_used=1.0 if correct else -1.0,
                                     dH_pred=pos_burn if correct else neg_burn,
                                     stage="rising" if s < n_steps // 2 else "plateau",
                                     polarity="positive" if correct else "negative", position_bin=f"{t}"))
    return pl.DataFrame(rows)


def test_groups_sum_to_the_total_exactly():
    acc = _account()
    d = att.decompose(acc, axes=["polarity", "position_bin"], n_boot=200)
    for (stage,), part in d.group_by(["stage"]):
        rows = acc if stage == "all steps" else acc.filter(pl.col("stage") == stage)
        for axis in ("polarity", "position_bin"):
            a = part.filter(pl.col("axis") == axis)
            assert a["net"].sum() == rows["dH_pred"].sum()  # exact: dyadic values
            assert a["decrease"].sum() == rows["dH_pred"].clip(upper_bound=0).sum()
            assert a["n_tokens"].sum() == rows.height
            assert a["share_net"].sum() == pytest.approx(1.0, abs=1e-12)
            assert a["share_abs"].sum() == pytest.approx(1.0, abs=1e-12)


def test_planted_negative_share_is_found_with_its_interval():
    d = att.decompose(_account(), axes=["polarity"], n_boot=300)
    neg = att.stage_share(d, "rising", "polarity", "negative")
    assert neg.estimate == pytest.approx(0.8)  # 0.25 / (0.25 + 0.0625)
    assert 0.5 < neg.ci_low <= 0.8 <= neg.ci_high
    # the same account with the burn reversed between polarities puts the share below one half
    rev = att.stage_share(att.decompose(_account(neg_burn=-0.0625, pos_burn=-0.25), axes=["polarity"], n_boot=300),
                          "rising", "polarity", "negative")
    assert rev.estimate == pytest.approx(0.2) and rev.ci_high < 0.5


def test_bootstrap_interval_widens_when_prompts_disagree():
    acc = _account()
    # on even prompts the positives burn as much as the negatives: the share now varies between prompts
    even_pos = (pl.col("prompt_id") % 2 == 0) & (pl.col("polarity") == "positive")
    noisy = acc.with_columns(pl.when(even_pos).then(-0.25).otherwise(pl.col("dH_pred")).alias("dH_pred"))
    tight = att.stage_share(att.decompose(acc, axes=["polarity"], n_boot=300), "rising", "polarity", "negative")
    wide = att.stage_share(att.decompose(noisy, axes=["polarity"], n_boot=300), "rising", "polarity", "negative")
    assert tight.ci_high - tight.ci_low < 1e-12 < wide.ci_high - wide.ci_low


def test_entropy_quantile_axis_puts_the_top_fifth_in_q5():
    acc = _account(n_steps=1, n_prompts=10).drop("stage")
    lf = att.AXES.get("entropy_quantile")(acc.lazy(), att.AxisInputs(samples=None)).collect()
    assert lf["entropy_quantile"].value_counts().sort("entropy_quantile")["count"].to_list() == [40] * 5
    q5 = lf.filter(pl.col("entropy_quantile") == "q5")["entropy"]
    rest = lf.filter(pl.col("entropy_quantile") != "q5")["entropy"]
    assert q5.min() >= rest.max()


def test_step_account_and_contributions_add_up():
    acc = _account()
    steps = att.step_account(acc)
    assert steps["dH_pred_sum"].to_list() == acc.group_by("step").agg(pl.col("dH_pred").sum()).sort("step")["dH_pred"].to_list()
    contrib = att.step_contributions(acc, "polarity")
    per_step = contrib.group_by("step").agg(pl.col("contribution").sum()).sort("step")
    np.testing.assert_allclose(per_step["contribution"].to_numpy(), steps["dH_pred_mean"].to_numpy(), rtol=1e-12)
    # Cui et al.'s covariance: log p is constant here, so it is exactly 0
    assert steps["cov_logp_adv"].abs().max() == 0.0


def test_top_tokens_rank_burners_and_raisers():
    acc = pl.DataFrame(dict(step=[0] * 4, prompt_id=[0] * 4, sample_id=[0, 0, 1, 1], position=[0, 1, 0, 1],
                            token_id=[7, 8, 7, 9], dH_pred=[-1.0, 0.5, -2.0, 1.5], stage=["all"] * 4))
    vocab = pl.DataFrame(dict(token_id=[7, 8, 9], token=["seven", "eight", "nine"])).lazy()
    top = att.top_tokens(acc, vocab, n=2)
    burned = top.filter(pl.col("direction") == "burned")
    raised = top.filter(pl.col("direction") == "raised")
    assert burned["token"].to_list() == ["seven"] and burned["share"][0] == 1.0
    assert raised["token"].to_list() == ["nine", "eight"] and raised["share"].to_list() == [0.75, 0.25]


# --- validation ----------------------------------------------------------------------------------------------


def test_validation_recovers_a_planted_step_size():
    rng = np.random.default_rng(3)
    acc = _account().with_columns(pl.Series("dH_pred", rng.normal(size=480)))
    acc = acc.with_columns((pl.col("dH_pred") * 0.01).alias("dH_real"))
    v = att.validation(acc, axes=["polarity"])
    tok = v.filter(pl.col("level") == "token").row(0, named=True)
    assert tok["r"] == pytest.approx(1.0) and tok["slope"] == pytest.approx(0.01) and tok["sign_agreement"] == 1.0
    noise = acc.with_columns(pl.Series("dH_real", rng.normal(size=480)))
    tok = att.validation(noise, axes=["polarity"]).filter(pl.col("level") == "token").row(0, named=True)
    assert tok["ci_low"] < 0 < tok["ci_high"]


def test_validation_without_realized_change_says_so():
    with pytest.raises(UserError, match="entropy_next"):
        att.validation(_account())


# --- the run's account -----------------------------------------------------------------------------------------

def test_run_account_is_computed_once_per_run_and_restaged_for_another_boundary(tmp_path, monkeypatch):
    from entropy_lens.analysis.context import RunView
    from tests.view.stores import write_store

    view = RunView.open(write_store(tmp_path / "store", n_steps=6), boundary=2)
    r = view.rollouts
    fresh = {b: att.token_account(r.tokens, r.samples, vocab=view.vocab, updates=r.updates, boundary=b) for b in (2, 4)}
    calls = []
    counted = att.token_account
    monkeypatch.setattr(att, "token_account", lambda *a, **k: calls.append(k) or counted(*a, **k))
    at2, at4 = att.run_account(view), att.run_account(view.with_boundary(4))
    assert at2.equals(fresh[2]) and at4.equals(fresh[4])  # the same frame as computing it at that boundary
    assert len(calls) == 1  # the boundary-free account once; the copy only restaged it
    assert at4.filter(pl.col("step") < 4)["stage"].unique().to_list() == ["rising"]
    assert at4.filter(pl.col("step") >= 4)["stage"].unique().to_list() == ["plateau"]
