"""Pure tensor functions of the GRPO + DAPO update (verl ``core_algos.py`` style): no model, no I/O.

Shapes: ``B`` responses, ``T`` response positions (right-padded); ``mask`` [B, T] is 1 on real response
tokens.  Everything here is deterministic and has a naive twin in ``tests/train``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ x·mask / Σ mask (token-level mean, paper-notes §1.1); 0 when the mask is empty."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Group labels [B] (any integers) → dense indices 0..G−1 [B] and the number of groups G."""
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    return inv, len(uniq)


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO outcome advantage (verl ``compute_grpo_outcome_advantage``), rewards [B] → advantages [B].

        A_i = (R_i − mean_g(R)) / (std_g(R) + eps),   std unbiased (N − 1), g = group of i

    A group of one sample gets mean 0 and std 1 (as verl), so its advantage is its reward.
    """
    r = rewards.double()
    idx, g = group_index(group_ids)
    n = torch.zeros(g, dtype=r.dtype).index_add_(0, idx, torch.ones_like(r))
    mean = torch.zeros(g, dtype=r.dtype).index_add_(0, idx, r) / n
    var = torch.zeros(g, dtype=r.dtype).index_add_(0, idx, (r - mean[idx]) ** 2) / (n - 1).clamp(min=1)
    single = n[idx] < 2
    mean_i = torch.where(single, torch.zeros_like(r), mean[idx])
    std_i = torch.where(single, torch.ones_like(r), var[idx].sqrt())
    return ((r - mean_i) / (std_i + eps)).to(rewards.dtype)


def mixed_groups(correct: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """DAPO dynamic-sampling filter, correct [B] bool → keep [B] bool: True for samples of groups whose
    correctness is not all equal (std(acc) > 0, verl ``filter_groups.metric=acc``)."""
    idx, g = group_index(group_ids)
    c = correct.double()
    n = torch.zeros(g, dtype=c.dtype).index_add_(0, idx, torch.ones_like(c))
    k = torch.zeros(g, dtype=c.dtype).index_add_(0, idx, c)
    return ((k > 0) & (k < n))[idx]


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO soft overlong punishment, lengths [B] → penalty [B] (≤ 0), added to the reward:

        min(−(L − (L_max − L_buf)) / L_buf · φ, 0)

    so a response loses nothing up to ``L_max − L_buf`` tokens and ``φ`` at ``L_max``.
    """
    over = (lengths.double() - (max_len - buffer)) / buffer * factor
    return torch.clamp(-over, max=0.0).to(torch.float32)


def standardized_logppl(logppl: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Group-standardised log-perplexity ``w_ppl`` [B] (paper-notes §1.4, ``core_algos.calculate_ppl``).

    Per group: Q1, Q3 = ``torch.quantile`` 0.25 / 0.75 (linear); inliers lie in [Q1 − 1.5·IQR, Q3 + 1.5·IQR];
    μ, σ = mean and population std of the inliers (all values when there are none; σ ≤ 1e-6 → 1);
    ``w_i = (logPPL_i − μ) / σ`` for every sample, outliers included.
    """
    x = logppl.double()
    out = torch.empty_like(x)
    idx, g = group_index(group_ids)
    for j in range(g):  # groups are few and small: a loop over them is the clearest exact form
        sel = idx == j
        v = x[sel]
        q1, q3 = torch.quantile(v, 0.25), torch.quantile(v, 0.75)
        iqr = q3 - q1
        inl = v[(v >= q1 - 1.5 * iqr) & (v <= q3 + 1.5 * iqr)]
        if len(inl) == 0:
            inl = v
        mu, sigma = inl.mean(), inl.std(unbiased=False)
        if sigma <= 1e-6:
            sigma = torch.ones_like(sigma)
        out[sel] = (v - mu) / sigma
    return out.to(logppl.dtype)


def relative_position(mask: torch.Tensor) -> torch.Tensor:
    """r_{i,t} = (cumsum(mask) − 1) / Σ_t mask ∈ [0, 1) on valid tokens (paper-notes §1.5), mask [B, T] → [B, T]."""
    m = mask.double()
    return ((m.cumsum(-1) - 1).clamp(min=0) / m.sum(-1, keepdim=True).clamp(min=1) * m).to(torch.float32)


class LossStats(NamedTuple):
    clip_frac_low: float  # share of tokens with A < 0 and ρ < 1 − ε_low (clipped: no gradient)
    clip_frac_high: float  # share of tokens with A > 0 and ρ > 1 + ε_high
    ratio_mean: float


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, eps_low: float = 0.2, eps_high: float = 0.28,
                        ) -> tuple[torch.Tensor, LossStats]:
    """PPO clipped surrogate with decoupled clip ("clip-higher") and token-level aggregation, no KL.

    logp, old_logp, advantages, mask: [B, T].  With ρ = exp(logp − old_logp)::

        L = − Σ_{i,t} mask · min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A) / Σ_{i,t} mask
    """
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages)
    loss = -masked_mean(surrogate, mask)
    with torch.no_grad():
        low = ((ratio < 1 - eps_low) & (advantages < 0)).float()
        high = ((ratio > 1 + eps_high) & (advantages > 0)).float()
        stats = LossStats(masked_mean(low, mask).item(), masked_mean(high, mask).item(),
                          masked_mean(ratio, mask).item())
    return loss, stats


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[target], logits [..., V], targets [...] → [...], differentiable.

    Equivalent to ``log_softmax(logits / T, -1).gather(-1, targets[..., None])[..., 0]`` without keeping
    the [..., V] log-probabilities (``z_a − logsumexp(z)``).  Computed in fp32 at least (fp64 stays fp64).
    """
    z = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    return z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


def masked_cov(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    """Population covariance of x and y over valid tokens: mean((x − x̄)(y − ȳ)), [B, T] each → scalar.

    With x = log π_old(o_t) and y = Ã this is the term that drives the entropy change of a policy-gradient
    step (Cui et al. 2025, arXiv 2505.22617)."""
    x, y, m = x.double(), y.double(), mask.double()
    n = m.sum().clamp(min=1)
    mx, my = (x * m).sum() / n, (y * m).sum() / n
    return float((((x - mx) * (y - my)) * m).sum() / n)
