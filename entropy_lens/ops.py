"""Per-token statistics of a next-token distribution, without materialising [tokens × vocab] probabilities.

For each token i with logits z ∈ R^V (divided by the sampling temperature T first) and target a:

    log p(a)  = z_a − logsumexp(z)
    H         = −Σ_v p_v log p_v                      (natural log, full vocabulary)
    Σp²       = Σ_v p_v²                              (collision probability)
    Σp² log p = Σ_v p_v² log p_v                      (≤ 0; the p²-weighted mean log-prob, times Σp²)
    varentropy = Var_p(−log p) = Σ_v p_v (log p_v)² − H²   (≥ 0; 0 exactly for uniform and one-hot p)
    ‖∇_z log p(a)‖ = sqrt(1 − 2 p(a) + Σp²)           (the gradient is e_a − p)

The fast routes make one pass over the vocabulary in chunks with five fp32 sums per token, all relative to
a maximum m of the logits seen (online-softmax style).  With d_v = z_v − m ≤ 0 and e_v = e^(d_v) ∈ (0, 1]:

    s = Σ e      t = Σ e·d  (≤ 0)      q = Σ e·d²  (≥ 0)      u = Σ e²      w = Σ e²·d  (≤ 0)

and, with L = log s (so that log p_v = d_v − L and p_v = e_v / s):

    logsumexp = m + L        H = L − t/s        Σp² = u/s²
    Σp² log p = Σ e²(d − L)/s² = (w − L·u)/s²
    varentropy = Σ p (d − L)² − (L − t/s)² = q/s − (t/s)²      (the variance of d under p; the L terms cancel)

Every sum is kept relative to the max, so H, Σp² log p and the varentropy are sums and differences of
O(log V) terms, never of O(|z|) ones: logits of 1e4 cost no precision.  Two sets of sums are merged by
moving the one taken at the smaller max m up to the larger max m + δ (δ ≥ 0), with α = e^(−δ):

    s ← α s      t ← α (t − δ s)      q ← α (q − 2δ t + δ² s)      u ← α² u      w ← α² (w − δ u)

(each a sum of same-signed terms, since t, w ≤ 0: the shift itself cancels nothing).  The varentropy's
q/s − (t/s)² does cancel: its absolute rounding is about ε·(q/s), ε the fp32 epsilon, which is clamped at 0
only where rounding pushes a zero variance below it.

The chunk loop: each tile [rows, chunk] of logits gets its own row max, its five sums are taken relative to it,
and the tiles' sums are merged into the running ones once per call of ``_OnlineStats.fold`` (one vocabulary
chunk for all tokens), so that the per-row bookkeeping costs a few vector operations per chunk, not per tile.

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
# Elements per row-block × vocab-chunk tile of fp32 scratch, per CPU thread: 2^16 (256 KB per buffer), so that a
# thread's share of the tile's input and its three scratch buffers stays in its core's L2 (2 MB on the dev box).
# A tile costs ~12 torch calls, so much smaller tiles pay Python overhead instead.  Measured on the 2-core dev
# box (benchmarks/bench_ops.py and interleaved variants, busy with other processes): at 1 thread, tiles of
# 2^16 / 2^17 / 2^18 took 1.05 / 1.09 / 1.4 × the time of the previous four-sum kernel at its 2^18; at 2
# threads 2^17 was best (1.12–1.19 ×; 2^16 1.33 ×), hence "per thread".  On an accelerator the tile stays at
# the previous 2^18 elements (not re-measured here; smaller tiles would only add kernel launches).
_TILE_ELEMS_PER_THREAD = 1 << 16
_TILE_ELEMS_ACCELERATOR = 1 << 18
# (Each tile op is its own OpenMP parallel region.  On a CPU shared with other busy processes, libgomp's
# default spin-waiting makes every region wait out a descheduled partner thread; OMP_WAIT_POLICY=PASSIVE or
# torch.set_num_threads(1) avoids that.  The dense route has few, huge regions and is less exposed.)
# Rows per lm_head matmul in ``token_stats_from_hidden``: [1024, 8192] is within ~8% of one [N, 8192] matmul's
# throughput on CPU, re-reads each weight chunk only N / 1024 times, and the logits tile stays at 32 MB fp32.
_MATMUL_ELEMS = 1 << 23
# Floor for log p in the dense twin before computing p · log p.  e^d underflows to exactly 0 in fp32 below
# ≈ −104, so clamping there changes nothing, except that a masked logit (−inf) gives 0 · (−1e4) = 0 instead of
# 0 · (−inf) = NaN.  (The chunked kernels reach the same end with nansum, a pass cheaper: see _OnlineStats.)
_D_FLOOR = -1.0e4
# Initial running max: finite, so that merging a row's first sums moves them by a finite δ (α = 0, all sums 0).
# Logits must therefore be larger than ~−3e38 (and, for δ to stay finite, smaller than ~1e31), which any real
# model's are.
_M_INIT = torch.finfo(_F32).min


class TokenStats(NamedTuple):
    """Per-token statistics, each [N] fp32."""

    logprob: torch.Tensor  # log p(target)
    entropy: torch.Tensor  # full-vocabulary entropy, natural log
    sum_p2: torch.Tensor  # Σ_v p_v² (collision probability)
    sum_p2_logp: torch.Tensor  # Σ_v p_v² log p_v (≤ 0)
    varentropy: torch.Tensor  # Var_p(−log p) = Σ_v p_v (log p_v)² − H² (≥ 0)


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
        H = -(p * logp).sum(-1)
        TokenStats(logp.gather(-1, targets[:, None])[:, 0], H, (p * p).sum(-1), (p * p * logp).sum(-1),
                   (p * (logp + H[:, None]) ** 2).sum(-1))

    except that masked (−inf) logits contribute 0 rather than 0 · (−inf) = NaN.  The varentropy is taken in
    its centred form Σ p (log p + H)², which equals Σ p (log p)² − H² and cancels nothing.
    Peak extra memory is about 4 × N × V × 4 bytes; use it as a reference, not on real vocabularies.
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
    plogp = p * logp
    entropy = -plogp.sum(-1)
    sum_p2_logp = (plogp.mul_(p)).sum(-1)
    centred = logp.add_(entropy[:, None])  # log p + H
    varentropy = (centred.square_().mul_(p)).sum(-1)
    return TokenStats(logprob, entropy, sum_p2, sum_p2_logp, varentropy)


@torch.no_grad()
def token_stats_from_logits(
    logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0, chunk_size: int = 8192
) -> TokenStats:
    """Log-prob of the target, entropy, Σp², Σp² log p and varentropy per token, in one chunked pass.

    logits [N, V] (bf16/fp16/fp32, any device), targets [N] int64 in [0, V) → :class:`TokenStats`, each
    [N] fp32.  Logits are divided by ``temperature`` first, so the statistics are those of the sampling
    distribution.  The vocabulary is visited in chunks of ``chunk_size`` columns and the tokens in row blocks
    (tiles of about 2^16 elements per CPU thread), upcast to fp32 tile by tile: peak extra memory is a few
    [rows, chunk] fp32 tiles plus O(N), never O(N × V).  Equivalent to (see :func:`naive_token_stats`)::

        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        p = logp.exp()
        logprob = logp.gather(-1, targets[:, None])[:, 0]
        entropy = -(p * logp).sum(-1)
        sum_p2 = (p * p).sum(-1)
        sum_p2_logp = (p * p * logp).sum(-1)
        varentropy = (p * logp * logp).sum(-1) - entropy**2
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
    input dtype (as the model's own lm_head would), then folded into fp32 sums; the target's logit is
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


def _rebase(sums: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The sums (s, t, q, u, w) [5, n] taken relative to a max m, moved to the max m + δ (δ [n] ≥ 0).

    The module docstring's shift rules, with every factor written as α, αδ or αδ² so that nothing overflows:
    α underflows to 0 exactly when δ is huge (as from the initial max), and δ e^(−δ) ≤ 1/e, δ² e^(−δ) ≤ 4/e².
    """
    s, t, q, u, w = sums
    a = torch.exp(-delta)
    b = a * delta
    g = b * delta
    return torch.stack([a * s, a * t - b * s, a * q - 2.0 * b * t + g * s, a * a * u, a * (a * w - b * u)])


class _OnlineStats:
    """fp32 running max m [N] and sums (s, t, q, u, w) [5, N] of the module docstring, plus scratch tiles."""

    def __init__(self, n: int, chunk: int, device: torch.device) -> None:
        self.m = torch.full((n,), _M_INIT, dtype=_F32, device=device)
        self.sums = torch.zeros((5, n), dtype=_F32, device=device)
        tile = _TILE_ELEMS_PER_THREAD * torch.get_num_threads() if device.type == "cpu" else _TILE_ELEMS_ACCELERATOR
        self.rows = max(1, min(tile // chunk, n))
        # One reused [rows, 3, chunk] buffer: d, e and e·d of each row side by side, so that after the
        # in-place products (d ← e·d², e ← e²·d) a single reduction gives q, w and t.  Allocating fresh tiles
        # costs page faults comparable to the arithmetic on CPU; the views of a full tile are made once.
        self._buf = torch.empty((self.rows, 3, chunk), dtype=_F32, device=device)
        self._full = self._views(self.rows, chunk)

    def _views(self, r: int, c: int) -> tuple[torch.Tensor, ...]:
        buf = self._buf[:r, :, :c]
        return buf, buf[:, 0], buf[:, 1], buf[:, 2]

    def fold(self, block: torch.Tensor, temperature: float, row0: int = 0) -> None:
        """Fold logits ``block`` [R, C] (tokens row0 … row0+R−1, one vocabulary chunk) into the sums.

        Each tile of ``rows`` tokens is summed relative to its own row max (:meth:`_tile`); the tiles' sums
        are then merged into the running ones, both moved to the larger max (:func:`_rebase`).
        """
        n_rows, c = block.shape
        if n_rows == 0:
            return
        parts: list[list[torch.Tensor]] = [[], [], [], []]  # per tile: m, s, ‖e‖, (q, w, t)
        full = self._full if c == self._buf.shape[2] else self._views(self.rows, c)
        for r0 in range(0, n_rows, self.rows):
            x = block[r0 : r0 + self.rows]
            views = full if x.shape[0] == self.rows else self._views(x.shape[0], c)
            for part, value in zip(parts, self._tile(x, temperature, views)):
                part.append(value)
        tile_m, s, norm_e, qwt = (torch.cat(p) for p in parts)
        tile_sums = torch.stack([s, qwt[:, 2], qwt[:, 0], norm_e.square_(), qwt[:, 1]])
        # A row whose logits in this chunk are all −inf had max −inf and d = NaN: it adds nothing.
        empty = tile_m == float("-inf")
        tile_sums.masked_fill_(empty, 0.0)
        tile_m.masked_fill_(empty, _M_INIT)
        rows = slice(row0, row0 + n_rows)
        m = self.m[rows]
        m_new = torch.maximum(m, tile_m)
        self.sums[:, rows] = _rebase(self.sums[:, rows], m_new - m) + _rebase(tile_sums, m_new - tile_m)
        m.copy_(m_new)

    @staticmethod
    def _tile(x: torch.Tensor, temperature: float, views) -> tuple[torch.Tensor, ...]:
        """One tile x [r, c] of logits → its row max m [r], and relative to it s [r], ‖e‖₂ [r] (u = ‖e‖²) and
        (q, w, t) [r, 3].

        Masked logits (−inf) give d = −inf and e = 0, so e·d, e·d² and e²·d are 0 · (−inf) = NaN there:
        those three sums skip NaN (``nansum``), which costs less than a clamp of d; s and u are plain sums,
        so a NaN logit still makes every statistic of its row NaN.
        """
        buf, d, e, ed = views
        if x.dtype == _F32 and temperature == 1.0:
            m = x.amax(dim=1)
            torch.sub(x, m[:, None], out=d)  # no copy of x: it already is the fp32 logits we want
        else:
            z = d.copy_(x)  # upcast before dividing, so T ≠ 1 loses nothing
            if temperature != 1.0:
                z.div_(temperature)
            m = z.amax(dim=1)
            z.sub_(m[:, None])
        torch.exp(d, out=e)
        torch.mul(e, d, out=ed)
        s = e.sum(dim=1)
        norm_e = torch.linalg.vector_norm(e, dim=1)
        d.mul_(ed)  # e·d²
        e.mul_(ed)  # e²·d
        return m, s, norm_e, buf.nansum(dim=2)

    def finish(self, target_logit: torch.Tensor) -> TokenStats:
        s, t, q, u, w = self.sums
        log_s = torch.log(s)
        # log p(a) = (z_a − m) − log s rather than z_a − (m + log s): z_a − m is exact when z_a is the max,
        # so logits near ±1e4 (ulp 1e-3) do not round the log-prob.
        logprob = (target_logit - self.m) - log_s
        mean_d = t / s  # E_p[d] ≤ 0
        entropy = (log_s - mean_d).clamp_(min=0.0)  # −t/s ≥ 0 and log s ≥ 0; clamp only rounding
        sum_p2 = u / (s * s)
        sum_p2_logp = (w - log_s * u) / (s * s)
        varentropy = (q / s - mean_d * mean_d).clamp_(min=0.0)  # a variance; clamp only rounding
        return TokenStats(logprob, entropy, sum_p2, sum_p2_logp, varentropy)


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
