"""``entropy-lens train`` (discovered by :mod:`entropy_lens.cli` through ``SUBCOMMANDS``)."""

from __future__ import annotations

from entropy_lens.train.config import TrainConfig


def _train(cfg: TrainConfig) -> None:
    from entropy_lens.train.grpo import train

    print(train(cfg))


SUBCOMMANDS = [
    ("train", "SFT warm-up + GRPO/DAPO on the tiny default (or --from a checkpoint), with advantage shaping",
     TrainConfig, _train),
]
