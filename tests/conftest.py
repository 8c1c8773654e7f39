"""Shared fixtures: tiny models built from config (no downloads), saved in every checkpoint layout."""

from __future__ import annotations

from pathlib import Path

import pytest




@pytest.fixture(scope="session")
def tiny_tokenizer():
    from entropy_lens.models import build_char_tokenizer
    from entropy_lens.tasks.arith import ALPHABET

    return build_char_tokenizer(ALPHABET)


def make_tiny(tokenizer, seed: int):
    from entropy_lens.models import TinyModelConfig, build_tiny_model

    cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
    return build_tiny_model(tokenizer, cfg, seed=seed)


LAYOUTS = {
    "hf": lambda root, step: root,
    "trl": lambda root, step: root / f"checkpoint-{step}",
    "verl": lambda root, step: root / f"global_step_{step}" / "actor" / "huggingface",
    "step": lambda root, step: root / f"step_{step}",
}


def save_run(root: Path, tokenizer, layout: str, steps=(0, 10, 20)) -> Path:
    """Save one tiny model per step in ``layout`` under ``root`` (the "hf" layout holds a single model)."""
    from entropy_lens.models import save_checkpoint

    for step in steps[:1] if layout == "hf" else steps:
        save_checkpoint(make_tiny(tokenizer, seed=step), tokenizer, LAYOUTS[layout](root, step))
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_tokenizer) -> Path:
    """Three tiny checkpoints (steps 0, 10, 20) in the step_N layout."""
    return save_run(tmp_path_factory.mktemp("run"), tiny_tokenizer, "step")
