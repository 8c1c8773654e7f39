"""Capture subcommands beyond ``collect``: ``score`` re-scores a training run's saved rollouts."""

from __future__ import annotations

from entropy_lens.capture.ingest import ScoreConfig


def _score(cfg: ScoreConfig) -> None:
    from entropy_lens.capture.ingest import score_rollouts

    print(score_rollouts(cfg))


SUBCOMMANDS = [
    ("score", "teacher-force a training run's saved rollouts (verl, TRL, JSONL) under the checkpoints that "
              "sampled them", ScoreConfig, _score),
]
