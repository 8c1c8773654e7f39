"""Padding token-id sequences into a batch: the one implementation sampling, scoring and the trainer share."""

from __future__ import annotations

from typing import Literal, Sequence

import torch


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
