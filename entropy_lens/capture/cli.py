"""The capture commands: ``collect`` samples checkpoints and stores per-token statistics; ``score``
re-scores a training run's saved rollouts.

Configs come from the torch-free :mod:`entropy_lens.capture.config`; each ``run`` imports the torch-heavy
module it needs only when called.  (``intervene`` is wired in :mod:`entropy_lens.cli`, which hands it the
analysis layer's site selection and summary; its config is :class:`~entropy_lens.capture.config.InterveneConfig`.)
"""

from __future__ import annotations

from entropy_lens.capture.config import CollectConfig, ScoreConfig
from entropy_lens.command import Command, needs_models


def _collect(cfg: CollectConfig) -> None:
    with needs_models("collect"):
        from entropy_lens.capture.sweep import collect

    print(collect(cfg))


def _score(cfg: ScoreConfig) -> None:
    with needs_models("score"):
        from entropy_lens.capture.score_rollouts import score_rollouts

    print(score_rollouts(cfg))


COLLECT = Command("collect", "sample checkpoints on an eval set and store per-token entropy", CollectConfig, _collect)
SCORE = Command("score", "teacher-force a training run's saved rollouts (verl, TRL, JSONL) under the checkpoints "
                         "that sampled them", ScoreConfig, _score)
