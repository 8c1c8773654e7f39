"""The checkpoint sweep behind ``entropy-lens collect``.

For each checkpoint, in step order:

1. if the previous checkpoint's samples have no ``updates`` yet, teacher-force them under this checkpoint
   (``logprob_next`` and ``entropy_next`` per token, from one pass: Δlog-prob and realized ΔH, paper-notes §1.7);
2. unless this step is already in the store, sample ``samples_per_prompt`` responses per eval problem, score
   every response token (exact entropy, log-prob, Σp², Σp² log p, varentropy: recorded while sampling by the
   default ``static`` sampler, from the logits each token was drawn from; teacher-forced after sampling
   otherwise — the same numbers to float rounding), grade the answers, and write the step's ``tokens`` and
   ``samples`` partitions.

Every partition is written atomically and listed in the manifest only when complete, and every batch draws
its randomness from ``(seed, step, batch index)`` alone, so a killed sweep re-run gives exactly the rows of
an uninterrupted one.

``--backend`` picks the executor and the sampler (:mod:`entropy_lens.capture.backends`): :func:`run_local`
is the ``local`` executor; the ``ray`` executor (:mod:`entropy_lens.capture.ray_sweep`) runs the same steps,
built from the same functions here, as a Ray Data pipeline.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from tqdm.auto import tqdm

from entropy_lens.capture.backends import BACKENDS, EXECUTORS, SAMPLERS, EngineOptions, Sampler
from entropy_lens.capture.config import CollectConfig, SamplingRecord
from entropy_lens.capture.sampling import SamplingParams, batch_seed, encode_prompt
from entropy_lens.capture.scoring import score
from entropy_lens.capture.tables import (
    decode_texts,
    layout_tables,
    step_jobs,
    updates_table,
    verifier_columns,
    vocab_table,
)
from entropy_lens.checkpoints import Checkpoint, discover, parse_steps, select
from entropy_lens.errors import UserError
from entropy_lens.models import default_dtype, load_checkpoint, resolve_device
from entropy_lens.store import StoreWriter, partition_path
from entropy_lens.tasks import EvalSet, load_eval_set


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


def settings(cfg: CollectConfig, eval_set: EvalSet, sampler: str) -> dict:
    """The manifest settings of a sweep: what must match for a re-run to resume it.  ``backend`` is the
    sampler, which decides the rows; the executor does not, so hf and ray sweeps resume each other."""
    record = SamplingRecord(float(cfg.temperature), float(cfg.top_p), cfg.max_new_tokens, cfg.chat_template)
    return {"dataset": eval_set.name, "dataset_fingerprint": eval_set.fingerprint,
            "n_prompts": len(eval_set.problems), "samples_per_prompt": cfg.samples_per_prompt,
            "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
            "entropy_temperature": cfg.temperature, "seed": cfg.seed, "batch_size": cfg.batch_size,
            "chat_template": cfg.chat_template, "updates": cfg.updates, "backend": sampler,
            "sampling": record.to_settings()}


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
    return checkpoints, eval_set, SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p), device, \
        default_dtype(device)


def make_sampler(cfg: CollectConfig, name: str) -> Sampler:
    """The sampler registered as ``name``, set up with the sweep's engine flags."""
    return SAMPLERS.get(name)(EngineOptions(cfg.tensor_parallel_size, cfg.gpu_memory_utilization, cfg.seed))


def collect(cfg: CollectConfig) -> CollectSummary:
    """Run the sweep described by ``cfg`` with the executor and sampler of ``--backend``."""
    backend = BACKENDS.get(cfg.backend)
    return EXECUTORS.get(backend.executor)(cfg, backend.sampler)


def run_local(cfg: CollectConfig, sampler_name: str) -> CollectSummary:
    """The ``local`` executor: the sweep of the module docstring, in this process, one checkpoint at a time."""
    checkpoints, eval_set, params, device, dtype = prepare(cfg)
    sampler = make_sampler(cfg, sampler_name)
    t0 = time.perf_counter()
    written, skipped, sampled, scored = [], [], 0, 0
    with StoreWriter(cfg.out, kind="sweep", settings=settings(cfg, eval_set, sampler_name)) as store:
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


def step_tables(step: int, model, tokenizer, prompt_ids, eval_set: EvalSet, sampler: Sampler,
                params: SamplingParams, cfg: CollectConfig, batches: range | None = None) -> tuple[dict, dict]:
    """Sample, score and grade the batches ``batches`` of one step (all of them by default): its tables.

    Batch ``b`` is ``jobs[b·B:(b+1)·B]`` of :func:`~entropy_lens.capture.tables.step_jobs` and draws its
    randomness from ``batch_seed(seed, step, b)`` alone, so any subset of batches gives the same rows as a
    whole step.
    """
    jobs = step_jobs(len(eval_set.problems), cfg.samples_per_prompt)
    first = 0
    if batches is not None:
        first = batches.start
        jobs = jobs[batches.start * cfg.batch_size: batches.stop * cfg.batch_size]
    seeds = [batch_seed(cfg.seed, step, first + i) for i in range(-(-len(jobs) // cfg.batch_size))]
    responses, stats = sample_scored(sampler, model, tokenizer, [prompt_ids[p] for p, _ in jobs], params, seeds, cfg)
    texts = decode_texts(tokenizer, responses)
    tokens, samples = layout_tables(step, jobs, responses, stats, [p.prompt for p in eval_set.problems], texts,
                                    source="collect")
    samples.update(verifier_columns(eval_set.verify, eval_set.problems, jobs, texts))
    return tokens, samples


def sample_scored(sampler: Sampler, model, tokenizer, prompts, params: SamplingParams, seeds, cfg: CollectConfig):
    """``(responses, scores)`` of one step's batches: the scores the sampler recorded while sampling when it
    offers them (``sample_scored``: the static sampler, T > 0; the numbers of the teacher-forced pass to float
    rounding), else the teacher-forced pass (:func:`~entropy_lens.capture.scoring.score`)."""
    if params.temperature > 0 and hasattr(sampler, "sample_scored"):
        return sampler.sample_scored(model, tokenizer, prompts, params, batch_seeds=seeds, batch_size=cfg.batch_size)
    responses = sampler(model, tokenizer, prompts, params, batch_seeds=seeds, batch_size=cfg.batch_size)
    return responses, score(model, prompts, [r.token_ids for r in responses], temperature=cfg.temperature,
                            batch_size=cfg.batch_size)


def sample_and_score_step(store: StoreWriter, step: int, model, tokenizer, prompt_ids, eval_set: EvalSet,
                          sampler: Sampler, params: SamplingParams, cfg: CollectConfig) -> int:
    """Sample, score, grade and write one step; returns the number of response tokens."""
    tokens, samples = step_tables(step, model, tokenizer, prompt_ids, eval_set, sampler, params, cfg)
    store.write_step(step, tokens=tokens, samples=samples)
    return len(tokens["token_id"])


def score_updates(store: StoreWriter, step: int, next_step: int, model, prompt_ids, cfg: CollectConfig) -> int:
    """Teacher-force step ``step``'s stored responses under the checkpoint of ``next_step``."""
    frame = pl.read_parquet(partition_path(store.root, "tokens", step))
    table = updates_table(frame, step, next_step, model, prompt_ids, temperature=cfg.temperature,
                          batch_size=cfg.batch_size)
    store.write_step(step, updates=table)
    return len(table["position"])
