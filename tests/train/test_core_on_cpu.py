"""core.py against naive loops and hand-computed values (verl-style equivalence tests)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch

from entropy_lens.train import core


def _naive_advantages(rewards, groups, eps=1e-6):
    out = []
    for r, g in zip(rewards, groups):
        vals = [x for x, h in zip(rewards, groups) if h == g]
        if len(vals) == 1:
            out.append(r / (1 + eps))
        else:
            out.append((r - statistics.fmean(vals)) / (statistics.stdev(vals) + eps))
    return out


def test_group_advantages_hand_example():
    # mean −0.5, unbiased std sqrt((1.5² + 3·0.5²)/3) = 1
    a = core.group_advantages(torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64), torch.tensor([0, 0, 0, 0]))
    assert a.tolist() == [1.5 / (1 + 1e-6), -0.5 / (1 + 1e-6), -0.5 / (1 + 1e-6), -0.5 / (1 + 1e-6)]


def test_group_advantages_match_naive_loop():
    rng = random.Random(0)
    groups = [g for g in range(7) for _ in range(rng.randint(1, 6))]
    rng.shuffle(groups)
    rewards = [rng.choice([1.0, -1.0]) - rng.random() * 0.3 for _ in groups]
    got = core.group_advantages(torch.tensor(rewards, dtype=torch.float64), torch.tensor(groups) * 10 + 3)
    torch.testing.assert_close(got, torch.tensor(_naive_advantages(rewards, groups), dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


def test_equal_rewards_give_zero_advantage_and_are_filtered():
    r = torch.tensor([1.0, 1.0, -1.0, 1.0])
    g = torch.tensor([0, 0, 1, 1])
    assert core.group_advantages(r, g)[:2].tolist() == [0.0, 0.0]
    assert core.mixed_groups(r > 0, g).tolist() == [False, False, True, True]


def test_overlong_penalty_hand_values():
    got = core.overlong_penalty(torch.tensor([10, 48, 52, 56, 64]), max_len=64, buffer=16)
    assert got.tolist() == [0.0, 0.0, -0.25, -0.5, -1.0]


def _quantile(sorted_vals, q):  # torch.quantile's default 'linear' interpolation
    pos = q * (len(sorted_vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def _naive_w(values, groups):
    out = []
    for x, g in zip(values, groups):
        v = [y for y, h in zip(values, groups) if h == g]
        s = sorted(v)
        q1, q3 = _quantile(s, 0.25), _quantile(s, 0.75)
        iqr = q3 - q1
        inl = [y for y in v if q1 - 1.5 * iqr <= y <= q3 + 1.5 * iqr] or v
        mu, sigma = statistics.fmean(inl), statistics.pstdev(inl)
        out.append((x - mu) / (sigma if sigma > 1e-6 else 1.0))
    return out


def test_standardized_logppl_hand_example_with_outlier():
    # Q1 = 2, Q3 = 4, IQR = 2 → inliers in [−1, 7] are 1..4: μ = 2.5, σ = sqrt(1.25); the outlier keeps a weight
    w = core.standardized_logppl(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0], dtype=torch.float64), torch.zeros(5))
    s = math.sqrt(1.25)
    torch.testing.assert_close(w, torch.tensor([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s, 97.5 / s], dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


def test_standardized_logppl_constant_group_and_naive_loop():
    assert core.standardized_logppl(torch.tensor([0.7, 0.7, 0.7]), torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    rng = random.Random(1)
    groups = [g for g in range(5) for _ in range(8)]
    vals = [rng.lognormvariate(0, 1) for _ in groups]
    vals[3] = 50.0  # an outlier in group 0
    got = core.standardized_logppl(torch.tensor(vals, dtype=torch.float64), torch.tensor(groups))
    torch.testing.assert_close(got, torch.tensor(_naive_w(vals, groups), dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_clipped_loss_hand_example():
    # ratios 1.5, 0.5, 1.1, (masked 3.0); A = +1, −1, +1, +1
    ratio = torch.tensor([[1.5, 0.5, 1.1, 3.0]], dtype=torch.float64)
    old = torch.zeros_like(ratio)
    logp = ratio.log().requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 1.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    loss, st = core.clipped_policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    # min(1.5, 1.28) = 1.28; min(−0.5, −0.8) = −0.8; min(1.1, 1.1) = 1.1
    assert loss.item() == pytest.approx(-(1.28 - 0.8 + 1.1) / 3, abs=1e-15)
    assert (st.clip_frac_low, st.clip_frac_high) == (1 / 3, 1 / 3)
    loss.backward()
    # clipped tokens and masked tokens get no gradient; d(−ρA/3)/dlogp = −ρA/3 for the unclipped one
    assert logp.grad.tolist() == [[0.0, 0.0, pytest.approx(-1.1 / 3, abs=1e-15), 0.0]]


def test_token_logprobs_match_log_softmax_and_uniform_oracle():
    z = torch.randn(3, 5, 11, dtype=torch.float64)
    t = torch.randint(0, 11, (3, 5))
    ref = torch.log_softmax(z / 0.7, -1).gather(-1, t[..., None])[..., 0]
    torch.testing.assert_close(core.token_logprobs(z, t, 0.7).double(), ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(core.token_logprobs(torch.zeros(2, 8), torch.tensor([0, 7])), torch.full((2,), -math.log(8)))


def test_relative_position_and_masked_cov():
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0, 0.0]])
    assert core.relative_position(mask).tolist() == [[0.0, 0.25, 0.5, 0.75, 0.0], [0.0, 0.5, 0.0, 0.0, 0.0]]
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 99.0], [5.0, 6.0, 99.0, 99.0, 99.0]])
    y = torch.tensor([[1.0, 1.0, -1.0, -1.0, 99.0], [2.0, 2.0, 99.0, 99.0, 99.0]])
    xs, ys = [1, 2, 3, 4, 5, 6], [1, 1, -1, -1, 2, 2]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    naive = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / len(xs)
    assert core.masked_cov(x, y, mask) == pytest.approx(naive, abs=1e-12)
