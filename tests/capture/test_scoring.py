"""capture.scoring.score, both routes (hidden states + lm_head in chunks, and logits), against a dense fp64
``torch.log_softmax`` recompute of every per-token statistic."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from entropy_lens.capture import scoring
from entropy_lens.capture.scoring import STAT_FIELDS, Scores, score
from entropy_lens.models import TinyModelConfig, build_char_tokenizer, build_tiny_model
from entropy_lens.tasks.arith import ALPHABET


@pytest.fixture(scope="module")
def tiny():
    tok = build_char_tokenizer(ALPHABET)
    model = build_tiny_model(tok, TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                                                  intermediate_size=64, max_positions=64), seed=3).eval()
    with torch.no_grad():  # peakier than the init: entropies spread over (0, log V), Σp² far from 1/V
        model.lm_head.weight.mul_(3.0)
    rng = random.Random(0)
    prompts = [[rng.randrange(3, len(tok)) for _ in range(rng.randint(2, 9))] for _ in range(7)]
    responses = [[rng.randrange(3, len(tok)) for _ in range(rng.randint(1, 13))] for _ in range(7)]
    return model, prompts, responses


def fp64_reference(model, prompts, responses, temperature: float) -> dict:
    """Every statistic from the full logits of one unpadded forward per sequence, dense fp64."""
    out = {k: [] for k in STAT_FIELDS}
    with torch.no_grad():
        for p, r in zip(prompts, responses):
            logits = model(torch.tensor([p + r])).logits[0].double() / temperature
            logp = torch.log_softmax(logits, -1)[len(p) - 1: len(p) - 1 + len(r)]
            prob = logp.exp()
            h = -(prob * logp).sum(-1)
            vals = {"logprob": logp.gather(-1, torch.tensor(r)[:, None])[:, 0], "entropy": h,
                    "sum_p2": (prob ** 2).sum(-1), "sum_p2_logp": (prob ** 2 * logp).sum(-1),
                    "varentropy": (prob * (logp + h[:, None]) ** 2).sum(-1)}
            for k in STAT_FIELDS:
                out[k].append(vals[k].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


@pytest.mark.parametrize("route", ["hidden", "logits"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_every_statistic_matches_an_fp64_recompute(tiny, monkeypatch, route, temperature):
    model, prompts, responses = tiny
    if route == "logits":  # a model whose logits are not hidden @ W.T goes through the logits route
        monkeypatch.setattr(scoring, "_plain_lm_head", lambda m: False)
    _, is_hidden = scoring.forward_at(model, prompts[:1], responses[:1], [range(len(responses[0]))])
    assert is_hidden == (route == "hidden")
    got = score(model, prompts, responses, temperature=temperature, batch_size=3, chunk_size=7)
    ref = fp64_reference(model, prompts, responses, temperature)
    assert got.lengths == [len(r) for r in responses]
    for k in STAT_FIELDS:
        assert getattr(got, k).dtype == np.float32 and len(getattr(got, k)) == sum(got.lengths), k
        np.testing.assert_allclose(getattr(got, k), ref[k], rtol=0, atol=1e-5, err_msg=k)
    assert ref["varentropy"].max() > 0.1 and ref["sum_p2_logp"].min() < -0.1  # a test that can fail


def test_scores_concat_keeps_order_and_lengths(tiny):
    model, prompts, responses = tiny
    whole = score(model, prompts, responses)
    parts = Scores.concat([score(model, prompts[:3], responses[:3]), score(model, prompts[3:], responses[3:])])
    assert parts.lengths == whole.lengths
    for k in STAT_FIELDS:
        np.testing.assert_allclose(getattr(parts, k), getattr(whole, k), rtol=0, atol=1e-6)
    empty = Scores.concat([])
    assert empty.lengths == [] and all(len(getattr(empty, k)) == 0 for k in STAT_FIELDS)
