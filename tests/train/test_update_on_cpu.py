"""The bucketed update (grpo.policy_gradient / grpo.update) against the plain one-forward-per-mini-batch update."""

from __future__ import annotations

import copy
import math
import dataclasses
import random

import numpy as np
import pytest
import torch

from entropy_lens.models import TinyModelConfig, build_char_tokenizer, build_tiny_model
from entropy_lens.tasks.arith import ALPHABET
from entropy_lens.train import core, grpo
from entropy_lens.train.config import TrainConfig

SMALL = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                        max_positions=96)


@pytest.fixture(scope="module")
def batch():
    """A tiny model and a right-padded batch of 12 prompt + response rows of very different lengths."""
    tok = build_char_tokenizer(ALPHABET)
    model = build_tiny_model(tok, SMALL, seed=3).double()
    rng = random.Random(0)
    prompts = [[rng.randrange(3, len(tok)) for _ in range(rng.randint(3, 9))] for _ in range(12)]
    responses = [[rng.randrange(3, len(tok)) for _ in range(rng.choice([1, 2, 5, 17, 40]))] for _ in range(12)]
    ids, targets, mask = grpo.pack(prompts, responses, tok.pad_token_id, "cpu")
    mask = mask.double()
    g = torch.Generator().manual_seed(1)
    adv = torch.randn(len(prompts), 1, generator=g, dtype=torch.float64) * mask
    old = (torch.randn(mask.shape, generator=g, dtype=torch.float64) * 0.3 - math.log(len(tok))) * mask  # ρ ≈ 1 ± 0.3
    return model, ids, targets, mask, old, adv


def reference_loss(model, ids, targets, mask, old, adv, cfg):
    """The pre-bucketing update's loss: one forward over the whole padded mini-batch."""
    logits = model(input_ids=ids).logits[:, :-1]
    logp = core.token_logprobs(logits, targets, cfg.temperature)
    return core.clipped_policy_loss(logp, old, adv, mask, cfg.eps_low, cfg.eps_high)


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("bucket_tokens", [1, 64, 200, 10_000])
def test_bucketed_loss_and_gradient_equal_one_padded_forward(batch, monkeypatch, bucket_tokens):
    model, ids, targets, mask, old, adv = batch
    cfg = TrainConfig()
    ref_model, new_model = copy.deepcopy(model), copy.deepcopy(model)
    loss, st = reference_loss(ref_model, ids, targets, mask, old, adv, cfg)
    loss.backward()
    monkeypatch.setattr(grpo, "UPDATE_BUCKET_TOKENS", bucket_tokens)
    got_loss, got_st = grpo.policy_gradient(new_model, ids, targets, mask, old, adv, cfg, "cpu")
    assert got_loss == pytest.approx(loss.item(), rel=1e-10, abs=1e-12)
    assert got_st == pytest.approx(tuple(st), rel=1e-10, abs=1e-12)
    assert st.clip_frac_low > 0 and st.clip_frac_high > 0  # the clip acts in this batch
    for a, b in zip(grads(ref_model), grads(new_model)):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_length_buckets_cover_every_row_once_and_respect_the_budget():
    lengths = torch.tensor([5, 1, 40, 7, 7, 3, 40, 2, 19])
    buckets = grpo.length_buckets(lengths, 40)
    assert sorted(torch.cat(buckets).tolist()) == list(range(len(lengths)))
    for b in buckets:
        assert len(b) == 1 or len(b) * int(lengths[b].max()) <= 40
    widths = [int(lengths[b].max()) for b in buckets]
    assert widths == sorted(widths)


def reference_update(model, ids, targets, mask, old, adv, cfg):
    """The pre-bucketing ``grpo.update``, verbatim but for the device handling."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    b = ids.shape[0]
    bounds = np.linspace(0, b, min(cfg.minibatches, b) + 1).round().astype(int)
    logs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        loss, st = reference_loss(model, ids[lo:hi], targets[lo:hi], mask[lo:hi], old[lo:hi], adv[lo:hi], cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        logs.append((loss.item(), grad_norm.item(), *st))
    mean = np.mean(np.array(logs), axis=0)
    return {"loss": mean[0], "grad_norm": mean[1], "clip_frac_low": mean[2], "clip_frac_high": mean[3]}


@pytest.mark.parametrize("minibatches", [1, 2, 3])
def test_update_matches_the_unbucketed_update_step_for_step(batch, monkeypatch, minibatches):
    model, ids, targets, mask, old, adv = batch
    cfg = dataclasses.replace(TrainConfig(), minibatches=minibatches, lr=1e-2, warmup_steps=1, grad_clip=0.5)
    ref_model, new_model = copy.deepcopy(model), copy.deepcopy(model)
    want = reference_update(ref_model, ids, targets, mask, old, adv, cfg)
    monkeypatch.setattr(grpo, "UPDATE_BUCKET_TOKENS", 100)
    opt = torch.optim.AdamW(new_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    got = grpo.update(new_model, opt, sched, ids, targets, mask, old, adv, cfg, "cpu")
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    for a, b in zip(ref_model.parameters(), new_model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    assert any((a != b).any() for a, b in zip(model.parameters(), new_model.parameters()))  # it did train
