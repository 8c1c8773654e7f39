from __future__ import annotations

import pytest

from entropy_lens.errors import UserError
from entropy_lens.models import load_checkpoint, save_checkpoint
from entropy_lens.tasks.arith import ALPHABET
from tests.conftest import make_tiny


def test_checkpoint_round_trip_keeps_the_tokenizer_exact(tmp_path, tiny_tokenizer):
    """The char tokenizer saved beside a Qwen2 model must not come back as Qwen2's byte-level tokenizer."""
    save_checkpoint(make_tiny(tiny_tokenizer, seed=0), tiny_tokenizer, tmp_path / "ck")
    model, tok = load_checkpoint(tmp_path / "ck")
    text = "Q: 12+3*4\n12+3=15\n15*4=60\nA: 60 hmm 的"
    assert tok(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert len(tok(text)["input_ids"]) == len(text)  # one token per character
    assert tok.decode(tok(text)["input_ids"]) == text
    assert set(ALPHABET) <= {tok.decode([i]) for i in range(len(tok))}
    assert model.config.vocab_size == len(tiny_tokenizer)


def test_missing_tokenizer_is_a_user_error(tmp_path, tiny_tokenizer):
    make_tiny(tiny_tokenizer, seed=0).save_pretrained(tmp_path / "ck")
    with pytest.raises(UserError, match="no tokenizer files"):
        load_checkpoint(tmp_path / "ck")


def test_device_and_its_default_dtype():
    import torch

    from entropy_lens.models import default_dtype, resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert default_dtype("cpu") is torch.float32
    assert default_dtype("cuda") is torch.bfloat16 and default_dtype("cuda:1") is torch.bfloat16
    with pytest.raises(UserError, match="expected cpu, cuda or auto"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="use --device cpu"):
            resolve_device("cuda")
