"""Every registered shaper on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from entropy_lens.errors import UnknownNameError
from entropy_lens.train.shaping import SHAPERS, ShapingConfig

S5 = math.sqrt(5.0)


def shape(name, adv, mask=None, *, logppl=None, group_ids=None, rel_pos=None, entropy=None, **cfg):
    adv = torch.as_tensor(adv, dtype=torch.float64)
    mask = torch.ones_like(adv) if mask is None else torch.as_tensor(mask, dtype=torch.float64)
    b, t = adv.shape
    return SHAPERS.get(name)(
        adv, mask, logppl=torch.zeros(b, dtype=torch.float64) if logppl is None else torch.tensor(logppl, dtype=torch.float64),
        group_ids=torch.zeros(b, dtype=torch.long) if group_ids is None else torch.tensor(group_ids),
        rel_pos=torch.zeros_like(adv) if rel_pos is None else torch.tensor(rel_pos, dtype=torch.float64),
        entropy=torch.zeros_like(adv) if entropy is None else torch.tensor(entropy, dtype=torch.float64),
        cfg=ShapingConfig(**cfg))


def test_registry_names_and_did_you_mean():
    assert SHAPERS.names() == ["entropy-top", "negative-only", "none", "position", "position-begin",
                               "positive-only", "ppl", "ppl-high"]
    with pytest.raises(UnknownNameError, match="did you mean 'ppl'"):
        SHAPERS.get("ppll")


def test_none_is_identity():
    a = [[1.0, -2.0], [0.5, 0.0]]
    assert shape("none", a).tolist() == a


# one group, log-PPL 1, 2, 3, 4: μ = 2.5, population σ = sqrt(1.25) → w = −3/√5, −1/√5, 1/√5, 3/√5
ADV = [[1.0], [-1.0], [1.0], [-1.0]]
LOGPPL = [1.0, 2.0, 3.0, 4.0]
W = [-3 / S5, -1 / S5, 1 / S5, 3 / S5]


def test_ppl_multiplies_by_clamped_low_ppl_weight():
    got = shape("ppl", ADV, logppl=LOGPPL, ppl_alpha=0.1)
    want = [[a[0] * (1 - 0.1 * w)] for a, w in zip(ADV, W)]  # 1.134, 1.045, 0.955, 0.866: no clamp
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-15)
    got = shape("ppl", ADV, logppl=LOGPPL, ppl_alpha=0.2)  # 1 ± 0.268 is clamped to [0.8, 1.2]
    torch.testing.assert_close(got, torch.tensor([[1.2], [-(1 + 0.2 / S5)], [1 - 0.2 / S5], [-0.8]],
                                                 dtype=torch.float64), rtol=0, atol=1e-15)


def test_ppl_high_favours_high_ppl():
    got = shape("ppl-high", ADV, logppl=LOGPPL, ppl_alpha=0.2)
    torch.testing.assert_close(got, torch.tensor([[0.8], [-(1 - 0.2 / S5)], [1 + 0.2 / S5], [-1.2]],
                                                 dtype=torch.float64), rtol=0, atol=1e-15)


def test_ppl_standardises_within_groups():
    # two groups with the same spread: each gets the same weights, the offset between groups is irrelevant
    got = shape("ppl", [[1.0]] * 4, logppl=[1.0, 3.0, 11.0, 13.0], group_ids=[0, 0, 1, 1], ppl_alpha=0.1)
    assert got.flatten().tolist() == [1.1, 0.9, 1.1, 0.9]


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_position_bonus_hand_values():
    adv = [[1.0, 1.0, -1.0, 0.05, 0.0]]
    r = [[0.5, 0.7, 0.7, 0.99, 0.9]]
    got = shape("position", adv, rel_pos=r)
    want = [[1.05, 1 + 0.1 * sig(3.0), -1 - 0.1 * sig(3.0), 0.05 + 0.025, 0.0]]  # 4th: capped at |A|/2
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-15)


def test_position_begin_is_the_mirror():
    got = shape("position-begin", [[1.0, -1.0, 1.0]], rel_pos=[[0.0, 0.2, 0.9]])
    want = [[1 + 0.1 * sig(7.5), -1 - 0.1 * sig(4.5), 1 + 0.1 * sig(-6.0)]]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-15)


def test_position_leaves_padding_at_zero():
    got = shape("position", [[1.0, 1.0]], mask=[[1.0, 0.0]], rel_pos=[[0.0, 0.0]])
    assert got[0, 1].item() == 0.0


def test_entropy_top_keeps_top_share_and_rescales():
    adv = [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]
    mask = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]  # 5 valid tokens; ρ = 0.4 → k = 2
    ent = [[0.1, 0.9, 0.3], [0.5, 0.2, 5.0]]  # the padded 5.0 must be ignored
    got = shape("entropy-top", adv, mask, entropy=ent, entropy_top_ratio=0.4)
    assert got.tolist() == [[0.0, 2.5, 0.0], [-2.5, 0.0, 0.0]]


def test_positive_and_negative_only():
    a = [[1.0, -0.5, 0.0]]
    assert shape("positive-only", a).tolist() == [[1.0, 0.0, 0.0]]
    assert shape("negative-only", a).tolist() == [[0.0, -0.5, 0.0]]
