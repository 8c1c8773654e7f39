"""The vocabulary kernel as it was at store schema v1 (three sums s, t, u; tiles of 2^18 elements), frozen.

``benchmarks/bench_ops.py --routes logits logits-v1`` times it side by side with today's
``entropy_lens.ops.token_stats_from_logits``, which keeps two more sums (Σp² log p and the varentropy) in the
same pass: the reference for "the new accumulators cost at most 15%".  Not used by the package; the logic is
that of ``entropy_lens.ops`` at commit c4fb9e9, reduced to the logits route.
"""

from __future__ import annotations

import torch

_F32 = torch.float32
_TILE_ELEMS = 1 << 18
_D_FLOOR = -1.0e4
_M_INIT = torch.finfo(_F32).min


@torch.no_grad()
def token_stats_v1(logits: torch.Tensor, targets: torch.Tensor, *, chunk_size: int = 8192) -> tuple:
    """(logprob, entropy, sum_p2) [N] fp32 of logits [N, V] at temperature 1, the v1 way."""
    n, v = logits.shape
    acc = OnlineStatsV1(n, min(chunk_size, max(v, 1)), logits.device)
    for c0 in range(0, v, chunk_size):
        acc.fold(logits[:, c0 : c0 + chunk_size], 1.0)
    target_logit = logits.gather(1, targets.long()[:, None])[:, 0].float()
    return acc.finish(target_logit)


class OnlineStatsV1:
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

    def finish(self, target_logit: torch.Tensor) -> tuple:
        log_s = torch.log(self.s)
        # log p(a) = (z_a − m) − log s rather than z_a − (m + log s): z_a − m is exact when z_a is the max,
        # so logits near ±1e4 (ulp 1e-3) do not round the log-prob.
        logprob = (target_logit - self.m) - log_s
        entropy = (log_s - self.t / self.s).clamp_(min=0.0)  # −t/s ≥ 0 and log s ≥ 0; clamp only rounding
        sum_p2 = self.u / (self.s * self.s)
        return logprob, entropy, sum_p2
