"""Capture subcommands beyond ``collect``: ``score`` re-scores a training run's saved rollouts; ``intervene``
replaces high-entropy tokens and regenerates (PAPER §2.2 H, §2.3 K)."""

from __future__ import annotations

from entropy_lens.capture.ingest import ScoreConfig
from entropy_lens.capture.intervene import InterveneConfig


def _score(cfg: ScoreConfig) -> None:
    from entropy_lens.capture.ingest import score_rollouts

    print(score_rollouts(cfg))


def _intervene(cfg: InterveneConfig) -> None:
    from entropy_lens.capture.intervene import intervene

    print(intervene(cfg))


SUBCOMMANDS = [
    ("score", "teacher-force a training run's saved rollouts (verl, TRL, JSONL) under the checkpoints that "
              "sampled them", ScoreConfig, _score),
    ("intervene", "replace high-entropy tokens by the next-best token, regenerate, and compare accuracy by PPL "
                  "and by position (Figs. 4b, 5b)", InterveneConfig, _intervene),
]
