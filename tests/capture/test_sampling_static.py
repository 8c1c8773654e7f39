"""capture.sampling.sample_with_stats (the trainer's sampler, backend ``static``) against the reference sampler and
teacher-forced scoring."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from entropy_lens.capture import decoders, sampling
from entropy_lens.capture.backends import BACKENDS, SAMPLERS, Backend
from entropy_lens.capture.sampling import SamplingParams, sample_hf, sample_with_stats
from entropy_lens.capture.scoring import STAT_FIELDS, score
from entropy_lens.models import TinyModelConfig, build_char_tokenizer, build_tiny_model
from entropy_lens.tasks.arith import ALPHABET

SMALL = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                        max_positions=128)


@pytest.fixture(scope="module")
def tiny():
    tok = build_char_tokenizer(ALPHABET)
    model = build_tiny_model(tok, SMALL, seed=1).eval()
    with torch.no_grad():  # a peakier, EOS-prone distribution than the init's: responses of many lengths
        model.lm_head.weight.mul_(4.0)
    return model, tok


def prompts_of(tok, n, seed=0, group=1):
    rng = random.Random(seed)
    base = [[rng.randrange(3, len(tok)) for _ in range(rng.randint(2, 11))] for _ in range(n)]
    return [p for p in base for _ in range(group)]


@pytest.mark.parametrize("temperature, compact, decoder", [(1.0, 0.25, None), (0.7, 0.0, None), (1.3, 2.0, None),
                                                           (1.0, 0.25, "hf-cache")])
def test_sampled_statistics_equal_teacher_forced_scoring(tiny, monkeypatch, temperature, compact, decoder):
    model, tok = tiny
    monkeypatch.setattr(sampling, "COMPACT_FRACTION", compact)  # always / default / never compact the batch
    prompts = prompts_of(tok, 9, group=4)
    responses, stats = sample_with_stats(model, tok, prompts, SamplingParams(30, temperature, 1.0), seed=5,
                                         decoder=decoder)
    lengths = [len(r.token_ids) for r in responses]
    assert len(set(lengths)) > 3 and any(r.truncated for r in responses) and not all(r.truncated for r in responses)
    assert stats.lengths == lengths and len(stats.logprob) == sum(lengths)
    ref = score(model, prompts, [r.token_ids for r in responses], temperature=temperature)
    for k in STAT_FIELDS:  # all five, from the logits each token was drawn from
        np.testing.assert_allclose(getattr(stats, k), getattr(ref, k), rtol=0, atol=1e-5, err_msg=k)
    assert stats.varentropy.max() > 0.01 and stats.sum_p2_logp.min() < -0.01


def test_responses_are_cut_at_eos_and_seeded(tiny):
    model, tok = tiny
    prompts = prompts_of(tok, 6, group=3)
    params = SamplingParams(25, 1.0, 1.0)
    a, _ = sample_with_stats(model, tok, prompts, params, seed=11)
    b, _ = sample_with_stats(model, tok, prompts, params, seed=11)
    c, _ = sample_with_stats(model, tok, prompts, params, seed=12)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]
    eos = tok.eos_token_id
    for r in a:
        assert eos not in r.token_ids[:-1]
        assert r.truncated == (r.token_ids[-1:] != [eos]) and (not r.truncated or len(r.token_ids) == 25)
    before = torch.get_rng_state()
    sample_with_stats(model, tok, prompts, params, seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # a private generator: the global RNG is untouched


def test_greedy_decoding_gives_the_reference_samplers_tokens(tiny):
    model, tok = tiny
    prompts = prompts_of(tok, 8)
    params = SamplingParams(20, 0.0, 1.0)
    got, stats = sample_with_stats(model, tok, prompts, params, seed=0)
    assert stats is None
    assert [r.token_ids for r in got] == [r.token_ids for r in sample_hf(model, tok, prompts, params, seed=0)]


def first_token_probs(model, prompt, temperature):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].double()
    return torch.softmax(logits / temperature, -1).numpy()


def chi2_pvalue(counts, probs):
    """Pearson's χ² goodness of fit, bins with expected count < 5 pooled."""
    from scipy.stats import chi2

    n = counts.sum()
    exp = probs * n
    small = exp < 5
    obs = np.append(counts[~small], counts[small].sum())
    ex = np.append(exp[~small], exp[small].sum())
    keep = ex > 0
    stat = ((obs[keep] - ex[keep]) ** 2 / ex[keep]).sum()
    return chi2.sf(stat, keep.sum() - 1)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.8, 0.6)])
def test_first_token_frequencies_follow_the_reference_distribution(tiny, temperature, top_p):
    """Both samplers draw the first token from softmax(z / T) (restricted to the top-p nucleus, renormalised)."""
    model, tok = tiny
    prompt = prompts_of(tok, 1, seed=4)[0]
    p = first_token_probs(model, prompt, temperature)
    if top_p < 1.0:  # the nucleus: the most likely tokens until their mass reaches top_p
        order = np.argsort(-p)
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]
        q = np.zeros_like(p)
        q[keep] = p[keep] / p[keep].sum()
        p = q
        assert 1 < len(keep) < len(p)
    n = 4000
    params = SamplingParams(1, temperature, top_p)
    counts = {}
    for name, fn in (("static", lambda: sample_with_stats(model, tok, [prompt] * n, params, seed=7)[0]),
                     ("hf", lambda: sample_hf(model, tok, [prompt] * n, params, seed=7))):
        c = np.bincount([r.token_ids[0] for r in fn()], minlength=len(p))
        assert c[p == 0].sum() == 0, name
        assert chi2_pvalue(c, p) > 1e-3, name
        counts[name] = c
    # and the two samplers agree with each other (two-sample χ² on the pooled bins)
    pooled = (counts["static"] + counts["hf"]) / (2 * n)
    assert chi2_pvalue(counts["static"], pooled) > 1e-3


def test_static_backend_is_registered_and_is_collects_default(tiny):
    from entropy_lens.capture.config import CollectConfig

    assert BACKENDS.get("static") == Backend("local", "static") and BACKENDS.get("hf") == Backend("local", "hf")
    assert SAMPLERS.get("static") is sampling.StaticSampler
    assert CollectConfig.__dataclass_fields__["backend"].default == "static"
    model, tok = tiny
    prompts = prompts_of(tok, 3, group=2)
    params = SamplingParams(12, 1.0, 1.0)
    sampler = sampling.StaticSampler()
    assert ([r.token_ids for r in sampler(model, tok, prompts, params, batch_seeds=[2, 5], batch_size=4)]
            == [r.token_ids for r in sample_with_stats(model, tok, prompts[:4], params, seed=2)[0]
                + sample_with_stats(model, tok, prompts[4:], params, seed=5)[0]])


def test_edge_cases(tiny):
    model, tok = tiny
    none, empty = sample_with_stats(model, tok, [], SamplingParams(5, 1.0, 1.0), seed=0)
    assert none == [] and len(empty.logprob) == 0 and empty.lengths == []
    one, stats = sample_with_stats(model, tok, [[5, 6, 7]], SamplingParams(1, 1.0, 1.0), seed=0)
    assert len(one) == 1 and len(one[0].token_ids) == 1 and len(stats.logprob) == 1
    assert math.isfinite(float(stats.entropy[0]))


def test_models_the_loop_does_not_fit_fall_back_to_generate_and_scoring(tiny):
    import copy

    model, tok = tiny
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")  # an additive-mask attention: the loop's boolean mask would be wrong
    assert decoders.pick_decoder(eager) is None and decoders.pick_decoder(model) == "qwen2"
    prompts = prompts_of(tok, 4, group=2)
    params = SamplingParams(15, 1.0, 1.0)
    got, stats = sample_with_stats(eager, tok, prompts, params, seed=9)
    want = sample_hf(eager, tok, prompts, params, seed=9)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    ref = score(eager, prompts, [r.token_ids for r in want])
    np.testing.assert_array_equal(stats.logprob, ref.logprob)
