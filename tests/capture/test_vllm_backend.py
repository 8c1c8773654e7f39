"""``collect --backend vllm`` against a fake ``vllm`` module with the shapes of vLLM's documented API.

vLLM cannot be installed on a CPU machine, so the adapter is tested against stand-ins for ``vllm.LLM``,
``vllm.SamplingParams``, ``RequestOutput`` and ``CompletionOutput`` (fields ``token_ids``, ``text``,
``finish_reason`` "stop" | "length", ``stop_reason``, ``index``).  The fake engine reads the checkpoint's
config.json and samples seeded random tokens, so what is checked is the adapter: how requests are built,
that one engine per checkpoint is created and shut down before the torch scorer runs, how outputs become
responses, and that the store it writes is scored exactly.  ``test_real_vllm_sweep`` (marker ``gpu``) runs
the real engine where vllm is installed.

What was and was not exercised (written on a machine without a GPU, where vLLM cannot be installed):

* exercised on CPU (this file): the adapter against a fake ``vllm`` module whose
  ``LLM``, ``SamplingParams``, ``RequestOutput`` and ``CompletionOutput`` have the shapes of vLLM's
  documented API — request construction (token-id prompts, one SamplingParams per request, seeds, stop
  ids, max_model_len), the engine built once per checkpoint and shut down before scoring, the HF model
  off the device while the engine lives, output mapping (EOS kept, ``length`` → truncated), the whole
  ``collect`` sweep writing a valid store with exact teacher-forced scores, and the "install
  entropy-lens[vllm]" error when vllm is missing;
* NOT exercised: a real vLLM engine — argument names against the installed vLLM version, that shutdown
  really returns the GPU memory (``engine_core.shutdown`` + ``destroy_model_parallel``), per-request
  seed determinism and throughput.  ``test_real_vllm_sweep`` (marked ``gpu``, skipped unless vllm
  imports) runs the real thing on a GPU machine.
"""

from __future__ import annotations

import json
import random
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import entropy_lens
from entropy_lens.capture import sweep, tables
from entropy_lens.capture.sampling import Response, batch_seed
from entropy_lens.capture.vllm_backend import request_seed, to_response
from tests.capture.test_sweep import collect, reference_stats

EOS = 1  # the tiny char tokenizer's <eos>


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: None
    finish_reason: str | None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: None
    outputs: list[CompletionOutput]
    finished: bool = True


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        for k, v in kwargs.items():
            setattr(self, k, v)


@dataclass
class FakeVllm:
    """A fake ``vllm`` module plus the record of what was done with it."""

    events: list = field(default_factory=list)
    engines: list = field(default_factory=list)
    drop_stop_token: bool = False  # a vLLM that leaves the stop token out of token_ids

    def module(self) -> types.ModuleType:
        fake = self
        mod = types.ModuleType("vllm")

        class EngineCore:
            def __init__(self, llm):
                self.llm = llm

            def shutdown(self):
                fake.events.append(("shutdown", self.llm.model))
                self.llm.alive = False

        class LLM:
            def __init__(self, model, **kwargs):
                self.model, self.kwargs, self.alive = model, kwargs, True
                self.vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
                self.llm_engine = types.SimpleNamespace(engine_core=EngineCore(self))
                fake.engines.append(self)
                fake.events.append(("engine", model))

            def generate(self, prompts, sampling_params=None, use_tqdm=True):
                assert self.alive
                fake.events.append(("generate", self.model))
                self.requests = list(zip(prompts, sampling_params))
                out = []
                for i, (prompt, sp) in enumerate(self.requests):
                    assert set(prompt) == {"prompt_token_ids"} and sp.n == 1
                    rng = random.Random(sp.seed)
                    ids, reason, stop = [], "length", None
                    while len(ids) < sp.max_tokens:
                        t = rng.randrange(0, self.vocab) if rng.random() > 0.15 else EOS
                        if t in sp.stop_token_ids:
                            reason, stop = "stop", t
                            if not fake.drop_stop_token:
                                ids.append(t)
                            break
                        ids.append(t)
                    out.append(RequestOutput(str(i), None, prompt["prompt_token_ids"], None,
                                             [CompletionOutput(0, "", ids, None, None, reason, stop)]))
                self.outputs = out
                return out

        mod.LLM, mod.SamplingParams = LLM, SamplingParams
        mod.RequestOutput, mod.CompletionOutput = RequestOutput, CompletionOutput
        return mod


@pytest.fixture
def fake_vllm(monkeypatch):
    fake = FakeVllm()
    monkeypatch.setitem(sys.modules, "vllm", fake.module())
    real_score = sweep.score

    def traced_score(model, *args, **kwargs):
        fake.events.append(("score", model.name_or_path))
        return real_score(model, *args, **kwargs)

    # a step's responses are scored in sweep.step_tables, the previous step's updates in tables.updates_table
    monkeypatch.setattr(sweep, "score", traced_score)
    monkeypatch.setattr(tables, "score", traced_score)
    return fake


def test_vllm_sweep_one_engine_per_checkpoint_freed_before_scoring(tmp_path, tiny_run, fake_vllm):
    out = tmp_path / "store"
    assert collect(tiny_run, out, "--backend", "vllm", "--tensor-parallel-size", "2",
                   "--gpu-memory-utilization", "0.5", "--seed", "7") == 0
    ev = fake_vllm.events
    # per checkpoint: [score its predecessor's updates], engine, generate, shutdown, then score
    assert [e for e, _ in ev] == ["engine", "generate", "shutdown", "score",
                                  "score", "engine", "generate", "shutdown", "score",
                                  "score", "engine", "generate", "shutdown", "score"]
    assert [p for e, p in ev if e == "engine"] == [str(tiny_run / f"step_{s}") for s in (0, 10, 20)]
    for llm in fake_vllm.engines:
        assert not llm.alive
        assert llm.kwargs == dict(tensor_parallel_size=2, gpu_memory_utilization=0.5, seed=7, dtype="float32",
                                  skip_tokenizer_init=True, generation_config="vllm",
                                  max_model_len=max(len(p["prompt_token_ids"]) for p, _ in llm.requests) + 12)
    # one request per (prompt, sample), its seed from the sweep's batch seed and the slot in the batch
    llm = fake_vllm.engines[1]
    assert len(llm.requests) == 3 * 2
    for i, (_, sp) in enumerate(llm.requests):
        assert sp.seed == request_seed(batch_seed(7, 10, i // 4), i % 4)
        assert (sp.n, sp.temperature, sp.top_p, sp.max_tokens, sp.detokenize) == (1, 1.0, 1.0, 12, False)
        assert EOS in sp.stop_token_ids

    store = entropy_lens.open(out)
    assert store.completed_steps == [0, 10, 20] and store.manifest["completed"]["updates"] == [0, 10]
    assert store.manifest["settings"]["backend"] == "vllm"
    samples = store.samples.collect().sort("step", "prompt_id", "sample_id")
    tokens = store.tokens.collect()
    # the stored responses are exactly what the engine returned, and are scored teacher-forced, exactly
    for request, row in zip(llm.outputs, samples.filter(pl.col("step") == 10).iter_rows(named=True)):
        t = tokens.filter((pl.col("step") == 10) & (pl.col("prompt_id") == row["prompt_id"])
                          & (pl.col("sample_id") == row["sample_id"])).sort("position")
        ids = request.outputs[0].token_ids
        assert t["token_id"].to_list() == ids
        assert row["truncated"] == (request.outputs[0].finish_reason == "length")
        logp, ent, p2 = reference_stats(tiny_run / "step_10", row["prompt"], ids)
        np.testing.assert_allclose(t["logprob"].to_numpy(), logp, atol=1e-5, rtol=0)
        np.testing.assert_allclose(t["entropy"].to_numpy(), ent, atol=1e-5, rtol=0)
        np.testing.assert_allclose(t["sum_p2"].to_numpy(), p2, atol=1e-5, rtol=0)


def test_vllm_sweep_same_seed_same_bytes(tmp_path, tiny_run, fake_vllm):
    a, b = tmp_path / "a", tmp_path / "b"
    assert collect(tiny_run, a, "--backend", "vllm", "--steps", "0:10") == 0
    fake_vllm.drop_stop_token = True  # the other output convention gives the same responses
    assert collect(tiny_run, b, "--backend", "vllm", "--steps", "0:10") == 0
    files = sorted(a.rglob("*.parquet"))
    assert len(files) == 6
    for f in files:
        assert f.read_bytes() == (b / f.relative_to(a)).read_bytes(), f


def test_to_response_output_conventions():
    def out(ids, reason, stop=None):
        return CompletionOutput(0, "", ids, None, None, reason, stop)

    assert to_response(out([5, 6, 1], "stop", 1), {1}, 8) == Response([5, 6, 1], truncated=False)
    assert to_response(out([5, 6], "stop", 1), {1}, 8) == Response([5, 6, 1], truncated=False)
    assert to_response(out([5, 6, 7], "length"), {1}, 3) == Response([5, 6, 7], truncated=True)
    assert to_response(out([5, 6], "stop", None), {1}, 8) == Response([5, 6], truncated=False)


def test_missing_vllm_is_a_one_line_install_hint(tmp_path, tiny_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    assert collect(tiny_run, tmp_path / "s", "--backend", "vllm") == 2
    err = capsys.readouterr().err.strip()
    assert "entropy-lens[vllm]" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s" / "tokens").exists()


@pytest.mark.gpu
def test_real_vllm_sweep(tmp_path, tiny_tokenizer):
    """The real engine on a GPU: a 2-step sweep completes, rows are consistent, GPU memory comes back."""
    pytest.importorskip("vllm")
    import torch

    from entropy_lens.models import TinyModelConfig, build_tiny_model, save_checkpoint

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cfg = TinyModelConfig(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=256)
    for step in (0, 10):  # head_dim 64: a size every vLLM attention backend supports
        save_checkpoint(build_tiny_model(tiny_tokenizer, cfg, seed=step), tiny_tokenizer, tmp_path / "ck" / f"step_{step}")
    out = tmp_path / "store"
    free_before = torch.cuda.mem_get_info()[0]
    assert collect(tmp_path / "ck", out, "--backend", "vllm", "--device", "cuda",
                   "--gpu-memory-utilization", "0.5") == 0
    store = entropy_lens.open(out)
    assert store.completed_steps == [0, 10]
    samples, tokens = store.samples.collect(), store.tokens.collect()
    assert samples["length"].sum() == len(tokens)
    assert tokens["entropy"].is_finite().all() and (tokens["logprob"] <= 0).all()
    # bf16 on GPU: sampled tokens should not be wildly improbable under the scorer
    assert tokens["logprob"].mean() > -np.log(len(tiny_tokenizer)) - 1
    assert torch.cuda.mem_get_info()[0] > 0.9 * free_before  # the engines gave their memory back
