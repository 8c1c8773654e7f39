"""Where capture's samplers and sweep executors are registered, by name, without importing them.

Two registries, one protocol each (the protocol's types, :class:`SamplingParams` and :class:`Response`, are
defined here too):

* :data:`SAMPLERS` — how responses are sampled.  An entry is a class built from :class:`EngineOptions`; the
  instance is a :class:`Sampler`: ``sampler(model, tokenizer, prompt_ids, params, *, batch_seeds,
  batch_size) -> list[Response]``, one response per prompt, where prompt ``i`` belongs to batch
  ``i // batch_size`` and draws its randomness from ``batch_seeds[i // batch_size]`` alone.  A sampler that
  records the token statistics while sampling also offers ``sample_scored`` (same arguments) returning
  ``(responses, scores)``; ``collect`` then skips its teacher-forced pass (``static`` does).  ``hf``
  (transformers ``generate``, batch by batch), ``static`` (the trainer's pre-allocated-cache decode loop, batch
  by batch: the same distribution, its own random stream) and ``vllm`` (one vLLM engine per call, every
  request at once).
* :data:`EXECUTORS` — how a whole ``collect`` sweep runs: ``executor(cfg: CollectConfig, sampler: str) ->
  CollectSummary``.  ``local`` (this process, checkpoint by checkpoint) and ``ray`` (a Ray Data pipeline).

``--backend`` names one of :data:`BACKENDS`, a (executor, sampler) pair: ``hf`` = local + hf, ``static`` =
local + static, ``vllm`` = local + vllm, ``ray`` = ray + static.  Every entry is a lazy ``"module:attr"`` string (or plain data), so this
module imports no torch and listing the names imports none of the backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from entropy_lens.errors import UserError
from entropy_lens.registry import Registry


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class Response:
    token_ids: list[int]  # the sampled tokens, up to and including EOS when one was sampled
    truncated: bool  # max_new_tokens reached with no EOS


@dataclass(frozen=True)
class EngineOptions:
    """How a sampler sets up an inference engine (vLLM's); the hf sampler has no engine and ignores them."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    seed: int = 0


class Sampler(Protocol):
    def __call__(self, model, tokenizer, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                 batch_seeds: Sequence[int], batch_size: int) -> list[Response]: ...


SAMPLERS: Registry[type] = Registry("sampler")
SAMPLERS.register_lazy("hf", "entropy_lens.capture.sampling:HfSampler")
SAMPLERS.register_lazy("vllm", "entropy_lens.capture.vllm_backend:VllmSampler")
SAMPLERS.register_lazy("static", "entropy_lens.capture.sampling:StaticSampler")

EXECUTORS: Registry = Registry("sweep executor")
EXECUTORS.register_lazy("local", "entropy_lens.capture.sweep:run_local")
EXECUTORS.register_lazy("ray", "entropy_lens.capture.ray_sweep:run_sweep")


@dataclass(frozen=True)
class Backend:
    """What ``--backend NAME`` runs: the sweep executor and the sampler it uses (names in the registries)."""

    executor: str
    sampler: str


BACKENDS: Registry[Backend] = Registry("sampling backend")
BACKENDS.register("hf")(Backend("local", "hf"))
BACKENDS.register("vllm")(Backend("local", "vllm"))
BACKENDS.register("ray")(Backend("ray", "static"))
BACKENDS.register("static")(Backend("local", "static"))


def batch_sampler_name(backend: str) -> str:
    """The sampler behind ``--backend backend`` for a command that samples batch by batch in this process
    (``intervene``); a backend that runs whole sweeps is refused."""
    b = BACKENDS.get(backend)
    if b.executor != "local":
        raise UserError(f"the {backend} backend runs whole sweeps (entropy-lens collect --backend {backend}); "
                        "it is not a per-batch sampler")
    return b.sampler
