"""Sampling: prompts in, sampled response token ids out; the ``hf`` sampler, seeds and padding.

A sampler is registered by name in :data:`entropy_lens.capture.backends.SAMPLERS` (protocol there).
``collect`` never takes the scores of the sampled tokens from the sampler: every sampler's output is scored by
the same teacher-forced pass (:mod:`entropy_lens.capture.scoring`), because exact full-vocabulary entropy needs
the whole distribution, which engines such as vLLM do not return.  The trainer's sampler,
:func:`sample_with_stats` (sampler ``static``), has that distribution at hand and records the statistics as it
samples; they equal the teacher-forced pass's to float rounding.
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from entropy_lens.capture.backends import EngineOptions, Response, SamplingParams
from entropy_lens.capture.decoders import DECODERS, PromptBlock, pick_decoder
from entropy_lens.capture.padding import pad_sequences


def batch_seed(seed: int, step: int, batch: int) -> int:
    """Randomness of one sampling batch depends on (seed, step, batch) only, never on what ran before."""
    return (seed * 1_000_003 + step * 10_007 + batch) % (2**63)


def encode_prompt(tokenizer, prompt: str, *, chat_template: bool = True) -> list[int]:
    """Token ids of ``prompt``, through the tokenizer's chat template when it has one and it is wanted."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def cut_at_eos(row: Sequence[int], eos_ids: set[int], max_new_tokens: int) -> Response:
    """Generated ids (after the prompt) → the response up to and including the first EOS."""
    for i, t in enumerate(row):
        if t in eos_ids:
            return Response(token_ids=list(row[: i + 1]), truncated=False)
    return Response(token_ids=list(row[:max_new_tokens]), truncated=len(row) >= max_new_tokens)


def eos_token_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def sample_hf(model, tokenizer, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
              *, seed: int) -> list[Response]:
    """Batched, KV-cached ancestral sampling with transformers' ``generate`` (left-padded prompts).

    The generation config is built here from ``params`` alone, so a checkpoint's ``generation_config.json``
    (top_k=50, repetition penalties...) cannot silently change the distribution being studied.  Seeded per
    call: the same prompts, params and seed give the same tokens.
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    input_ids, mask = pad_sequences(prompt_ids, pad, "left")
    width = input_ids.shape[1]
    eos = eos_token_ids(model, tokenizer)
    # top_k=0 turns off transformers' default top-k of 50 when sampling; greedy decoding takes no sampling
    # flags at all (transformers warns about any it is given).
    sampling = (dict(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
                if params.temperature > 0 else dict(do_sample=False))
    gen = GenerationConfig(
        **sampling, num_beams=1, max_new_tokens=params.max_new_tokens,
        repetition_penalty=1.0, pad_token_id=pad, eos_token_id=sorted(eos), bos_token_id=None,
    )
    torch.manual_seed(seed)
    out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=gen)
    new = out[:, width:].tolist()
    return [cut_at_eos(row, eos, params.max_new_tokens) for row in new]


class HfSampler:
    """Sampler ``hf``: :func:`sample_hf` on each batch of ``batch_size`` prompts, with that batch's seed."""

    def __init__(self, options: EngineOptions = EngineOptions()):
        pass  # transformers' generate runs on the loaded model: no engine to set up

    def __call__(self, model, tokenizer, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                 batch_seeds: Sequence[int], batch_size: int) -> list[Response]:
        starts = range(0, len(prompt_ids), batch_size)
        responses: list[Response] = []
        for b, lo in enumerate(tqdm(starts, desc="sample", unit="batch", leave=False, file=sys.stderr,
                                    disable=True if len(starts) < 2 else None)):
            responses += self.sample_batch(model, tokenizer, prompt_ids[lo:lo + batch_size], params, batch_seeds[b])
        return responses

    def sample_batch(self, model, tokenizer, prompt_ids, params: SamplingParams, seed: int) -> list[Response]:
        return sample_hf(model, tokenizer, prompt_ids, params, seed=seed)


# Decode-batch compaction in :func:`sample_with_stats`: finished rows are dropped from the batch (and the KV cache)
# once they are at least this share of the rows still being decoded.  Each compaction copies the cache; never
# compacting decodes every row to the longest response.  Measured on the embedded default's first round (320
# rows, ≤ 64 tokens, mean 28, post-SFT model, 1 thread): 0.64 s at 0.1 and 0.25, 0.75 s at 0.5, 1.15 s never.
COMPACT_FRACTION = 0.25


@torch.no_grad()
def sample_with_stats(model, tokenizer, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *, seed: int,
                      stats: bool = True, decoder: str | None = None):
    """Ancestral sampling with a pre-allocated KV cache, recording each sampled token's statistics on the way.

    Returns ``(responses, scores)``: the responses as :func:`sample_hf` cuts them (up to and including the first
    EOS), and a :class:`entropy_lens.capture.scoring.Scores` of the sampling distribution ``softmax(logits / T)``
    at each sampled token — its log-prob, full-vocabulary entropy, Σp², Σp² log p and varentropy
    (``scoring.STAT_FIELDS``) — computed from the very logits the
    token was drawn from (``ops.token_stats_from_logits``), so no second, teacher-forced pass is needed: they
    equal :func:`entropy_lens.capture.scoring.score` on the same tokens up to float rounding (tested, 1e-5).
    ``scores`` is None for greedy decoding (``temperature == 0``) or ``stats=False``.

    The same distribution as :func:`sample_hf` (temperature, then top-p over it; no top-k, no repetition
    penalty), but not the same random stream: the same seed gives the same tokens here, not the tokens
    ``sample_hf`` draws.  How it saves time on small models, where a decode step is mostly per-call overhead:

    * identical prompts (the G samples of a GRPO group) are prefilled once and their cache rows repeated;
    * each decode step is one call of a registered decoder (:mod:`entropy_lens.capture.decoders`; ``decoder``
      names one, None picks it for the model): a stock Qwen2 in plain tensor calls, or the stock modules of other
      full-attention models, on a pre-allocated cache with the causal/padding mask built here once and updated
      in place, position ids from the left padding;
    * rows that have sampled EOS are dropped from the batch (the decoder's ``keep``) once they are
      ``COMPACT_FRACTION`` of it, so the batch does not decode every row to the longest response.

    (``torch.compile`` of the decode step was measured and not used: 41 s to compile on CPU, and slower at
    320 rows, 46 ms a step against 19 ms eager.)

    Models no decoder fits (sliding-window or non-attention layers, an attention implementation other than
    ``sdpa``) are sampled by :func:`sample_hf` and scored by ``capture.scoring.score`` instead.  The random
    draws use a private ``torch.Generator`` seeded with ``seed``; the global RNG is untouched.
    """
    from entropy_lens.capture.scoring import STAT_FIELDS, Scores
    from entropy_lens.ops import token_stats_from_logits

    device = next(model.parameters()).device
    n, steps, temp = len(prompt_ids), params.max_new_tokens, params.temperature
    stats = stats and temp > 0
    if decoder is not None and not DECODERS.get(decoder).fits(model):
        raise ValueError(f"decoder {decoder!r} does not fit {type(model).__name__} (pick_decoder chooses one that "
                         "does)")
    decoder = decoder or pick_decoder(model)
    if decoder is None:
        responses = sample_hf(model, tokenizer, prompt_ids, params, seed=seed)
        if not stats:
            return responses, None
        from entropy_lens.capture.scoring import score

        return responses, score(model, prompt_ids, [r.token_ids for r in responses], temperature=temp)
    if n == 0 or steps < 1:
        empty = Scores(*(np.zeros(0, np.float32) for _ in STAT_FIELDS), lengths=[0] * n) if stats else None
        return [Response([], steps < 1 and n > 0) for _ in range(n)], empty
    eos = sorted(eos_token_ids(model, tokenizer))
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)

    dec, logits, keymask, next_pos, width = _prefill(DECODERS.get(decoder)(model, steps), prompt_ids, steps, pad,
                                                     device)
    gen = torch.Generator(device=device).manual_seed(seed)
    tokens = torch.full((n, steps), pad, dtype=torch.long, device=device)
    st = torch.zeros((len(STAT_FIELDS), n, steps), dtype=torch.float32, device=device) if stats else None
    rows = torch.arange(n, device=device)  # original index of each decoded row
    alive = torch.ones(n, dtype=torch.bool, device=device)  # not finished yet, per decoded row
    for t in range(steps):
        if temp > 0:
            tok = _draw(logits, temp, params.top_p, gen)
            if stats:
                s = token_stats_from_logits(logits, tok, temperature=temp)
                st[:, rows, t] = torch.stack([getattr(s, k) for k in STAT_FIELDS])
        else:
            tok = logits.argmax(dim=-1)
        tokens[rows, t] = torch.where(alive, tok, pad)
        alive &= ~torch.isin(tok, eos_t)
        if t == steps - 1 or not bool(alive.any()):
            break
        dead = int((~alive).sum())
        if dead and dead >= COMPACT_FRACTION * len(rows):
            keep = alive.nonzero()[:, 0]
            dec.keep(keep)
            rows, tok, keymask, next_pos, alive = rows[keep], tok[keep], keymask[keep], next_pos[keep], alive[keep]
        keymask[:, 0, 0, width + t] = True
        logits = dec.step(tok, keymask[..., : width + t + 1], next_pos)
        next_pos = next_pos + 1

    eos_set = set(eos)
    responses = [cut_at_eos(row, eos_set, steps) for row in tokens.tolist()]
    if not stats:
        return responses, None
    lens = [len(r.token_ids) for r in responses]
    valid = torch.arange(steps, device=device)[None, :] < torch.tensor(lens, device=device)[:, None]
    flat = [st[k][valid].cpu().numpy() for k in range(len(STAT_FIELDS))]  # row-major: (sequence, position) order
    return responses, Scores(*flat, lengths=lens)


def _prefill(dec, prompt_ids: Sequence[Sequence[int]], steps: int, pad: int, device):
    """Run the prompts into the decoder's fresh cache: each distinct prompt once, left-padded to a common width W
    (the cache holds W + ``steps`` positions), then its cache rows repeated for every prompt that is it.

    Returns ``(decoder, logits [B, V] of each prompt's last position, keymask [B, 1, 1, W + steps] of the real
    keys, next_pos [B] the position id of each row's next token, W)``.
    """
    block = PromptBlock.of(prompt_ids, pad)
    src = block.src.to(device)
    logits = dec.prefill(block).index_select(0, src)  # [B, V]
    dec.repeat(src)
    keymask = torch.zeros((len(prompt_ids), 1, 1, block.width + steps), dtype=torch.bool, device=device)
    keymask[:, 0, 0, : block.width] = block.real.index_select(0, block.src).to(device)
    return dec, logits, keymask, block.plen.index_select(0, block.src).to(device), block.width


def _draw(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> torch.Tensor:
    """One token per row of ``logits`` [B, V] from softmax(logits / T), top-p filtered, by inverse CDF: one
    uniform per row (``torch.multinomial`` draws one exponential per vocabulary entry)."""
    z = logits.float() / temperature
    if top_p < 1.0:
        z = _top_p_filter(z, top_p)
    cdf = torch.softmax(z, dim=-1).cumsum_(dim=-1)
    draw = torch.rand((len(cdf), 1), generator=gen, device=logits.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, draw, right=True)[:, 0].clamp_(max=cdf.shape[1] - 1)


def _top_p_filter(z: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter as transformers' ``TopPLogitsWarper``: logits outside the smallest set of tokens whose
    probability reaches ``top_p`` become −inf (the most likely token always stays)."""
    sorted_z, order = torch.sort(z, descending=False, dim=-1)
    cum = sorted_z.softmax(dim=-1).cumsum(dim=-1)
    drop = cum <= (1 - top_p)
    drop[:, -1] = False
    return z.masked_fill(drop.scatter(1, order, drop), float("-inf"))


class StaticSampler(HfSampler):
    """Sampler ``static`` (``collect --backend static``, its default): :func:`sample_with_stats` on each batch
    of ``batch_size`` prompts, with that batch's seed.  Called, it returns the responses only; through
    :meth:`sample_scored` also their statistics, recorded while sampling, which ``collect`` then stores
    instead of running its teacher-forced pass (the same numbers to float rounding, tested)."""

    def sample_batch(self, model, tokenizer, prompt_ids, params: SamplingParams, seed: int) -> list[Response]:
        return sample_with_stats(model, tokenizer, prompt_ids, params, seed=seed, stats=False)[0]

    def sample_scored(self, model, tokenizer, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                      batch_seeds: Sequence[int], batch_size: int):
        """``(responses, scores)`` for a sampling temperature > 0 (greedy decoding records no scores)."""
        from entropy_lens.capture.scoring import Scores

        parts = [sample_with_stats(model, tokenizer, prompt_ids[lo:lo + batch_size], params, seed=batch_seeds[b])
                 for b, lo in enumerate(range(0, len(prompt_ids), batch_size))]
        return [r for responses, _ in parts for r in responses], Scores.concat([s for _, s in parts])
