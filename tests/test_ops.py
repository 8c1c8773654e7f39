"""entropy_lens.ops: the chunked kernels against their dense twin, and exact oracles."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropy_lens.ops import (
    TokenStats,
    logit_grad_norm,
    naive_token_stats,
    token_stats_from_hidden,
    token_stats_from_logits,
)

# Both routes do all their arithmetic in fp32 on the same (upcast) logits, so fp32 rounding is the only
# difference: a few ulp of O(log V) quantities.
FP32_TOL = dict(rtol=1e-5, atol=1e-5)
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(1, 1), (1, 7), (5, 100), (17, 1000), (3, 4099)]  # N=1, V=1, V < chunk, V not a multiple of chunk
CHUNKS = [1, 3, 64, 8192]


def _shape_chunk_cases(max_chunks: int) -> list:
    # Hundreds of one-column chunks over a 4k vocabulary test nothing that a 100-column vocabulary does not,
    # and cost seconds (tiny bf16 matmuls on CPU especially); keep the file fast.
    return [
        pytest.param(shape, chunk, id=f"{shape[0]}x{shape[1]}-c{chunk}")
        for shape in SHAPES
        for chunk in CHUNKS
        if shape[1] <= chunk * max_chunks
    ]


def _assert_stats_close(got: TokenStats, want: TokenStats, **tol) -> None:
    for name, g, w in zip(TokenStats._fields, got, want):
        assert g.dtype == torch.float32 and g.shape == w.shape, name
        torch.testing.assert_close(g, w, **tol, msg=lambda m, name=name: f"{name}: {m}")


def _logits(n: int, v: int, dtype: torch.dtype, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, v, generator=g) * scale).to(dtype)


def _targets(n: int, v: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(seed))


# --- equivalence with the dense twin ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("shape", "chunk"), _shape_chunk_cases(max_chunks=400))
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_from_logits_matches_naive(shape, chunk, dtype, temperature):
    n, v = shape
    logits, targets = _logits(n, v, dtype), _targets(n, v)
    got = token_stats_from_logits(logits, targets, chunk_size=chunk, temperature=temperature)
    # Low-precision logits are upcast exactly in both routes, so the fp32 tolerance holds for every dtype.
    _assert_stats_close(got, naive_token_stats(logits, targets, temperature=temperature), **FP32_TOL)


# Largest relative rounding of one matmul output element in each dtype (unit roundoff 2^-p; ×2 for slack,
# accumulation itself being fp32 on CPU and GPU).
_OUT_ROUNDING = {torch.float32: 2.0**-22, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("shape", "chunk"), _shape_chunk_cases(max_chunks=120))
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_from_hidden_matches_naive(shape, chunk, dtype, with_bias):
    n, v = shape
    d = 32
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(n, d, generator=g).to(dtype)
    weight = (torch.randn(v, d, generator=g) * 2 / math.sqrt(d)).to(dtype)
    bias = torch.randn(v, generator=g).to(dtype) if with_bias else None
    targets = _targets(n, v)
    got = token_stats_from_hidden(hidden, weight, targets, bias=bias, chunk_size=chunk)

    exact = hidden.float() @ weight.float().T + (bias.float() if with_bias else 0.0)
    want = naive_token_stats(exact, targets)
    # The kernel's logits are the matmul rounded to `dtype`: each off by at most δ = ε·max|z|.  Shifting every
    # logit by ≤ δ moves every log p_v by ≤ 2δ, hence log p(a) by ≤ 2δ, Σp² by a factor e^(±4δ), and
    # H = −Σ p log p by ≤ 2δ + (e^(2δ) − 1)·H.  (fp32: δ is tiny and the fp32 tolerance dominates.)
    delta = _OUT_ROUNDING[dtype] * exact.abs().amax().item()
    if with_bias:  # the bias add rounds once more
        delta *= 2
    torch.testing.assert_close(got.logprob, want.logprob, rtol=1e-5, atol=2 * delta + 1e-5)
    h_tol = 2 * delta + math.expm1(2 * delta) * want.entropy + 1e-5
    assert ((got.entropy - want.entropy).abs() <= h_tol).all()
    torch.testing.assert_close(got.sum_p2, want.sum_p2, rtol=math.expm1(4 * delta) + 1e-5, atol=1e-6)


def test_from_hidden_equals_from_logits_on_same_dtype_logits():
    # fp32: the kernel's chunked matmul and the dense matmul agree to fp32 rounding.
    g = torch.Generator().manual_seed(3)
    hidden, weight = torch.randn(9, 16, generator=g), torch.randn(777, 16, generator=g)
    targets = _targets(9, 777)
    _assert_stats_close(
        token_stats_from_hidden(hidden, weight, targets, chunk_size=100, temperature=1.3),
        token_stats_from_logits(hidden @ weight.T, targets, chunk_size=100, temperature=1.3),
        rtol=1e-5,
        atol=1e-4,
    )


# --- exact oracles ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ["logits", "hidden"])
@pytest.mark.parametrize("level", [0.0, 123.5, -1e4])
def test_uniform_distribution(fn, level):
    n, v = 4, 1000
    targets = _targets(n, v)
    if fn == "logits":
        stats = token_stats_from_logits(torch.full((n, v), level), targets, chunk_size=64)
    else:  # zero weight + constant bias: every logit equals `level`
        stats = token_stats_from_hidden(
            torch.randn(n, 8), torch.zeros(v, 8), targets, bias=torch.full((v,), level), chunk_size=64
        )
    torch.testing.assert_close(stats.entropy, torch.full((n,), math.log(v)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stats.sum_p2, torch.full((n,), 1 / v), rtol=1e-6, atol=0.0)
    torch.testing.assert_close(stats.logprob, torch.full((n,), -math.log(v)), rtol=1e-6, atol=1e-6)
    # Σ p² log p = V · V⁻² · (−log V); every −log p equals log V, so its variance is exactly 0.
    torch.testing.assert_close(stats.sum_p2_logp, torch.full((n,), -math.log(v) / v), rtol=1e-6, atol=0.0)
    assert torch.equal(stats.varentropy, torch.zeros(n))
    # ‖e_a − p‖² = (1 − 1/V)² + (V − 1)/V² = 1 − 1/V
    torch.testing.assert_close(
        logit_grad_norm(stats.logprob, stats.sum_p2), torch.full((n,), math.sqrt(1 - 1 / v)), rtol=1e-6, atol=0.0
    )


@pytest.mark.parametrize("others", [0.0, float("-inf")], ids=["huge_logit", "others_-inf"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 8192])
def test_one_hot_distribution(others, chunk):
    n, v = 6, 300
    targets = torch.tensor([0, 1, 63, 64, 150, 299])  # first/last column and both sides of chunk borders
    logits = torch.full((n, v), others)
    logits[torch.arange(n), targets] = 1e4 if others == 0.0 else 2.5
    stats = token_stats_from_logits(logits, targets, chunk_size=chunk)
    assert torch.equal(stats.entropy, torch.zeros(n))
    assert torch.equal(stats.sum_p2, torch.ones(n))
    assert torch.equal(stats.logprob, torch.zeros(n))
    assert torch.equal(stats.sum_p2_logp, torch.zeros(n)) and torch.equal(stats.varentropy, torch.zeros(n))
    assert torch.equal(logit_grad_norm(stats.logprob, stats.sum_p2), torch.zeros(n))
    # A non-target token of a one-hot distribution: log p = −inf (masked) or ≈ −1e4; ‖∇‖ = sqrt(2).
    other = token_stats_from_logits(logits, (targets + 1) % v, chunk_size=chunk)
    assert (other.logprob < -9e3).all()
    torch.testing.assert_close(logit_grad_norm(other.logprob, other.sum_p2), torch.full((n,), math.sqrt(2)))


@pytest.mark.parametrize("chunk", [1, 7, 64, 8192])
@pytest.mark.parametrize(("k", "gap"), [(1, 2.0), (10, 0.5), (150, 7.0), (299, 3.0)])
def test_two_level_distribution(k, gap, chunk):
    # k logits at `gap`, V − k at 0: a mass q = k·e^gap / (k·e^gap + V − k) on the first level, whose tokens
    # have log p = gap − log Z, the others −log Z.  −log p takes two values `gap` apart, so
    # Var = q (1 − q) gap²; Σ p² log p = k p₁² log p₁ + (V − k) p₀² log p₀ with p₁ = e^gap / Z, p₀ = 1 / Z.
    v = 300
    logits = torch.zeros(2, v)
    logits[:, :k] = gap
    z = k * math.exp(gap) + (v - k)
    q, p1, p0 = k * math.exp(gap) / z, math.exp(gap) / z, 1 / z
    stats = token_stats_from_logits(logits, torch.tensor([0, v - 1]), chunk_size=chunk)
    torch.testing.assert_close(stats.varentropy, torch.full((2,), q * (1 - q) * gap**2), rtol=1e-5, atol=1e-6)
    want = k * p1 * p1 * math.log(p1) + (v - k) * p0 * p0 * math.log(p0)
    torch.testing.assert_close(stats.sum_p2_logp, torch.full((2,), want), rtol=1e-5, atol=1e-7)


def test_new_sums_match_float64():
    # fp64 log_softmax of the same (fp32) logits: the fp32 one-pass sums stay within 1e-5 of it.
    logits, targets = _logits(64, 5000, torch.float32, scale=4.0), _targets(64, 5000)
    logp = torch.log_softmax(logits.double(), dim=-1)
    p = logp.exp()
    h = -(p * logp).sum(-1)
    stats = token_stats_from_logits(logits, targets, chunk_size=512)
    torch.testing.assert_close(stats.sum_p2_logp.double(), (p * p * logp).sum(-1), rtol=0.0, atol=1e-5)
    torch.testing.assert_close(stats.varentropy.double(), (p * (logp + h[:, None]) ** 2).sum(-1), rtol=0.0, atol=1e-5)


@pytest.mark.parametrize("fn", ["logits", "hidden"])
def test_temperature_is_division_of_logits(fn):
    z = _logits(7, 500, torch.float32)
    targets = _targets(7, 500)
    if fn == "logits":
        hot = token_stats_from_logits(2 * z, targets, temperature=2.0, chunk_size=64)
        cold = token_stats_from_logits(z, targets, temperature=1.0, chunk_size=64)
    else:  # identity hidden → the weight rows are the logits' columns
        eye = torch.eye(7)
        hot = token_stats_from_hidden(eye, 2 * z.T, targets, temperature=2.0, chunk_size=64)
        cold = token_stats_from_hidden(eye, z.T.contiguous(), targets, temperature=1.0, chunk_size=64)
    _assert_stats_close(hot, cold, rtol=0, atol=0)  # 2z/2 == z exactly in binary floating point


def test_temperature_changes_the_distribution():
    z, targets = _logits(5, 200, torch.float32), _targets(5, 200)
    sharp = token_stats_from_logits(z, targets, temperature=0.5)
    flat = token_stats_from_logits(z, targets, temperature=2.0)
    assert (sharp.entropy < flat.entropy).all() and (sharp.sum_p2 > flat.sum_p2).all()


def test_grad_norm_matches_autograd():
    z = _logits(4, 50, torch.float32).requires_grad_(True)
    targets = _targets(4, 50)
    torch.log_softmax(z, -1).gather(1, targets[:, None]).sum().backward()
    stats = token_stats_from_logits(z, targets, chunk_size=16)
    torch.testing.assert_close(logit_grad_norm(stats.logprob, stats.sum_p2), z.grad.norm(dim=1))
    assert not stats.entropy.requires_grad  # analysis-only: no autograd graph is built


# --- numerical edge cases -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 5, 64, 8192])
def test_masked_logits_give_finite_results(chunk):
    n, v = 8, 200
    logits, targets = _logits(n, v, torch.float32), _targets(n, v)
    mask = torch.rand(n, v, generator=torch.Generator().manual_seed(4)) < 0.5
    mask[:, :70] = True  # whole leading chunks masked, as padded vocabulary rows are
    mask[torch.arange(n), targets] = False
    logits[mask] = float("-inf")
    stats = token_stats_from_logits(logits, targets, chunk_size=chunk)
    for x in stats:
        assert torch.isfinite(x).all()
    # Masked entries are exactly absent: each row equals the stats of its unmasked logits alone.
    for i in range(n):
        keep = ~mask[i]
        row = naive_token_stats(logits[i, keep][None], keep[: targets[i]].sum()[None])
        for got, want in zip(stats, row):
            torch.testing.assert_close(got[i : i + 1], want, **FP32_TOL)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_large_logits_do_not_overflow(dtype):
    n, v = 4, 3000
    base = _logits(n, v, torch.float32, scale=1.0)
    big = (base + 1e4).to(dtype)  # e^(1e4) overflows any float; fp16 itself tops out at 65504
    targets = _targets(n, v)
    stats = token_stats_from_logits(big, targets, chunk_size=256)
    for x in stats:
        assert torch.isfinite(x).all()
    # t is kept relative to the running max, so H = log s − t/s carries no cancellation of 1e4-sized terms:
    # the result equals the dense twin to fp32 rounding, and (shift invariance) the stats of the logits
    # minus 1e4, up to the rounding of the inputs themselves at 1e4 (bf16: ulp 64, so skip that).
    _assert_stats_close(stats, naive_token_stats(big, targets), **FP32_TOL)
    if dtype == torch.float32:
        _assert_stats_close(stats, token_stats_from_logits(big - 1e4, targets), rtol=1e-3, atol=1e-3)


def test_wide_spread_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0, 1e4 - 1.0], [-3e4, -3e4 + 2.0, -1e38, -3e4]])
    targets = torch.tensor([3, 1])
    _assert_stats_close(
        token_stats_from_logits(logits, targets, chunk_size=1), naive_token_stats(logits, targets), **FP32_TOL
    )


def test_non_contiguous_and_int32_targets():
    base, targets = _logits(300, 12, torch.float32), _targets(12, 300)
    logits = base.T  # [12, 300], column-major
    assert not logits.is_contiguous()
    _assert_stats_close(
        token_stats_from_logits(logits, targets.int(), chunk_size=64),
        naive_token_stats(logits.contiguous(), targets),
        **FP32_TOL,
    )


def test_empty_batch():
    stats = token_stats_from_logits(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))
    assert all(x.shape == (0,) for x in stats)
    stats = token_stats_from_hidden(torch.zeros(0, 4), torch.zeros(10, 4), torch.zeros(0, dtype=torch.long))
    assert all(x.shape == (0,) for x in stats)


def test_bad_inputs_raise():
    z, t = torch.zeros(3, 10), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="logits"):
        token_stats_from_logits(torch.zeros(3, 4, 5), t)
    with pytest.raises(ValueError, match="targets"):
        token_stats_from_logits(z, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        token_stats_from_logits(z, t.float())
    with pytest.raises(ValueError, match="temperature"):
        token_stats_from_logits(z, t, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        token_stats_from_logits(z, t, chunk_size=0)
    with pytest.raises(ValueError, match="weight"):
        token_stats_from_hidden(torch.zeros(3, 4), torch.zeros(10, 5), t)
    with pytest.raises(ValueError, match="bias"):
        token_stats_from_hidden(torch.zeros(3, 4), torch.zeros(10, 4), t, bias=torch.zeros(9))


# --- property test ------------------------------------------------------------------------------------------


@st.composite
def _cases(draw):
    n = draw(st.integers(1, 5))
    v = draw(st.integers(1, 40))
    finite = st.floats(-60.0, 60.0, allow_nan=False, width=32)
    cell = st.one_of(finite, finite, finite, st.just(float("-inf")))  # ~1 in 4 masked
    rows = [draw(st.lists(cell, min_size=v, max_size=v)) for _ in range(n)]
    targets = [draw(st.integers(0, v - 1)) for _ in range(n)]
    for row, a in zip(rows, targets):  # a row needs one live entry, or the distribution does not exist
        if all(x == float("-inf") for x in row):
            row[a] = draw(finite)
    chunk = draw(st.integers(1, 48))
    temperature = draw(st.sampled_from([0.25, 0.6, 1.0, 1.7, 4.0]))
    dtype = draw(st.sampled_from(DTYPES))
    return torch.tensor(rows).to(dtype), torch.tensor(targets), chunk, temperature


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_property_matches_naive(case):
    logits, targets, chunk, temperature = case
    got = token_stats_from_logits(logits, targets, chunk_size=chunk, temperature=temperature)
    want = naive_token_stats(logits, targets, temperature=temperature)
    # logprob may be −inf (a masked target) in both; assert_close compares infinities by equality.
    _assert_stats_close(got, want, rtol=1e-5, atol=2e-5)
    assert (got.entropy >= 0).all() and (got.entropy <= math.log(logits.shape[1]) + 1e-5).all()
    assert ((got.sum_p2 > 0) & (got.sum_p2 <= 1 + 1e-6)).all()
    assert (got.varentropy >= 0).all() and (got.sum_p2_logp <= 0).all()
