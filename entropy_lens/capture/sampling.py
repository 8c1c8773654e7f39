"""Sampling: prompts in, sampled response token ids out; the ``hf`` sampler, seeds and padding.

A sampler is registered by name in :data:`entropy_lens.capture.backends.SAMPLERS` (protocol there).  The
scores of the sampled tokens are never taken from the sampler: every sampler's output is scored by the same
teacher-forced pass (:mod:`entropy_lens.capture.scoring`), because exact full-vocabulary entropy needs the
whole distribution, which engines such as vLLM do not return.
"""

from __future__ import annotations

import sys
from typing import Literal, Sequence

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from entropy_lens.capture.backends import EngineOptions, Response, SamplingParams


def batch_seed(seed: int, step: int, batch: int) -> int:
    """Randomness of one sampling batch depends on (seed, step, batch) only, never on what ran before."""
    return (seed * 1_000_003 + step * 10_007 + batch) % (2**63)


def pad_sequences(seqs: Sequence[Sequence[int]], pad: int, side: Literal["left", "right"]) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id sequences → ``(ids, mask)``, both ``[len(seqs), max length]`` int64: ``pad`` fills the
    ``side`` end of each row and ``mask`` is 1 on the real tokens.

    Left padding lines the prompts up at their end, where ``generate`` appends; right padding keeps each
    sequence at positions 0.., so causal attention at a real token never reaches a pad.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', not {side!r}")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        lo = width - len(s) if side == "left" else 0
        ids[i, lo: lo + len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, lo: lo + len(s)] = 1
    return ids, mask


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
            responses += sample_hf(model, tokenizer, prompt_ids[lo:lo + batch_size], params, seed=batch_seeds[b])
        return responses
