"""Advantage shapers: pure tensor functions registered by name (paper-notes §4, peers from §4.3 / §6).

Every shaper has the same signature and runs after the GRPO advantage and before the clipped surrogate;
its output is detached (no gradient flows through a weight)::

    shaped = SHAPERS.get(name)(advantages, mask, logppl=..., group_ids=..., rel_pos=..., entropy=..., cfg=cfg)

with ``advantages``, ``mask``, ``rel_pos``, ``entropy`` [B, T] (token-broadcast advantage, response mask,
relative position r ∈ [0, 1) of §1.5, rollout-policy token entropy), ``logppl``, ``group_ids`` [B], and
``cfg`` a :class:`ShapingConfig`.  The trainer applies a shaper only on the steps of its window
(``--window``); outside it the update is plain GRPO.  The built-in shapers are registered by name in the
torch-free :data:`entropy_lens.train.config.SHAPERS`, which imports this module on first use; a new method
is one more ``SHAPERS.register(name)(fn)``.
"""

from __future__ import annotations

import torch

from entropy_lens.train.config import SHAPERS, ShapingConfig  # noqa: F401  (re-exported)
from entropy_lens.train.core import standardized_logppl


def no_shaping(advantages, mask, *, logppl, group_ids, rel_pos, entropy, cfg):
    """Plain GRPO: Ã = A."""
    return advantages


def _ppl_weight(logppl, group_ids, sign: float, cfg) -> torch.Tensor:
    w = standardized_logppl(logppl, group_ids)
    return torch.clamp(1 + sign * cfg.ppl_alpha * w, cfg.ppl_min, cfg.ppl_max)


def ppl_shaping(advantages, mask, *, logppl, group_ids, rel_pos, entropy, cfg):
    """GRPO+PPL (paper-notes §4.1): favour low-perplexity responses.

        Ã_{i,t} = A_{i,t} · clamp(1 − α·w_i, ppl_min, ppl_max),   w = group-standardised log-PPL (§1.4)

    w_i < 0 (low PPL) enlarges |A|, w_i > 0 damps it; shapes [B, T] → [B, T], weight [B].  The weight *is*
    applied here: the paper's released ``compute_policy_loss`` computes it on this branch and drops it (a no-op
    run); we implement the paper's formula instead.
    """
    return advantages * _ppl_weight(logppl, group_ids, -1.0, cfg)[:, None].to(advantages.dtype)


def ppl_high_shaping(advantages, mask, *, logppl, group_ids, rel_pos, entropy, cfg):
    """The high-PPL ablation (``use_ppl_high``): Ã = A · clamp(1 + α·w, ppl_min, ppl_max), [B, T] → [B, T]."""
    return advantages * _ppl_weight(logppl, group_ids, +1.0, cfg)[:, None].to(advantages.dtype)


def _add_bonus(advantages, mask, raw_bonus, cfg):
    """A + sign(A) · min(raw_bonus, cap·|A|) on valid tokens."""
    bonus = torch.minimum(raw_bonus, cfg.position_cap * advantages.abs())
    return (advantages + torch.sign(advantages) * bonus) * mask


def position_shaping(advantages, mask, *, logppl, group_ids, rel_pos, entropy, cfg):
    """GRPO+POSITION (paper-notes §4.2): later tokens get more reward (A > 0) or more penalty (A < 0).

        b_{i,t} = min(α · σ(k·(r_{i,t} − 0.5)), cap·|A_{i,t}|),   Ã_{i,t} = A_{i,t} + sign(A_{i,t}) · b_{i,t}

    Defaults α = 0.1, k = 15, cap = 0.5; tokens with A = 0 are unchanged.  [B, T] → [B, T].
    """
    raw = cfg.position_alpha * torch.sigmoid(cfg.position_k * (rel_pos - 0.5))
    return _add_bonus(advantages, mask, raw.to(advantages.dtype), cfg)


def position_begin_shaping(advantages, mask, *, logppl, group_ids, rel_pos, entropy, cfg):
    """The mirror of ``position``: early tokens get the bonus, b = min(α · σ(k·(0.5 − r)), cap·|A|)."""
    raw = cfg.position_alpha * torch.sigmoid(cfg.position_k * (0.5 - rel_pos))
    return _add_bonus(advantages, mask, raw.to(advantages.dtype), cfg)


def entropy_top_shaping(advantages, mask, *, logppl, group_ids, rel_pos, entropy, cfg):
    """The 80/20 method (Wang et al. 2025, arXiv 2506.01939): only the batch's top-ρ entropy tokens learn.

    With n valid tokens and k = ceil(ρ·n) of them kept (highest rollout entropy; ties broken by position in
    the flattened batch)::

        Ã_{i,t} = A_{i,t} · (n / k) · 1[token (i,t) kept]

    The n/k factor makes the trainer's token mean over all n tokens equal the mean over the k kept tokens,
    i.e. the masked loss of TRL's ``top_entropy_quantile``.  [B, T] → [B, T].
    """
    valid = mask.bool()
    n = int(valid.sum())
    if n == 0:
        return advantages
    k = max(1, int(torch.ceil(torch.tensor(cfg.entropy_top_ratio * n)).item()))
    flat = torch.where(valid, entropy.double(), torch.full_like(entropy, -torch.inf, dtype=torch.float64)).flatten()
    # stable sort: equal entropies keep batch order, so the choice is deterministic
    order = torch.sort(-flat, stable=True).indices[:k]
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order] = True
    return advantages * keep.view_as(advantages).to(advantages.dtype) * (n / k)


def positive_only_shaping(advantages, mask, *, logppl, group_ids, rel_pos, entropy, cfg):
    """Learn from positive samples only (paper-notes §4.3 ``positive_only``): Ã = A · 1[A > 0].

    The token mean still divides by all tokens, so the surviving tokens' weight is unchanged."""
    return advantages * (advantages > 0).to(advantages.dtype)


def negative_only_shaping(advantages, mask, *, logppl, group_ids, rel_pos, entropy, cfg):
    """Learn from negative samples only (paper-notes §4.3 ``negative_only``): Ã = A · 1[A < 0]."""
    return advantages * (advantages < 0).to(advantages.dtype)
