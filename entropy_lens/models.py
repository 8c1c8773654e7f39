"""The tiny default model and tokenizer, loading of any Hugging Face causal-LM checkpoint, device and dtype.

Nothing is downloaded: the embedded default is a stock ``Qwen2ForCausalLM`` built from a small config and a
character-level tokenizer built with the ``tokenizers`` library, both saved with ``save_pretrained``, so
every path that loads a real LLM checkpoint (``AutoModelForCausalLM.from_pretrained``) loads them unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from entropy_lens.errors import UserError

# transformers' per-shard progress bars would interleave with the sweep's own; the sweep shows progress.
hf_logging.disable_progress_bar()

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")


def build_char_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: ids 0–2 are ``<pad>``, ``<eos>``, ``<unk>``, then one id per character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    chars = list(dict.fromkeys(alphabet))  # de-duplicate, keep order
    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *chars])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


@dataclass
class TinyModelConfig:
    """Shape of the embedded default model (a stock Qwen2 architecture)."""

    hidden_size: int = field(default=128, metadata={"help": "Width of the residual stream."})
    num_layers: int = field(default=4, metadata={"help": "Number of transformer blocks."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads (head dim = hidden_size / num_heads)."})
    num_kv_heads: int = field(default=2, metadata={"help": "Key/value heads (grouped-query attention)."})
    intermediate_size: int = field(default=512, metadata={"help": "MLP width."})
    max_positions: int = field(default=256, metadata={"help": "Longest prompt + response, in tokens."})


def build_tiny_model(tokenizer, config: TinyModelConfig | None = None, *, seed: int = 0) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2ForCausalLM sized for ``tokenizer`` (about 0.9M parameters by default)."""
    c = config or TinyModelConfig()
    qcfg = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
        max_position_embeddings=c.max_positions, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(qcfg)


def save_checkpoint(model, tokenizer, path: str | Path) -> Path:
    """``save_pretrained`` both model and tokenizer into ``path`` (an HF model folder)."""
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


_GENERIC_TOKENIZER_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}


def _load_tokenizer(tok_dir: Path):
    """Load a tokenizer as the class it was saved as.

    ``AutoTokenizer`` picks the tokenizer class from the model type in ``config.json`` when one sits beside
    the tokenizer; for a generic ``tokenizers`` tokenizer saved next to a Qwen2 model that means rebuilding it
    as a Qwen2 byte-level tokenizer, which silently drops spaces and newlines.  A tokenizer saved as the
    generic class is therefore loaded as the generic class, from its ``tokenizer.json``.
    """
    import json

    cls = json.loads((tok_dir / "tokenizer_config.json").read_text()).get("tokenizer_class")
    if cls in _GENERIC_TOKENIZER_CLASSES:
        return PreTrainedTokenizerFast.from_pretrained(tok_dir)
    return AutoTokenizer.from_pretrained(tok_dir)


def load_checkpoint(path: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None):
    """Load ``(model, tokenizer)`` from an HF model folder, in eval mode on ``device``.

    Tokenizer files are looked for in the folder itself, then in its parents (verl and some trainers save
    the tokenizer once beside the checkpoints).  An unreadable checkpoint is a :class:`UserError`.
    """
    path = Path(path)
    tok_dir = next((p for p in (path, *path.parents[:3]) if (p / "tokenizer_config.json").is_file()), None)
    if tok_dir is None:
        raise UserError(f"{path}: no tokenizer files (tokenizer_config.json) in the checkpoint or its parents; "
                        "save the tokenizer with the checkpoint (tokenizer.save_pretrained)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = _load_tokenizer(tok_dir)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    except Exception as e:  # safetensors, pickle, json and config errors all mean "unreadable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: unreadable checkpoint ({first}); check the folder holds a complete "
                        "save_pretrained model") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def resolve_device(device: str) -> str:
    """``--device`` → a torch device string: ``auto`` is ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"--device {device!r}: expected cpu, cuda or auto")
    return device


def default_dtype(device: str) -> torch.dtype:
    """The weights' dtype on ``device``: bfloat16 on CUDA (half the memory of float32), float32 on the CPU.

    Scoring accumulates in float32 whatever the weights' dtype (:mod:`entropy_lens.ops`)."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32
