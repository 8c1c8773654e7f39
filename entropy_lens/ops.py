"""Per-token statistics of a next-token distribution, without materialising [tokens × vocab] probabilities.

For each token i with logits z ∈ R^V (divided by the sampling temperature T first) and target a:

    log p(a)  = z_a − logsumexp(z)
    H         = −Σ_v p_v log p_v                      (natural log, full vocabulary)
    Σp²       = Σ_v p_v²                              (collision probability)
    ‖∇_z log p(a)‖ = sqrt(1 − 2 p(a) + Σp²)           (the gradient is e_a − p)

The fast routes make one pass over the vocabulary in chunks with four fp32 running accumulators per token
(online-softmax style). With d_v = z_v − m, m the running max:

    s  = Σ e^d            t = Σ e^d · d   (≤ 0)          u = Σ e^(2d)
    logsumexp = m + log s     H = log s − t/s     Σp² = u / s²

t is kept relative to the running max (rather than Σ e^d · z), so H is a sum of two O(log V) terms instead
of the difference of two O(|z|) terms: logits of 1e4 cost no precision.  When the max grows by δ, old terms
rescale by α = e^(−δ):  s ← α s,  t ← α (t − δ s),  u ← α² u.

Pure torch, device-agnostic, no autograd (analysis runs under ``no_grad``; the functions enforce it).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "TokenStats",
    "logit_grad_norm",
    "naive_token_stats",
    "token_stats_from_hidden",
    "token_stats_from_logits",
]

_F32 = torch.float32
# Elements per row-block × vocab-chunk tile of fp32 scratch: ~1 MB per buffer, so the handful of buffers a
# tile needs stays in a core's L2.  Each tile costs ~15 small torch calls, so much smaller tiles pay
# Python overhead instead; measured on the 2-core dev box (benchmarks/bench_ops.py).
_TILE_ELEMS = 1 << 18
# (Each tile op is its own OpenMP parallel region.  On a CPU shared with other busy processes, libgomp's
# default spin-waiting makes every region wait out a descheduled partner thread; OMP_WAIT_POLICY=PASSIVE or
# torch.set_num_threads(1) avoids that.  The dense route has few, huge regions and is less exposed.)
# Rows per lm_head matmul in ``token_stats_from_hidden``: [1024, 8192] is within ~8% of one [N, 8192] matmul's
# throughput on CPU, re-reads each weight chunk only N / 1024 times, and the logits tile stays at 32 MB fp32.
_MATMUL_ELEMS = 1 << 23
# Floor for d = z − m before computing e^d · d.  e^d underflows to exactly 0 in fp32 below ≈ −104, so clamping
# there changes nothing, except that a masked logit (−inf) gives 0 · (−1e4) = 0 instead of 0 · (−inf) = NaN.
_D_FLOOR = -1.0e4
# Initial running max: finite, so that a chunk whose logits are all −inf gives d = −inf (→ e^d = 0), not
# −inf − (−inf) = NaN.  Logits must therefore be larger than ~−3e38, which any real model's are.
_M_INIT = torch.finfo(_F32).min


class TokenStats(NamedTuple):
    """Per-token statistics, each [N] fp32."""

    logprob: torch.Tensor  # log p(target)
    entropy: torch.Tensor  # full-vocabulary entropy, natural log
    sum_p2: torch.Tensor  # Σ_v p_v² (collision probability)


def logit_grad_norm(logprob: torch.Tensor, sum_p2: torch.Tensor) -> torch.Tensor:
    """‖∂ log p(a) / ∂z‖₂ = sqrt(1 − 2 p(a) + Σp²), p(a) = exp(logprob); any shape, elementwise.

    The gradient of log-softmax at the target is e_a − p, whose squared norm is 1 − 2 p_a + Σ_v p_v².
    Clamped at 0 because rounding can push a near-one-hot distribution's value a hair below zero.
    """
    return torch.sqrt(torch.clamp(1.0 - 2.0 * torch.exp(logprob) + sum_p2, min=0.0))


@torch.no_grad()
def naive_token_stats(logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0) -> TokenStats:
    """The dense twin of :func:`token_stats_from_logits`: materialises [N, V] fp32 log-probabilities.

    logits [N, V] (any float dtype), targets [N] int64 → :class:`TokenStats` of [N] fp32.  Equivalent to::

        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        p = logp.exp()
        TokenStats(logp.gather(-1, targets[:, None])[:, 0], -(p * logp).sum(-1), (p * p).sum(-1))

    except that masked (−inf) logits contribute 0 to the entropy rather than 0 · (−inf) = NaN.
    Peak extra memory is about 3 × N × V × 4 bytes; use it as a reference, not on real vocabularies.
    """
    _check_logits(logits, targets)
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    logp = torch.log_softmax(z, dim=-1)
    logprob = logp.gather(-1, targets[:, None].long())[:, 0]
    p = logp.exp()
    sum_p2 = (p * p).sum(-1)
    logp.clamp_(min=_D_FLOOR)  # in place, after the gather: p = 0 there, so only 0·(−inf) changes
    entropy = -(p * logp).sum(-1)
    return TokenStats(logprob, entropy, sum_p2)


@torch.no_grad()
def token_stats_from_logits(
    logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0, chunk_size: int = 8192
) -> TokenStats:
    """Log-prob of the target, entropy and Σp² per token, in one chunked pass over the vocabulary.

    logits [N, V] (bf16/fp16/fp32, any device), targets [N] int64 in [0, V) → :class:`TokenStats`, each
    [N] fp32.  Logits are divided by ``temperature`` first, so the statistics are those of the sampling
    distribution.  The vocabulary is visited in chunks of ``chunk_size`` columns and the tokens in row blocks
    of about 2^18 / chunk_size rows, upcast to fp32 tile by tile: peak extra memory is a few
    [rows, chunk] fp32 tiles plus O(N), never O(N × V).  Equivalent to (see :func:`naive_token_stats`)::

        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        p = logp.exp()
        logprob = logp.gather(-1, targets[:, None])[:, 0]
        entropy = -(p * logp).sum(-1)
        sum_p2 = (p * p).sum(-1)
    """
    _check_logits(logits, targets)
    _check_args(temperature, chunk_size)
    n, v = logits.shape
    acc = _OnlineStats(n, min(chunk_size, max(v, 1)), logits.device)
    for c0 in range(0, v, chunk_size):
        acc.fold(logits[:, c0 : c0 + chunk_size], temperature)
    target_logit = logits.gather(1, targets[:, None].long())[:, 0].float()
    if temperature != 1.0:
        target_logit = target_logit / temperature  # same rounding as the tiles' z, so log p(a) ≤ 0 holds
    return acc.finish(target_logit)


@torch.no_grad()
def token_stats_from_hidden(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = 8192,
) -> TokenStats:
    """As :func:`token_stats_from_logits` on ``hidden @ weight.T + bias``, without the [N, V] logits existing.

    hidden [N, D], weight [V, D] (the lm_head weight), optional bias [V], targets [N] int64 in [0, V)
    → :class:`TokenStats`, each [N] fp32.  Each [rows, chunk] block of logits is computed by a matmul in the
    input dtype (as the model's own lm_head would), then folded into fp32 accumulators; the target's logit is
    picked from the block that contains it.  Equivalent to::

        naive_token_stats(torch.nn.functional.linear(hidden, weight, bias), targets, temperature=temperature)
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"expected hidden [N, D] and weight [V, D], got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"expected bias [V={weight.shape[0]}], got {tuple(bias.shape)}")
    _check_targets(targets, hidden.shape[0])
    _check_args(temperature, chunk_size)
    n, v = hidden.shape[0], weight.shape[0]
    acc = _OnlineStats(n, min(chunk_size, max(v, 1)), hidden.device)
    target_logit = torch.full((n,), float("nan"), dtype=_F32, device=hidden.device)  # NaN ⇒ target ∉ [0, V)
    targets = targets.long()
    rows = max(1, _MATMUL_ELEMS // min(chunk_size, max(v, 1)))
    for r0 in range(0, n, rows):
        h, tgt = hidden[r0 : r0 + rows], targets[r0 : r0 + rows]
        for c0 in range(0, v, chunk_size):
            w = weight[c0 : c0 + chunk_size]
            z = h @ w.T if bias is None else torch.addmm(bias[c0 : c0 + chunk_size], h, w.T)
            acc.fold(z, temperature, row0=r0)
            # The target logit, taken from this very block so that it matches what the sums saw.
            idx = tgt - c0
            inside = (idx >= 0) & (idx < z.shape[1])
            picked = z.gather(1, idx.clamp(0, z.shape[1] - 1)[:, None])[:, 0].float()
            target_logit[r0 : r0 + rows] = torch.where(inside, picked, target_logit[r0 : r0 + rows])
    if temperature != 1.0:
        target_logit = target_logit / temperature
    return acc.finish(target_logit)


class _OnlineStats:
    """fp32 running accumulators m, s, t, u for N tokens, plus the scratch tiles the updates reuse."""

    def __init__(self, n: int, chunk: int, device: torch.device) -> None:
        self.m = torch.full((n,), _M_INIT, dtype=_F32, device=device)
        self.s = torch.zeros(n, dtype=_F32, device=device)
        self.t = torch.zeros(n, dtype=_F32, device=device)
        self.u = torch.zeros(n, dtype=_F32, device=device)
        self.rows = max(1, _TILE_ELEMS // chunk)
        # Reused tiles: allocating fresh ~1 MB temporaries per tile costs page faults comparable to the
        # arithmetic on CPU.  Flat buffers, viewed as contiguous [r, c] for each tile's actual shape.
        size = min(self.rows, max(n, 1)) * chunk
        self._z, self._d, self._e = (torch.empty(size, dtype=_F32, device=device) for _ in range(3))

    def _tile(self, buf: torch.Tensor, r: int, c: int) -> torch.Tensor:
        return buf[: r * c].view(r, c)

    def fold(self, block: torch.Tensor, temperature: float, row0: int = 0) -> None:
        """Fold logits ``block`` [R, C] (tokens row0 … row0+R−1, one vocabulary chunk) into the sums."""
        n_rows, c = block.shape
        for r0 in range(0, n_rows, self.rows):
            x = block[r0 : r0 + self.rows]
            r = x.shape[0]
            if x.dtype == _F32 and temperature == 1.0:
                z = x  # no copy needed: already the fp32 logits we want
            else:
                z = self._tile(self._z, r, c).copy_(x)  # upcast before dividing, so T ≠ 1 loses nothing
                if temperature != 1.0:
                    z.div_(temperature)
            rows = slice(row0 + r0, row0 + r0 + r)
            self._update(z, self.m[rows], self.s[rows], self.t[rows], self.u[rows])

    def _update(self, z, m, s, t, u) -> None:
        r, c = z.shape
        m_new = torch.maximum(m, z.amax(dim=1))
        delta = m_new - m  # ≥ 0, finite (m starts finite)
        alpha = torch.exp(-delta)
        d = torch.sub(z, m_new[:, None], out=self._tile(self._d, r, c)).clamp_(min=_D_FLOOR)
        e = torch.exp(d, out=self._tile(self._e, r, c))
        # Order matters: t's rescale needs the old s, and e·e overwrites e, so t, then s, then u.
        # α·δ rather than δ then α: α underflows to 0 exactly when δ is huge, so the product never overflows.
        t.mul_(alpha).sub_(alpha * delta * s).add_(torch.mul(e, d, out=d).sum(dim=1))
        s.mul_(alpha).add_(e.sum(dim=1))
        u.mul_(alpha * alpha).add_(torch.mul(e, e, out=e).sum(dim=1))
        m.copy_(m_new)

    def finish(self, target_logit: torch.Tensor) -> TokenStats:
        log_s = torch.log(self.s)
        # log p(a) = (z_a − m) − log s rather than z_a − (m + log s): z_a − m is exact when z_a is the max,
        # so logits near ±1e4 (ulp 1e-3) do not round the log-prob.
        logprob = (target_logit - self.m) - log_s
        entropy = (log_s - self.t / self.s).clamp_(min=0.0)  # −t/s ≥ 0 and log s ≥ 0; clamp only rounding
        sum_p2 = self.u / (self.s * self.s)
        return TokenStats(logprob, entropy, sum_p2)


def _check_targets(targets: torch.Tensor, n: int) -> None:
    if targets.dim() != 1 or targets.shape[0] != n:
        raise ValueError(f"expected targets [N={n}], got {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer token ids, got {targets.dtype}")


def _check_logits(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"expected logits [N, V], got shape {tuple(logits.shape)}")
    if not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be floating point, got {logits.dtype}")
    _check_targets(targets, logits.shape[0])


def _check_args(temperature: float, chunk_size: int) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
