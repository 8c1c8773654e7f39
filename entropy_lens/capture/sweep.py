"""The checkpoint sweep behind ``entropy-lens collect``.

For each checkpoint, in step order:

1. if the previous checkpoint's samples have no ``updates`` yet, teacher-force them under this checkpoint
   (Δlog-prob per token, PAPER.md §1.7);
2. unless this step is already in the store, sample ``samples_per_prompt`` responses per eval problem, score
   every response token teacher-forced (exact entropy, log-prob, Σp²), grade the answers, and write the
   step's ``tokens`` and ``samples`` partitions.

Every partition is written atomically and listed in the manifest only when complete, and every batch draws
its randomness from ``(seed, step, batch index)`` alone, so a killed sweep re-run gives exactly the rows of
an uninterrupted one.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from entropy_lens.capture.sampling import BACKENDS, SamplingParams, encode_prompt
from entropy_lens.capture.scoring import score
from entropy_lens.checkpoints import Checkpoint, discover, parse_steps, select
from entropy_lens.errors import UserError
from entropy_lens.models import load_checkpoint
from entropy_lens.store import StoreWriter, partition_path
from entropy_lens.tasks import EvalSet, load_eval_set


@dataclass
class CollectConfig:
    """Settings of ``entropy-lens collect``: sample every checkpoint on an eval set and store per-token statistics."""

    checkpoints: str = field(metadata={"help": "Folder of checkpoints (HF folder, checkpoint-N/, "
                                               "global_step_N/actor/huggingface/, step_N/), or a train run.",
                                       "positional": True})
    dataset: str = field(default="arith", metadata={"help": "Eval set: a built-in task name (arith) or a .jsonl/"
                                                            ".parquet file with one problem a row."})
    out: str = field(default="data/runs/sweep", metadata={"help": "Store directory to write (resumed if it exists)."})
    prompt_field: str = field(default="prompt", metadata={"help": "Dataset column holding the prompt."})
    answer_field: str = field(default="answer", metadata={"help": "Dataset column holding the reference answer."})
    samples_per_prompt: int = field(default=8, metadata={"help": "Responses sampled per problem (group size G)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest response, in tokens; longer ones are "
                                                                "cut and flagged truncated."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature; entropy and log-probs are "
                                                               "measured at this temperature too."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (entropy is still of the full "
                                                         "temperature-scaled distribution)."})
    seed: int = field(default=0, metadata={"help": "Random seed; the same seed gives the same Parquet bytes."})
    batch_size: int = field(default=64, metadata={"help": "Sequences per sampling/scoring batch."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, or auto (cuda when available)."})
    steps: str | None = field(default=None, metadata={"help": "Only checkpoints in START:STOP:STEP (STOP "
                                                              "inclusive), e.g. 0:200:20."})
    backend: str = field(default="hf", metadata={"help": "Sampling backend (hf; vllm and ray as extras)."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first N problems."})
    chat_template: bool = field(default=True, metadata={"help": "Apply the tokenizer's chat template when it "
                                                                 "has one (--no-chat-template to turn off)."})
    updates: bool = field(default=True, metadata={"help": "Also score each step's samples under the next "
                                                           "checkpoint, for Δlog-prob (--no-updates to skip)."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm backend: GPUs per vLLM engine "
                                                                    "(tensor parallelism)."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm backend: share of GPU memory the "
                                                                          "vLLM engine may take."})
    workers: int = field(default=2, metadata={"help": "ray backend: model-holding actors in the Ray Data pool "
                                                       "(one GPU each on cuda)."})


@dataclass
class CollectSummary:
    out: Path
    steps_written: list[int]
    steps_skipped: list[int]
    tokens_sampled: int
    tokens_scored: int
    seconds: float

    def __str__(self) -> str:
        rate = self.tokens_scored / self.seconds if self.seconds > 0 else 0.0
        return (f"collected {len(self.steps_written)} step(s) {self.steps_written}"
                f"{f', skipped {len(self.steps_skipped)} already complete' if self.steps_skipped else ''}; "
                f"{self.tokens_sampled:,} tokens sampled, {self.tokens_scored:,} tokens scored "
                f"({rate:,.0f} tokens/s); store: {self.out}")


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"--device {device!r}: expected cpu, cuda or auto")
    return device


def batch_seed(seed: int, step: int, batch: int) -> int:
    """Randomness of one sampling batch depends on (seed, step, batch) only, never on what ran before."""
    return (seed * 1_000_003 + step * 10_007 + batch) % (2**63)


def _settings(cfg: CollectConfig, eval_set: EvalSet) -> dict:
    return {"dataset": eval_set.name, "dataset_fingerprint": eval_set.fingerprint,
            "n_prompts": len(eval_set.problems), "samples_per_prompt": cfg.samples_per_prompt,
            "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
            "entropy_temperature": cfg.temperature, "seed": cfg.seed, "batch_size": cfg.batch_size,
            "chat_template": cfg.chat_template, "updates": cfg.updates, "backend": cfg.backend}


def prepare(cfg: CollectConfig) -> tuple[list[Checkpoint], EvalSet, SamplingParams, str, torch.dtype]:
    """Checked inputs of a sweep: ``(checkpoints, eval_set, params, device, dtype)``; bad input is a UserError."""
    checkpoints = select(discover(cfg.checkpoints), parse_steps(cfg.steps))
    eval_set = load_eval_set(cfg.dataset, prompt_field=cfg.prompt_field, answer_field=cfg.answer_field)
    if cfg.max_prompts is not None:
        eval_set = EvalSet(eval_set.name, eval_set.problems[: cfg.max_prompts], eval_set.verify,
                           eval_set.fingerprint + f":first{cfg.max_prompts}")
    if cfg.samples_per_prompt < 1 or cfg.max_new_tokens < 1 or cfg.batch_size < 1:
        raise UserError("--samples-per-prompt, --max-new-tokens and --batch-size must be at least 1")
    if cfg.temperature <= 0:
        raise UserError(f"--temperature {cfg.temperature}: must be > 0 (entropy of a greedy policy is undefined)")
    device = resolve_device(cfg.device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return checkpoints, eval_set, SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p), device, dtype


def collect(cfg: CollectConfig) -> CollectSummary:
    """Run the sweep described by ``cfg``; see the module docstring.

    A backend registered with a ``run_sweep(cfg)`` attribute (``ray``) is a whole executor: it runs the sweep
    its own way and writes the same store.  Any other backend is a sampler used in this process.
    """
    sampler = BACKENDS.get(cfg.backend)
    if hasattr(sampler, "run_sweep"):
        return sampler.run_sweep(cfg)
    checkpoints, eval_set, params, device, dtype = prepare(cfg)

    t0 = time.perf_counter()
    written, skipped, sampled, scored = [], [], 0, 0
    with StoreWriter(cfg.out, kind="sweep", settings=_settings(cfg, eval_set)) as store:
        store.update_info(checkpoints={str(c.step): str(c.path) for c in checkpoints}, device=device)
        bar = tqdm(checkpoints, desc="checkpoints", unit="ckpt", file=sys.stderr, disable=None)
        prev: Checkpoint | None = None
        for ckpt in bar:
            bar.set_postfix(step=ckpt.step)
            need_updates = cfg.updates and prev is not None and not store.is_complete(prev.step, ["updates"])
            need_step = not store.is_complete(ckpt.step)
            if not (need_updates or need_step):
                skipped.append(ckpt.step)
                prev = ckpt
                continue
            model, tokenizer = load_checkpoint(ckpt.path, device=device, dtype=dtype)
            prompt_ids = [encode_prompt(tokenizer, p.prompt, chat_template=cfg.chat_template)
                          for p in eval_set.problems]
            if not (store.root / "vocab.parquet").exists():
                store.write_table("vocab", vocab_table(tokenizer, model))
            if need_updates:
                scored += score_updates(store, prev.step, ckpt.step, model, prompt_ids, cfg)
            if need_step:
                n = sample_and_score_step(store, ckpt.step, model, tokenizer, prompt_ids, eval_set,
                                          sampler, params, cfg)
                sampled += n
                scored += n
                written.append(ckpt.step)
            else:
                skipped.append(ckpt.step)
            del model
            prev = ckpt
    return CollectSummary(Path(cfg.out), written, skipped, sampled, scored, time.perf_counter() - t0)


def vocab_table(tokenizer, model) -> dict:
    n = max(len(tokenizer), model.get_input_embeddings().weight.shape[0])
    ids = list(range(n))
    return {"token_id": ids, "token": tokenizer.batch_decode([[i] for i in ids])}


def step_jobs(n_prompts: int, cfg: CollectConfig) -> list[tuple[int, int]]:
    """The (prompt_id, sample_id) pairs of one step, in order; batch ``b`` is ``jobs[b·B:(b+1)·B]``."""
    return [(p, s) for p in range(n_prompts) for s in range(cfg.samples_per_prompt)]


def sample_jobs(sampler, model, tokenizer, prompt_ids, jobs, params: SamplingParams, cfg: CollectConfig,
                step: int, first_batch: int = 0) -> list:
    """Sample ``jobs`` (whole batches, the first being batch ``first_batch``); batch b draws its randomness
    from ``batch_seed(cfg.seed, step, b)`` alone.

    A sampler with a ``sample_step`` attribute (an engine such as vLLM, which wants every request at once and
    its own copy of the weights) gets all the jobs and the per-batch seeds in one call.
    """
    prompts = [prompt_ids[p] for p, _ in jobs]
    seeds = [batch_seed(cfg.seed, step, first_batch + i) for i in range(-(-len(jobs) // cfg.batch_size))]
    if hasattr(sampler, "sample_step"):
        return sampler.sample_step(model, tokenizer, prompts, params, batch_seeds=seeds,
                                   batch_size=cfg.batch_size, cfg=cfg)
    responses = []
    for i, lo in enumerate(tqdm(range(0, len(jobs), cfg.batch_size), desc=f"step {step}: sample", leave=False,
                                file=sys.stderr, disable=None)):
        responses += sampler(model, tokenizer, prompts[lo:lo + cfg.batch_size], params, seed=seeds[i])
    return responses


def step_tables(step: int, model, tokenizer, prompt_ids, eval_set: EvalSet, sampler, params: SamplingParams,
                cfg: CollectConfig, batches: range | None = None) -> tuple[dict, dict]:
    """Sample, score and grade the batches ``batches`` of one step (all of them by default): its tables."""
    jobs = step_jobs(len(eval_set.problems), cfg)
    first = 0
    if batches is not None:
        first = batches.start
        jobs = jobs[batches.start * cfg.batch_size: batches.stop * cfg.batch_size]
    responses = sample_jobs(sampler, model, tokenizer, prompt_ids, jobs, params, cfg, step, first)
    stats = score(model, [prompt_ids[p] for p, _ in jobs], [r.token_ids for r in responses],
                  temperature=cfg.temperature, batch_size=cfg.batch_size)
    return build_tables(step, jobs, responses, stats, eval_set, tokenizer, source="collect")


def sample_and_score_step(store: StoreWriter, step: int, model, tokenizer, prompt_ids, eval_set: EvalSet,
                          sampler, params: SamplingParams, cfg: CollectConfig) -> int:
    """Sample, score, grade and write one step; returns the number of response tokens."""
    tokens, samples = step_tables(step, model, tokenizer, prompt_ids, eval_set, sampler, params, cfg)
    store.write_step(step, tokens=tokens, samples=samples)
    return len(tokens["token_id"])


def build_tables(step, jobs, responses, stats, eval_set: EvalSet, tokenizer, *, source: str,
                 advantages=None, shaped_advantages=None) -> tuple[dict, dict]:
    """Assemble the ``tokens`` and ``samples`` columns of one step from responses and their scores."""
    lengths = np.array([len(r.token_ids) for r in responses], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n = int(offsets[-1])
    pid = np.repeat([p for p, _ in jobs], lengths)
    sid = np.repeat([s for _, s in jobs], lengths)
    position = np.arange(n) - np.repeat(offsets[:-1], lengths)
    tokens = {
        "step": np.full(n, step, np.int32), "prompt_id": pid.astype(np.int32), "sample_id": sid.astype(np.int32),
        "position": position.astype(np.int32),
        "rel_position": (position / np.repeat(np.maximum(lengths, 1), lengths)).astype(np.float32),
        "token_id": np.array([t for r in responses for t in r.token_ids], dtype=np.int32),
        "logprob": stats.logprob, "entropy": stats.entropy, "sum_p2": stats.sum_p2,
    }
    if advantages is not None:
        tokens["advantage"] = np.asarray(advantages, np.float32)
        tokens["shaped_advantage"] = np.asarray(shaped_advantages, np.float32)
    rows = {k: [] for k in ("prompt", "text", "answer", "gold", "format_ok", "correct", "reward",
                            "logppl", "mean_entropy")}
    for i, ((p, _), r) in enumerate(zip(jobs, responses)):
        problem = eval_set.problems[p]
        text = tokenizer.decode(r.token_ids, skip_special_tokens=True)
        verdict = eval_set.verify(text, problem.answer)
        lo, hi = offsets[i], offsets[i + 1]
        rows["prompt"].append(problem.prompt)
        rows["text"].append(text)
        rows["answer"].append(verdict.answer)
        rows["gold"].append(problem.answer)
        rows["format_ok"].append(verdict.format_ok)
        rows["correct"].append(verdict.correct)
        rows["reward"].append(verdict.reward)
        rows["logppl"].append(-float(stats.logprob[lo:hi].mean()) if hi > lo else 0.0)
        rows["mean_entropy"].append(float(stats.entropy[lo:hi].mean()) if hi > lo else 0.0)
    samples = {"step": np.full(len(jobs), step, np.int32), "prompt_id": [p for p, _ in jobs],
               "sample_id": [s for _, s in jobs], "length": lengths.astype(np.int32),
               "truncated": [r.truncated for r in responses], **rows, "source": [source] * len(jobs)}
    return tokens, samples


def score_updates(store: StoreWriter, step: int, next_step: int, model, prompt_ids, cfg: CollectConfig) -> int:
    """Teacher-force step ``step``'s stored responses under the checkpoint of ``next_step``."""
    frame = pl.read_parquet(partition_path(store.root, "tokens", step))
    table = updates_table(frame, step, next_step, model, prompt_ids, cfg)
    store.write_step(step, updates=table)
    return len(table["position"])


def updates_table(frame: pl.DataFrame, step: int, next_step: int, model, prompt_ids, cfg: CollectConfig) -> dict:
    """``updates`` columns for the responses in ``frame`` (tokens rows of ``step``), scored by ``model``."""
    frame = frame.select("prompt_id", "sample_id", "position", "token_id").sort("prompt_id", "sample_id", "position")
    groups = frame.group_by(["prompt_id", "sample_id"], maintain_order=True).agg("token_id")
    keys = list(zip(groups["prompt_id"].to_list(), groups["sample_id"].to_list()))
    responses = groups["token_id"].to_list()
    stats = score(model, [prompt_ids[p] for p, _ in keys], responses, temperature=cfg.temperature,
                  batch_size=cfg.batch_size)
    return {
        "step": np.full(len(frame), step, np.int32), "next_step": np.full(len(frame), next_step, np.int32),
        "prompt_id": frame["prompt_id"], "sample_id": frame["sample_id"], "position": frame["position"],
        "logprob_next": stats.logprob,
    }


# Optional backends register themselves in BACKENDS here ("vllm": a sampler, "ray": an executor); neither
# module imports vllm or ray until the backend is used.
from entropy_lens.capture import ray_sweep as _ray_sweep, vllm_backend as _vllm_backend  # noqa: E402,F401
