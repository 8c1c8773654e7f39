"""capture.decoders against their naive twin, the model's own forward over the whole sequence."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from entropy_lens.capture.decoders import DECODERS, PromptBlock, pick_decoder
from entropy_lens.models import TinyModelConfig, build_char_tokenizer, build_tiny_model
from entropy_lens.tasks.arith import ALPHABET

SMALL = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                        max_positions=128)


@pytest.fixture(scope="module")
def qwen2():
    tok = build_char_tokenizer(ALPHABET)
    model = build_tiny_model(tok, SMALL, seed=3).eval()
    with torch.no_grad():  # non-zero biases and a peakier head than the init's, so that mistakes show
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
        model.lm_head.weight.mul_(3.0)
    return model, tok


def llama(vocab: int):
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def decode_against_full_forward(model, name: str, n_steps: int = 6):
    """Prefill distinct left-padded prompts, repeat rows, drop some, decode ``n_steps`` random tokens; the logits
    at every step must be the model's own on the whole right-aligned sequence."""
    rng = random.Random(7)
    vocab = model.config.vocab_size
    uniq = [[rng.randrange(3, vocab) for _ in range(rng.randint(2, 9))] for _ in range(4)]
    prompts = [uniq[i] for i in (0, 1, 1, 2, 3, 3, 0)]
    block = PromptBlock.of(prompts, pad=0)
    dec = DECODERS.get(name)(model, n_steps)
    with torch.no_grad():
        logits = dec.prefill(block).index_select(0, block.src)
        dec.repeat(block.src)
        seqs = [list(p) for p in prompts]
        keymask = torch.zeros((len(prompts), 1, 1, block.width + n_steps), dtype=torch.bool)
        keymask[:, 0, 0, : block.width] = block.real.index_select(0, block.src)
        pos, rows = block.plen.index_select(0, block.src), torch.arange(len(prompts))
        worst = 0.0
        for t in range(n_steps):
            for r, i in enumerate(rows.tolist()):
                full = model(input_ids=torch.tensor([seqs[i]])).logits[0, -1]
                worst = max(worst, float((full - logits[r]).abs().max()))
            if t == 2:  # drop two rows, as the loop does with finished ones
                keep = torch.tensor([0, 2, 3, 5, 6])
                dec.keep(keep)
                rows, pos, keymask = rows[keep], pos[keep], keymask[keep]
            tok = torch.tensor([rng.randrange(3, vocab) for _ in rows])
            for i, x in zip(rows.tolist(), tok.tolist()):
                seqs[i].append(x)
            keymask[:, 0, 0, block.width + t] = True
            logits = dec.step(tok, keymask[..., : block.width + t + 1], pos)
            pos = pos + 1
    return worst


@pytest.mark.parametrize("name", ["qwen2", "hf-cache"])
def test_decoder_logits_equal_the_models_full_forward(qwen2, name):
    model, _ = qwen2
    assert decode_against_full_forward(model, name) < 1e-5


def test_hf_cache_decoder_serves_other_full_attention_models(qwen2):
    model = llama(len(qwen2[1]))
    assert pick_decoder(model) == "hf-cache"
    assert decode_against_full_forward(model, "hf-cache") < 1e-5


def test_pick_decoder(qwen2):
    import copy

    model, _ = qwen2
    assert pick_decoder(model) == "qwen2"
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")  # an additive-mask attention: neither decoder's boolean mask applies
    assert pick_decoder(eager) is None
    assert sorted(DECODERS.names()) == ["hf-cache", "qwen2"]
    from entropy_lens.capture.sampling import SamplingParams, sample_with_stats

    with pytest.raises(ValueError, match="does not fit"):  # a named decoder is checked, not trusted
        sample_with_stats(eager, qwen2[1], [[5, 6, 7]], SamplingParams(3, 1.0, 1.0), seed=0, decoder="hf-cache")
