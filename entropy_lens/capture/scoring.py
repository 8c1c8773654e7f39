"""Teacher-forced scoring: the exact per-token statistics of given responses under a given checkpoint.

For each (prompt, response) pair the model reads ``prompt + response`` once; the final hidden states at the
positions that predict response tokens go through :func:`entropy_lens.ops.token_stats_from_hidden` with
the lm_head weight, in vocabulary chunks, so the ``[tokens × vocab]`` logits never exist.  Models whose
logits are not a plain ``hidden @ W.T`` (soft-capping, logit scaling) fall back to the logits route.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from entropy_lens.capture.padding import pad_sequences
from entropy_lens.ops import token_stats_from_hidden, token_stats_from_logits


#: The per-token statistics of :class:`Scores`, in the order of :class:`entropy_lens.ops.TokenStats` (and of the
#: ``tokens`` columns that hold them).
STAT_FIELDS = ("logprob", "entropy", "sum_p2", "sum_p2_logp", "varentropy")


@dataclass
class Scores:
    """Flat per-token arrays for a batch of responses, in (sequence, position) order: each [N] fp32,
    N = ``sum(lengths)``; the fields of :data:`STAT_FIELDS` (those of ``ops.TokenStats``), then ``lengths``."""

    logprob: np.ndarray
    entropy: np.ndarray
    sum_p2: np.ndarray
    sum_p2_logp: np.ndarray
    varentropy: np.ndarray
    lengths: list[int]

    @classmethod
    def concat(cls, parts: Sequence["Scores"]) -> "Scores":
        """The scores of several batches, one after the other."""
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) if parts else np.zeros(0, np.float32)
                     for k in STAT_FIELDS), lengths=[n for p in parts for n in p.lengths])


def _plain_lm_head(model) -> bool:
    cfg = model.config
    return (getattr(model, "get_output_embeddings", lambda: None)() is not None
            and not getattr(cfg, "final_logit_softcapping", None) and getattr(cfg, "logit_scale", 1.0) in (None, 1.0))


def forward_at(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
               positions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, bool]:
    """One teacher-forced forward over right-padded ``prompt + response`` sequences, read out where response
    token ``t`` is predicted, for each ``t`` in ``positions[i]`` (flattened in that order).

    Returns ``(x, is_hidden)``: the final hidden states [N, D] when the model's logits are a plain
    ``hidden @ W.T (+ b)`` — so callers can stream the vocabulary in chunks — else the logits [N, V].
    Row ``b``, column ``P_b − 1 + t`` predicts response token ``t``.
    """
    device = next(model.parameters()).device
    pad = getattr(model.config, "pad_token_id", None) or 0
    ids, mask = pad_sequences([list(p) + list(r) for p, r in zip(prompts, responses)], pad, "right")
    rows = torch.tensor([i for i, ts in enumerate(positions) for _ in ts], dtype=torch.long, device=device)
    cols = torch.tensor([len(p) - 1 + t for p, ts in zip(prompts, positions) for t in ts], dtype=torch.long,
                        device=device)
    ids, mask = ids.to(device), mask.to(device)
    if _plain_lm_head(model):
        return model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[rows, cols], True
    return model(input_ids=ids, attention_mask=mask).logits[rows, cols], False


@torch.no_grad()
def score(model, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], *,
          temperature: float = 1.0, batch_size: int = 64, chunk_size: int = 8192) -> Scores:
    """Per-token log-prob, entropy, Σp², Σp² log p and varentropy of each response token given its prompt and
    prefix (the fields of :data:`STAT_FIELDS`, from one vocabulary pass: ``ops.token_stats_from_hidden``).

    Shapes: returns arrays of length ``sum(len(r) for r in response_ids)``; response ``i`` occupies
    ``[offsets[i], offsets[i] + len(response_ids[i]))``.  Statistics are of ``softmax(logits / temperature)``.
    """
    device = next(model.parameters()).device
    out = {k: [] for k in STAT_FIELDS}
    for lo in range(0, len(response_ids), batch_size):
        prompts, responses = prompt_ids[lo:lo + batch_size], response_ids[lo:lo + batch_size]
        targets = torch.tensor([t for r in responses for t in r], dtype=torch.long, device=device)
        if not len(targets):
            continue
        x, is_hidden = forward_at(model, prompts, responses, [range(len(r)) for r in responses])
        if is_hidden:
            head = model.get_output_embeddings()
            stats = token_stats_from_hidden(x, head.weight, targets, bias=head.bias, temperature=temperature,
                                            chunk_size=chunk_size)
        else:
            stats = token_stats_from_logits(x, targets, temperature=temperature, chunk_size=chunk_size)
        for k in out:
            out[k].append(getattr(stats, k).float().cpu().numpy())
    cat = {k: np.concatenate(v) if v else np.zeros(0, np.float32) for k, v in out.items()}
    return Scores(**cat, lengths=[len(r) for r in response_ids])
