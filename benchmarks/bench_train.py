"""Seconds per RL step of the embedded trainer, where they go, and (``--vs-trl``) against TRL's GRPOTrainer.

    python benchmarks/bench_train.py                                   # uses data/runs/demo/baseline/checkpoints/step_0
    python benchmarks/bench_train.py --checkpoint RUN/checkpoints/step_0 --repeats 5 --minibatches 2
    python benchmarks/bench_train.py --checkpoint RUN/checkpoints/step_0 --vs-trl --repeats 7 --minibatches 2

Without ``--vs-trl``: sampled tokens/s of one generation round (``--sampler hf`` for transformers'
``generate``, the default ``static`` for ``capture.sampling.sample_with_stats`` with the decoder it picks,
``hf-cache`` or ``qwen2`` for a named decoder), update tokens/s, and whole
RL steps (dynamic sampling, advantages, update; no store writes) with their split into sample / score /
update / other.

With ``--vs-trl`` (TRL from the ``dev`` extra): the embedded step and a TRL ``GRPOTrainer`` step on the same
work, interleaved in one process so that both see the same load — the same checkpoint, 32 prompts × 8
samples, ≤ 64 new tokens at T = 1, the same arith exact-match reward plus DAPO's overlong penalty as a TRL
reward function; TRL on-policy (``num_iterations=1``), ``loss_type="dapo"``, ``beta=0``, ε 0.2 / 0.28, fp32,
no gradient checkpointing (TRL's defaults are bf16 and checkpointing: both slower on CPU), HF ``generate``
(``use_vllm=False``), no logging, eval or saving.  ``--minibatches M`` makes TRL take the same M optimizer
steps per generation batch (``per_device_train_batch_size = 256 / M``, ``steps_per_generation = M``), and a
TRL "step" below is those M optimizer steps.  Both learning rates are 0, so both models stay at the
checkpoint and every repeat is the same work.  The first ``--warmup`` pairs are dropped; the ratio printed
is the median over pairs of (embedded step / TRL step), each pair measured back to back.

Both print the embedded step's fp32 matmul floor: the FLOPs of its linear layers on the tokens it sampled
and updated (counted during the step), at the fp32 matmul rate measured on the model's own MLP shape in the same run — a
lower bound on an fp32 step of the same work at that rate (attention and elementwise ops left out; on a shared
VM the rate itself moves, 70–160 GFLOP/s on one thread of the 2-core box).  With
``--vs-trl`` TRL's step is split into ``generate`` (HF ``generate``), rewards and π_old (TRL's extra
log-prob pass when M > 1) and the update (its M optimizer steps).

With no checkpoint on disk it benchmarks a randomly initialised tiny model, whose responses run to
max_new_tokens and never answer right: it then counts even-length responses as correct so that dynamic
sampling keeps groups and every step updates (the numbers are then an upper bound on step time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entropy_lens.capture.sampling import SamplingParams, encode_prompt, sample_hf, sample_with_stats  # noqa: E402
from entropy_lens.models import build_char_tokenizer, build_tiny_model, load_checkpoint  # noqa: E402
from entropy_lens.tasks import Verdict, load_eval_set  # noqa: E402
from entropy_lens.tasks.arith import ALPHABET  # noqa: E402
from entropy_lens.train import core, grpo  # noqa: E402
from entropy_lens.train.config import TrainConfig  # noqa: E402

PARTS = ("seconds_sample", "seconds_score", "seconds_update")


def load(checkpoint: str):
    if Path(checkpoint).is_dir():
        model, tok = load_checkpoint(checkpoint)
        return model, tok, checkpoint
    tok = build_char_tokenizer(ALPHABET)
    model = build_tiny_model(tok).eval()
    grpo.verify = lambda response, gold: Verdict(None, len(response) % 2 == 0, len(response) % 2 == 0, 0.0)
    return model, tok, "random init (no checkpoint found; even-length responses count as correct)"


def timed_step(*args) -> dict:
    """``grpo.rl_step`` with its wall time as ``seconds_total`` (rewards, packing etc. are the rest)."""
    t0 = time.perf_counter()
    row = grpo.rl_step(*args)
    row["seconds_total"] = time.perf_counter() - t0
    return row


def previous_mixed(rows: list[dict]) -> float | None:
    return rows[-1]["mixed_fraction"] if rows else None


def step_seconds(row: dict) -> float:
    return row["seconds_total"]


def split(rows: list[dict]) -> str:
    parts = {k.removeprefix("seconds_"): statistics.median(r.get(k, 0.0) for r in rows) for k in PARTS}
    parts["other"] = statistics.median(step_seconds(r) - sum(r.get(k, 0.0) for k in PARTS) for r in rows)
    return (", ".join(f"{k} {v:.2f}" for k, v in parts.items())
            + f"; generation rounds {statistics.mean(r['gen_rounds'] for r in rows):.1f}, prompts sampled "
            + f"{statistics.mean(r['prompts_sampled'] for r in rows):.0f}")


class StepTokens:
    """Counts, during ``grpo.rl_step``, the tokens its arithmetic runs on: the sampled tokens (every row of every
    generation round, prompts prefilled once each) and the update's padded tokens (prompt + response, per bucket)."""

    def __init__(self):
        self.sampled = self.prefilled = self.updated = 0
        self._sample, self._buckets = grpo.sample_with_stats, grpo.length_buckets

    def __enter__(self):
        def sample(model, tokenizer, prompt_ids, *a, **k):
            responses, scores = self._sample(model, tokenizer, prompt_ids, *a, **k)
            self.sampled += sum(len(r.token_ids) for r in responses)
            self.prefilled += sum(len(p) for p in {tuple(p) for p in prompt_ids})
            return responses, scores

        def buckets(lengths, max_tokens):
            out = self._buckets(lengths, max_tokens)
            self.updated += sum(len(b) * max(1, int(lengths[b].max())) for b in out)
            return out

        grpo.sample_with_stats, grpo.length_buckets = sample, buckets
        return self

    def __exit__(self, *exc):
        grpo.sample_with_stats, grpo.length_buckets = self._sample, self._buckets


def matmul_gflops(model, repeats: int = 30) -> float:
    """fp32 GFLOP/s of this box, at the torch threads set, on the model's own MLP matmul shape
    ([2048, hidden] @ [hidden, intermediate], forward): the rate its linear layers can reach at best."""
    c = model.config
    a, w = torch.randn(2048, c.hidden_size), torch.randn(c.intermediate_size, c.hidden_size)
    for _ in range(3):
        a @ w.T
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ w.T
    return 2 * 2048 * c.hidden_size * c.intermediate_size * repeats / (time.perf_counter() - t0) / 1e9


def floor_line(model, counts: list["StepTokens"], rate: float) -> str:
    """The step's fp32 matmul floor: its linear layers' FLOPs (2 per parameter per token forward, 6 forward +
    backward; attention and every elementwise op left out) at the measured matmul rate: no fp32 step of this
    work runs faster at that rate."""
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    # every weight but the embedding (a lookup), and the lm_head once even when it is the embedding (tied)
    params = sum(p.numel() for p in model.parameters() if p is not embed) + (head.numel() if head is embed else 0)
    sample = statistics.median(2 * params * (c.sampled + c.prefilled) for c in counts) / rate / 1e9
    update = statistics.median(6 * params * c.updated for c in counts) / rate / 1e9
    return (f"fp32 matmul floor of the embedded step: sample {sample:.2f} s + update {update:.2f} s = "
            f"{sample + update:.2f} s ({statistics.median(c.sampled for c in counts):,.0f} sampled and "
            f"{statistics.median(c.updated for c in counts):,.0f} update tokens a step, {params:,} matmul parameters, "
            f"{rate:.0f} GFLOP/s measured on [2048 x {model.config.hidden_size}] @ "
            f"[{model.config.hidden_size} x {model.config.intermediate_size}])")


def standalone(args, model, tok, cfg, held_out) -> None:
    # 1. sampling: one generation round of the default batch
    problems = grpo.training_problems(0, 0, cfg.prompts_per_step, cfg, held_out)
    prompts = [encode_prompt(tok, p.prompt) for p in problems for _ in range(cfg.group_size)]
    params = SamplingParams(cfg.max_new_tokens, cfg.temperature, 1.0)
    decoder = None if args.sampler == "static" else args.sampler
    sample = ((lambda s: sample_hf(model, tok, prompts, params, seed=s)) if args.sampler == "hf" else
              (lambda s: sample_with_stats(model, tok, prompts, params, seed=s, decoder=decoder)[0]))
    rates, batch = [], None
    for r in range(args.repeats):
        t0 = time.perf_counter()
        batch = sample(r)
        rates.append(sum(len(x.token_ids) for x in batch) / (time.perf_counter() - t0))
    print(f"sampling ({args.sampler}): {statistics.median(rates):,.0f} tokens/s (median of {args.repeats}; "
          f"mean response {np.mean([len(x.token_ids) for x in batch]):.1f} tokens)")

    # 2. the update alone: `minibatches` clipped-surrogate AdamW steps over that batch
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, fused=True)  # lr 0: the model stays as loaded
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ids, targets, mask = grpo.pack(prompts, [x.token_ids for x in batch], tok.pad_token_id, "cpu")
    adv = torch.randn(len(batch), 1) * mask
    n_tok = int(mask.sum())
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        grpo.update(model, opt, sched, ids, targets, mask, torch.zeros_like(mask), adv, cfg, "cpu")
        rates.append(n_tok / (time.perf_counter() - t0))
    print(f"update: {statistics.median(rates):,.0f} response tokens/s (forward + backward + AdamW, "
          f"{cfg.minibatches} mini-batches)")

    # 3. whole RL steps (dynamic sampling, advantages, update; no store writes), lr 0
    rows, counts = [], []
    for s in range(args.repeats):  # each step's first round sized by the one before, as in grpo.train
        with StepTokens() as tokens:
            rows.append(timed_step(model, tok, opt, sched, s, cfg, (0, 0), held_out, None, previous_mixed(rows)))
        counts.append(tokens)
    print(f"RL step: {statistics.median(step_seconds(r) for r in rows):.2f} s (median of {args.repeats}; "
          + split(rows) + ")")
    print(floor_line(model, counts, matmul_gflops(model)))


def _timed(fn, clock: dict, part: str):
    """``fn`` that adds its wall time to ``clock[part]``."""
    def wrapped(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            clock[part] += time.perf_counter() - t0
    return wrapped


def vs_trl(args, model, tok, cfg, held_out) -> None:
    """Interleave: after every M TRL optimizer steps (one generation batch), one embedded RL step."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from entropy_lens.models import load_checkpoint as _load

    n_prompts, group, m = cfg.prompts_per_step, cfg.group_size, cfg.minibatches
    completions = n_prompts * group
    if completions % m:
        raise SystemExit(f"--minibatches {m} must divide {completions}")
    pairs = args.warmup + args.repeats
    # TRL's generation batch k holds the prompts that the embedded step k samples first (its round 0 draws
    # these 32 and a few more, then keeps the first 32 groups with mixed correctness).
    problems = [p for s in range(pairs) for p in grpo.training_problems(s, 0, n_prompts, cfg, held_out)]
    dataset = Dataset.from_dict({"prompt": [p.prompt for p in problems], "answer": [p.answer for p in problems]})

    def arith_reward(completions, answer, completion_ids, **_):
        lengths = torch.tensor([len(c) for c in completion_ids])
        correct = torch.tensor([grpo.verify(c, a).correct for c, a in zip(completions, answer)])
        return (torch.where(correct, 1.0, -1.0) + core.overlong_penalty(
            lengths, cfg.max_new_tokens, cfg.overlong_buffer, cfg.overlong_factor)).tolist()

    trl_model = _load(args.checkpoint)[0] if Path(args.checkpoint).is_dir() else build_tiny_model(tok)
    trl_model.generation_config.eos_token_id = tok.eos_token_id
    trl_model.generation_config.pad_token_id = tok.pad_token_id
    targs = GRPOConfig(
        output_dir=os.path.join(args.trl_dir, "trl"), use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, learning_rate=0.0, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip, adam_beta1=0.9, adam_beta2=0.999,
        per_device_train_batch_size=completions // m, steps_per_generation=m, gradient_accumulation_steps=1,
        num_generations=group, num_iterations=1, max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature, top_p=1.0, top_k=0, repetition_penalty=1.0, use_vllm=False,
        loss_type="dapo", beta=0.0, epsilon=cfg.eps_low, epsilon_high=cfg.eps_high, scale_rewards="group",
        max_steps=pairs * m, logging_strategy="no", report_to="none", save_strategy="no", eval_strategy="no",
        disable_tqdm=True, log_completions=False, shuffle_dataset=False, dataloader_num_workers=0, seed=cfg.seed,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=cfg.weight_decay, fused=True)  # as grpo.train
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ours, trl_secs = [], []
    clock = {"since": 0.0}

    class Interleave(TrainerCallback):
        def on_step_end(self, _args, state, control, **kw):
            if state.global_step % m:
                return
            trl_secs.append(time.perf_counter() - clock["since"])  # M TRL optimizer steps, one generation
            trl_parts.append(dict(trl_clock))
            trl_clock.update(generate=0.0, prepare=0.0)
            k = len(ours)
            with StepTokens() as tokens:
                row = timed_step(model, tok, opt, sched, k, cfg, (0, 0), held_out, None, previous_mixed(ours))
            ours.append(row)
            counts.append(tokens)
            print(f"  pair {k}: entropy-lens {step_seconds(row):.2f} s ({split([row])}), TRL {trl_secs[-1]:.2f} s"
                  + ("  [warm-up]" if k < args.warmup else ""), flush=True)
            clock["since"] = time.perf_counter()

    trainer = GRPOTrainer(model=trl_model, reward_funcs=arith_reward, args=targs, train_dataset=dataset,
                          processing_class=tok, callbacks=[Interleave()])
    # TRL's split: `_generate` (HF generate) inside `_generate_and_score_completions` (+ rewards, advantages and,
    # with M > 1 optimizer steps per generation, the π_old log-prob pass); the rest of the M steps is the update.
    trl_clock, trl_parts, counts = {"generate": 0.0, "prepare": 0.0}, [], []
    for name, part in (("_generate", "generate"), ("_generate_and_score_completions", "prepare")):
        setattr(trainer, name, _timed(getattr(trainer, name), trl_clock, part))
    clock["since"] = time.perf_counter()
    trainer.train()
    ours, trl_secs, trl_parts = ours[args.warmup:], trl_secs[args.warmup:], trl_parts[args.warmup:]
    e = [step_seconds(r) for r in ours]
    ratios = [a / b for a, b in zip(e, trl_secs)]
    gen = statistics.median(p["generate"] for p in trl_parts)
    prep = statistics.median(p["prepare"] - p["generate"] for p in trl_parts)
    rest = statistics.median(t - p["prepare"] for t, p in zip(trl_secs, trl_parts))
    print(f"entropy-lens RL step: {statistics.median(e):.2f} s (median of {len(e)}; {split(ours)})")
    print(floor_line(model, counts[args.warmup:], matmul_gflops(model)))
    print(f"TRL GRPOTrainer step ({m} optimizer step{'s' if m > 1 else ''} per generation batch): "
          f"{statistics.median(trl_secs):.2f} s (median of {len(trl_secs)}; generate {gen:.2f}, rewards and π_old "
          f"{prep:.2f}, update {rest:.2f})")
    print(f"ratio entropy-lens / TRL: {statistics.median(ratios):.3f} (median of {len(ratios)} paired runs; "
          f"range {min(ratios):.3f}–{max(ratios):.3f}); ratio of medians "
          f"{statistics.median(e) / statistics.median(trl_secs):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="data/runs/demo/baseline/checkpoints/step_0")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="--vs-trl: leading pairs left out of the medians")
    ap.add_argument("--minibatches", type=int, default=TrainConfig.minibatches,
                    help="optimizer steps per RL step (and, with --vs-trl, per TRL generation batch)")
    ap.add_argument("--sampler", choices=("static", "hf-cache", "qwen2", "hf"), default="static",
                    help="sampler timed in the sampling-only measurement: static (the trainer's: the decoder picked "
                         "for the model), a named decoder of capture.decoders, or hf (transformers' generate)")
    ap.add_argument("--threads", type=int, default=TrainConfig.threads,
                    help="torch threads; 0 = $OMP_NUM_THREADS if set, else every core (the trainer's default)")
    ap.add_argument("--vs-trl", action="store_true", help="interleave the embedded step with TRL's GRPOTrainer")
    ap.add_argument("--trl-dir", default="/tmp/entropy-lens-bench-trl", help="--vs-trl: TRL's output_dir (unused)")
    args = ap.parse_args()
    torch.set_num_threads(grpo.resolve_threads(args.threads))
    # The realized-change scoring after each update (on by default, ~15% of a step) is measurement TRL's step
    # does not do; leave it out so both sides do the same work.
    cfg = TrainConfig(threads=args.threads, minibatches=args.minibatches, score_after_update=False)
    model, tok, what = load(args.checkpoint)
    held_out = {p.prompt for p in load_eval_set("arith").problems}
    print(f"model: {what}; {sum(p.numel() for p in model.parameters()):,} parameters; "
          f"torch threads {torch.get_num_threads()}; batch {cfg.prompts_per_step} prompts x {cfg.group_size}, "
          f"<= {cfg.max_new_tokens} new tokens, {cfg.minibatches} mini-batch(es); load average "
          f"{os.getloadavg()[0]:.2f}")
    (vs_trl if args.vs_trl else standalone)(args, model, tok, cfg, held_out)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
