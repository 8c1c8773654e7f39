"""Sampling backends: prompts in, sampled response token ids out.

A backend is a registered function ``sample(model, tokenizer, prompt_ids, params) -> list[Response]``.
The scores of the sampled tokens are never taken from the sampler: every backend's output is scored by the
same teacher-forced pass (:mod:`entropy_lens.capture.scoring`), because exact full-vocabulary entropy needs
the whole distribution, which engines such as vLLM do not return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers import GenerationConfig

from entropy_lens.registry import Registry


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class Response:
    token_ids: list[int]  # the sampled tokens, up to and including EOS when one was sampled
    truncated: bool  # max_new_tokens reached with no EOS


Sampler = Callable[..., list[Response]]
BACKENDS: Registry[Sampler] = Registry("sampling backend")


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


@BACKENDS.register("hf")
@torch.no_grad()
def sample_hf(model, tokenizer, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
              *, seed: int) -> list[Response]:
    """Batched, KV-cached ancestral sampling with transformers' ``generate`` (left-padded prompts).

    The generation config is built here from ``params`` alone, so a checkpoint's ``generation_config.json``
    (top_k=50, repetition penalties...) cannot silently change the distribution being studied.  Seeded per
    call: the same prompts, params and seed give the same tokens.
    """
    device = next(model.parameters()).device
    width = max(len(p) for p in prompt_ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        input_ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
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
