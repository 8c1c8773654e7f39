"""The ``vllm`` sampler: vLLM's ``LLM.generate`` samples, the torch pass scores (``--backend vllm``).

vLLM is only the sampler.  Every response is still scored by :func:`entropy_lens.capture.scoring.score`
(hidden states + lm_head in vocabulary chunks), because vLLM returns at most top-k log-probs and no entropy
(vLLM's ``SamplingParams.logprobs`` returns the top-k, capped at 20 by default).  So the store's every per-token
statistic (log-prob, entropy, Σp², Σp² log p, varentropy; ``entropy_next`` in ``updates``) comes from that
pass and is filled as with ``hf``; nothing is taken from vLLM but the token ids.  Install with ``pip install 'entropy-lens[vllm]'``; ``vllm`` is imported only when the
backend runs, so the rest of the toolkit never needs it.

Engine lifetime (the sweep calls the sampler once per checkpoint, with every job of the step):

1. the HF model that the sweep loaded for scoring is moved to the CPU (if it is on a GPU) and the CUDA
   cache emptied, so the engine's ``gpu_memory_utilization`` budget sees a free device;
2. one engine is built from the checkpoint folder (``model.name_or_path``), with ``tensor_parallel_size``,
   ``gpu_memory_utilization`` and ``seed`` passed through, the sweep's dtype (bf16 on CUDA), no tokenizer
   (``skip_tokenizer_init``: prompts go in as token ids, so a verl checkpoint whose tokenizer lives in a
   parent folder works) and no generation-config defaults (``generation_config="vllm"``: the checkpoint's
   ``generation_config.json`` must not change the distribution being studied, as in ``sample_hf``);
3. every response of the step is generated in one ``generate`` call;
4. the engine is shut down and freed, then the HF model goes back to its device and scores.

So the two never hold GPU memory at the same time: sampling and scoring run one after the other.

Randomness.  One request per (prompt, sample) with ``n=1`` and its own seed
``(batch_seed(seed, step, b)·1_000_003 + slot) mod 2⁶³`` (b = the sweep's batch index, slot = the job's
index in the batch), so a response depends on ``(seed, step, job)`` alone, never on what else the engine
schedules; vLLM's prefix cache shares the prompt's KV between its G requests.  The rows are reproducible
with vLLM but are not the hf backend's rows (different sampler kernels).

Stopping.  ``stop_token_ids`` = the EOS ids the hf backend uses; the returned ``token_ids`` go through
:func:`~entropy_lens.capture.sampling.cut_at_eos`, so a response ends with its EOS exactly as with ``hf``.
Should a vLLM version leave the stop token out of ``token_ids`` (``finish_reason == "stop"`` with
``stop_reason`` = the token id), it is appended back.
"""

from __future__ import annotations

import gc
from typing import Sequence

from entropy_lens.capture.backends import EngineOptions
from entropy_lens.capture.sampling import Response, SamplingParams, cut_at_eos, eos_token_ids
from entropy_lens.errors import UserError

INSTALL_HINT = ("--backend vllm needs vLLM, which is not installed; install it with "
                "pip install 'entropy-lens[vllm]' (a CUDA GPU machine), or use --backend hf")


def import_vllm():
    """The ``vllm`` module, or a :class:`UserError` saying how to install it."""
    try:
        import vllm
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return vllm


def request_seed(batch_seed: int, slot: int) -> int:
    """Seed of one request: the job's sweep batch seed and its index in that batch."""
    return (batch_seed * 1_000_003 + slot) % (2**63)


def to_response(completion, eos: set[int], max_new_tokens: int) -> Response:
    """A vLLM ``CompletionOutput`` → :class:`Response` (up to and including the first EOS)."""
    ids = list(completion.token_ids)
    stop = getattr(completion, "stop_reason", None)
    if completion.finish_reason == "stop" and not eos.intersection(ids) and isinstance(stop, int) and stop in eos:
        ids.append(stop)  # a vLLM that leaves the stop token out of token_ids
    return cut_at_eos(ids, eos, max_new_tokens)


def shutdown(llm) -> None:
    """Stop a vLLM engine and give its GPU memory back (best effort across vLLM versions)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()  # V1: ends the engine-core process that holds the weights and KV cache
    del llm, core
    gc.collect()
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except Exception:  # older/newer layouts, or no distributed state was created
        pass
    _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class VllmSampler:
    """Sampler ``vllm`` (see the module docstring): one engine per call, every request at once."""

    def __init__(self, options: EngineOptions = EngineOptions()):
        self.vllm = import_vllm()  # a missing vllm is reported before any store is written
        self.options = options

    def __call__(self, model, tokenizer, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                 batch_seeds: Sequence[int], batch_size: int) -> list[Response]:
        """Responses to ``prompt_ids`` (one per job, in order); job i is slot ``i % batch_size`` of batch
        ``i // batch_size``, seeded from ``batch_seeds``.  ``model`` is the HF model of the checkpoint."""
        vllm = self.vllm
        path = getattr(model, "name_or_path", None)
        if not path:
            raise UserError("--backend vllm: the model does not say which folder it was loaded from "
                            "(model.name_or_path); load it with from_pretrained")
        eos = eos_token_ids(model, tokenizer)
        requests = [vllm.SamplingParams(n=1, temperature=params.temperature, top_p=params.top_p,
                                        max_tokens=params.max_new_tokens,
                                        seed=request_seed(batch_seeds[i // batch_size], i % batch_size),
                                        stop_token_ids=sorted(eos), detokenize=False)
                    for i in range(len(prompt_ids))]
        prompts = [{"prompt_token_ids": list(p)} for p in prompt_ids]
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        if device.type == "cuda":
            model.to("cpu")  # the engine gets the whole device; scoring resumes after it is gone
            _empty_cuda_cache()
        llm = None
        try:
            llm = vllm.LLM(model=str(path), tensor_parallel_size=self.options.tensor_parallel_size,
                           gpu_memory_utilization=self.options.gpu_memory_utilization, seed=self.options.seed,
                           dtype=str(dtype).removeprefix("torch."), skip_tokenizer_init=True,
                           generation_config="vllm",
                           max_model_len=max(len(p) for p in prompt_ids) + params.max_new_tokens)
            outputs = llm.generate(prompts, requests)
        finally:
            if llm is not None:
                shutdown(llm)
                llm = None
            if device.type == "cuda":
                model.to(device)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        out = []
        for request in outputs:  # LLM.generate returns outputs in the order of the prompts
            (completion,) = request.outputs
            out.append(to_response(completion, eos, params.max_new_tokens))
        return out

