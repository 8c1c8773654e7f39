"""Decoders: the forward passes of :func:`entropy_lens.capture.sampling.sample_with_stats`'s decode loop.

A decoder holds a batch's KV cache and answers three calls (shapes: B rows being decoded, V vocabulary):

* ``prefill(block) -> logits [U, V]``: run the distinct prompts (a :class:`PromptBlock`, left-padded to width W)
  into a fresh cache of W + ``steps`` positions; the logits of each prompt's last position;
* ``repeat(src)`` / ``keep(rows)``: make the cache's rows ``src`` (a prompt's row for each of its samples) or
  keep only ``rows`` (dropping finished ones) — the same call;
* ``step(tok [B], keymask [B, 1, 1, n], pos [B]) -> logits [B, V]``: one token per row at cache position n − 1,
  attending to the keys ``keymask`` marks, rotary position ``pos``.

Registered by name in :data:`DECODERS`; :func:`pick_decoder` chooses one for a model, or None when no decoder
fits (then the loop is not used: ``sample_hf`` samples and ``scoring.score`` scores):

* ``qwen2``: the decoder layers of a stock ``Qwen2ForCausalLM`` written out as a dozen tensor calls each
  (q/k/v and gate/up fused into one matmul each, rotary tables built once, the cache written at one column),
  reading the model's own weights.  For the embedded default's ~1M-parameter model a decode step is mostly
  per-call overhead of the stock modules; this is the same arithmetic in fewer calls.  Its naive twin is the
  model itself: ``tests/capture/test_decoders.py`` checks its logits against ``model(...)`` (1e-5).
* ``hf-cache``: any model whose layers are all full causal attention through ``sdpa``: the stock modules on a
  pre-allocated cache (:class:`_FilledStaticLayer`) with a boolean mask built once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, StaticLayer

from entropy_lens.registry import Registry

DECODERS: Registry[type] = Registry("decoder")


@dataclass
class PromptBlock:
    """The distinct prompts of a batch, left-padded: ``ids`` [U, W], ``pos`` [U, W] position ids (0 at each
    prompt's first real token), ``mask`` [U, 1, W, W] causal over real keys (a pad query sees itself only, so
    nothing is NaN), ``real`` [U, W] the real keys, ``plen`` [U], and ``src`` [B]: each batch row's prompt."""

    ids: torch.Tensor
    pos: torch.Tensor
    mask: torch.Tensor
    real: torch.Tensor
    plen: torch.Tensor
    src: torch.Tensor

    @property
    def width(self) -> int:
        return self.ids.shape[1]

    @classmethod
    def of(cls, prompt_ids: Sequence[Sequence[int]], pad: int) -> "PromptBlock":
        first: dict[tuple, int] = {}
        src = torch.tensor([first.setdefault(tuple(p), len(first)) for p in prompt_ids], dtype=torch.long)
        uniq = list(first)
        width = max(len(p) for p in uniq)
        plen = torch.tensor([len(p) for p in uniq], dtype=torch.long)
        ids = torch.full((len(uniq), width), pad, dtype=torch.long)
        for i, p in enumerate(uniq):
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        col = torch.arange(width)
        real = col[None, :] >= (width - plen)[:, None]
        pos = (col[None, :] - (width - plen)[:, None]).clamp(min=0)
        mask = (col[:, None] >= col[None, :])[None] & real[:, None, :] | torch.eye(width, dtype=torch.bool)[None]
        return cls(ids, pos, mask[:, None], real, plen, src)


def pick_decoder(model) -> str | None:
    """The registered decoder for ``model``: ``qwen2`` for a stock Qwen2, ``hf-cache`` for other full-attention
    ``sdpa`` models, None when neither fits."""
    if Qwen2Decoder.fits(model):
        return "qwen2"
    return "hf-cache" if HfCacheDecoder.fits(model) else None


def _full_attention_sdpa(model) -> bool:
    cfg = model.config
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers
    return (getattr(cfg, "_attn_implementation", None) == "sdpa" and set(types) == {"full_attention"}
            and not getattr(cfg, "use_sliding_window", False) and len(types) == cfg.num_hidden_layers)


@DECODERS.register("hf-cache")
class HfCacheDecoder:
    """The stock model's modules on a pre-allocated cache; the boolean mask means what it says only under
    ``sdpa`` and full causal attention (:meth:`fits`)."""

    def __init__(self, model, steps: int):
        self.model, self.steps, self.cache = model, steps, None
        # Models with per-layer attention types (Qwen2, Qwen3 …) take a mask per type; others a 4-D mask.
        self._mask = ((lambda m: {"full_attention": m}) if getattr(model.config, "layer_types", None)
                      else (lambda m: m))

    @staticmethod
    def fits(model) -> bool:
        return _full_attention_sdpa(model)

    def prefill(self, block: PromptBlock) -> torch.Tensor:
        device = next(self.model.parameters()).device
        layers = self.model.config.num_hidden_layers
        self.cache = Cache(layers=[_FilledStaticLayer(max_cache_len=block.width + self.steps) for _ in range(layers)])
        out = self.model(input_ids=block.ids.to(device), attention_mask=self._mask(block.mask.to(device)),
                         position_ids=block.pos.to(device), cache=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.reorder_cache(rows)

    repeat = keep

    def step(self, tok: torch.Tensor, keymask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=tok[:, None], attention_mask=self._mask(keymask), position_ids=pos[:, None],
                         cache=self.cache, use_cache=True)
        return out.logits[:, -1]


def select_written(cache: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Rows ``rows`` of a cache tensor [B, KV, L, D] in a new one [len(rows), KV, L, D], copying only the n
    positions written so far (the rest is never read before it is written)."""
    new = cache.new_empty((len(rows), *cache.shape[1:]))
    new[:, :, :n] = cache[:, :, :n].index_select(0, rows)
    return new


class _FilledStaticLayer(StaticLayer):
    """A ``StaticLayer`` (pre-allocated, written in place) whose ``update`` hands attention only the positions
    written so far: attention reads n keys instead of ``max_cache_len``, and needs no mask for the unwritten tail."""

    def update(self, key_states, value_states, *args, **kwargs):
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        n = int(self.cumulative_length)
        return keys[:, :, :n], values[:, :, :n]

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Select (or repeat) batch rows, copying only the written positions (the rest is never read before
        it is written)."""
        n = int(self.cumulative_length)
        for name in ("keys", "values"):
            setattr(self, name, select_written(getattr(self, name), beam_idx, n))


@DECODERS.register("qwen2")
class Qwen2Decoder:
    """A stock ``Qwen2ForCausalLM`` (inference) in plain tensor calls, on its own cache [B, KV, W + steps, D].

    Per layer, with h = hidden [B, T, C], H heads and KV key/value heads of size D::

        x = rms(h) · w_ln1;   q, k, v = split(x W_qkvᵀ + b_qkv);   q, k = rope(q, pos), rope(k, pos)
        h = h + sdpa(q, K, V; mask, GQA) W_oᵀ;   x = rms(h) · w_ln2;   g, u = split(x W_guᵀ)
        h = h + (silu(g) · u) W_downᵀ

    then logits = (rms(h) · w_norm) W_headᵀ.  ``rms(x) = x / sqrt(mean(x²) + ε)`` in fp32, as the model's
    RMSNorm; rope from the model's own ``rotary_emb`` (its ``inv_freq`` and scaling), tabulated once.  It
    reads the weights when built: build it after every update (``sample_with_stats`` builds one per call).

    Measured and not used: a hand-written single-query attention (two batched matmuls and a softmax instead of
    ``sdpa``, which is 29% of a sampling round here) drew the same tokens and took 0.64–0.83 s a round against
    0.70–1.04 s (50 prompts × 8, 10 interleaved rounds, 1 thread): either way a step reads the whole cache.
    """

    def __init__(self, model, steps: int):
        m, cfg = model.model, model.config
        self.steps, self.eps = steps, cfg.rms_norm_eps
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.embed, self.norm, self.head = m.embed_tokens.weight, m.norm.weight, model.lm_head.weight
        qkv = lambda a, name: torch.cat([getattr(p, name) for p in (a.q_proj, a.k_proj, a.v_proj)])  # noqa: E731
        self.layers = [dict(ln1=l.input_layernorm.weight, ln2=l.post_attention_layernorm.weight,
                            qkv=qkv(l.self_attn, "weight"), b_qkv=qkv(l.self_attn, "bias"), o=l.self_attn.o_proj.weight,
                            gu=torch.cat([l.mlp.gate_proj.weight, l.mlp.up_proj.weight]), down=l.mlp.down_proj.weight)
                       for l in m.layers]
        self.rotary, self.cos, self.sin = m.rotary_emb, None, None
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.n = 0  # cache positions written

    @staticmethod
    def fits(model) -> bool:
        cfg, m = model.config, getattr(model, "model", None)
        return (cfg.model_type == "qwen2" and type(model).__name__ == "Qwen2ForCausalLM" and _full_attention_sdpa(model)
                and getattr(cfg, "hidden_act", None) == "silu" and m is not None
                and getattr(m.rotary_emb, "rope_type", "default") == "default"
                and all(l.self_attn.q_proj.bias is not None for l in m.layers))

    def _rope_tables(self, n: int, like: torch.Tensor) -> None:
        pos = torch.arange(n, device=like.device)[None]
        cos, sin = self.rotary(like, pos)
        self.cos, self.sin = cos[0], sin[0]  # [n, D]

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The model's RMSNorm: computed in fp32, cast back to ``x``'s dtype, then scaled by ``w``."""
        x32 = x.float()
        return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, at: int) -> torch.Tensor:
        """Hidden states of ``ids`` [B, T] at positions ``pos`` [B, T], written to cache columns at … at + T."""
        b, t = ids.shape
        h_, kv, d = self.heads, self.kv_heads, self.head_dim
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # [B, 1, T, D]
        x = F.embedding(ids, self.embed)
        for i, w in enumerate(self.layers):
            qkv = F.linear(self._rms(x, w["ln1"]), w["qkv"], w["b_qkv"])
            q, k, v = (z.view(b, t, -1, d).transpose(1, 2) for z in qkv.split([h_ * d, kv * d, kv * d], dim=-1))
            self.keys[i][:, :, at: at + t] = self._rope(k, cos, sin)
            self.values[i][:, :, at: at + t] = v
            a = F.scaled_dot_product_attention(self._rope(q, cos, sin), self.keys[i][:, :, : at + t],
                                               self.values[i][:, :, : at + t], attn_mask=mask, enable_gqa=kv != h_,
                                               scale=1 / math.sqrt(d))
            x = x + F.linear(a.transpose(1, 2).reshape(b, t, h_ * d), w["o"])
            g, u = F.linear(self._rms(x, w["ln2"]), w["gu"]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(g) * u, w["down"])
        return x

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._rms(x, self.norm), self.head)

    def prefill(self, block: PromptBlock) -> torch.Tensor:
        device = self.embed.device
        u, width = block.ids.shape
        length = width + self.steps
        self._rope_tables(length, self.embed)
        shape = (u, self.kv_heads, length, self.head_dim)
        self.keys = [self.embed.new_empty(shape) for _ in self.layers]
        self.values = [self.embed.new_empty(shape) for _ in self.layers]
        x = self._forward(block.ids.to(device), block.pos.to(device), block.mask.to(device), 0)
        self.n = width
        return self._logits(x[:, -1])

    def keep(self, rows: torch.Tensor) -> None:
        self.keys = [select_written(c, rows, self.n) for c in self.keys]
        self.values = [select_written(c, rows, self.n) for c in self.values]

    repeat = keep

    def step(self, tok: torch.Tensor, keymask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = self._forward(tok[:, None], pos[:, None], keymask, self.n)
        self.n += 1
        return self._logits(x[:, -1])
