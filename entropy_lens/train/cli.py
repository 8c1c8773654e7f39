"""``entropy-lens train``: the embedded trainer as a subcommand (listed in :mod:`entropy_lens.cli`)."""

from __future__ import annotations

from entropy_lens.command import Command, needs_models
from entropy_lens.train.config import TrainConfig


def run_train(cfg: TrainConfig) -> None:
    with needs_models("train"):
        from entropy_lens.train.grpo import train

    print(train(cfg))


TRAIN = Command("train", "SFT warm-up + GRPO/DAPO on the tiny default (or --from a checkpoint), with advantage "
                "shaping", TrainConfig, run_train)
