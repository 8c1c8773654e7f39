"""Throughput of the embedded trainer's default config: sampled tokens/s, update tokens/s, seconds per RL step.

    python benchmarks/bench_train.py                                   # uses data/runs/demo/baseline/checkpoints/step_0
    python benchmarks/bench_train.py --checkpoint RUN/checkpoints/step_100 --repeats 5

With no checkpoint on disk it benchmarks a randomly initialised tiny model, whose responses run to
max_new_tokens and never answer right: it then counts even-length responses as correct so that dynamic
sampling keeps groups and every step updates (the numbers are then an upper bound on step time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entropy_lens.capture.sampling import SamplingParams, encode_prompt, sample_hf  # noqa: E402
from entropy_lens.models import build_char_tokenizer, build_tiny_model, load_checkpoint  # noqa: E402
from entropy_lens.tasks import Verdict, load_eval_set  # noqa: E402
from entropy_lens.tasks.arith import ALPHABET  # noqa: E402
from entropy_lens.train import grpo  # noqa: E402
from entropy_lens.train.config import TrainConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="data/runs/demo/baseline/checkpoints/step_0")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=TrainConfig.threads,
                    help="torch threads; 0 = $OMP_NUM_THREADS if set, else every core (the trainer's default)")
    args = ap.parse_args()
    torch.set_num_threads(grpo.resolve_threads(args.threads))
    cfg = TrainConfig(threads=args.threads)
    if Path(args.checkpoint).is_dir():
        model, tok = load_checkpoint(args.checkpoint)
        what = args.checkpoint
    else:
        tok = build_char_tokenizer(ALPHABET)
        model = build_tiny_model(tok).eval()
        grpo.verify = lambda response, gold: Verdict(None, len(response) % 2 == 0, len(response) % 2 == 0, 0.0)
        what = "random init (no checkpoint found; even-length responses count as correct)"
    held_out = {p.prompt for p in load_eval_set("arith").problems}
    print(f"model: {what}; {sum(p.numel() for p in model.parameters()):,} parameters; "
          f"torch threads {torch.get_num_threads()}; batch {cfg.prompts_per_step} prompts x {cfg.group_size}")

    # 1. sampling: one generation round of the default batch
    problems = grpo.training_problems(0, 0, cfg.prompts_per_step, cfg, held_out)
    prompts = [encode_prompt(tok, p.prompt) for p in problems for _ in range(cfg.group_size)]
    params = SamplingParams(cfg.max_new_tokens, cfg.temperature, 1.0)
    rates, batch = [], None
    for r in range(args.repeats):
        t0 = time.perf_counter()
        batch = sample_hf(model, tok, prompts, params, seed=r)
        rates.append(sum(len(x.token_ids) for x in batch) / (time.perf_counter() - t0))
    print(f"sampling: {statistics.median(rates):,.0f} tokens/s (median of {args.repeats}; "
          f"mean response {np.mean([len(x.token_ids) for x in batch]):.1f} tokens)")

    # 2. the update alone: `minibatches` clipped-surrogate AdamW steps over that batch
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: the model stays as loaded
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

    # 3. whole RL steps (dynamic sampling, scoring, advantages, update; no store writes), lr 0
    rows = [grpo.rl_step(model, tok, opt, sched, s, cfg, (0, 0), held_out, None) for s in range(args.repeats)]
    secs = [sum(v for k, v in r.items() if k.startswith("seconds_")) for r in rows]
    parts = {k: statistics.median(r.get(k, 0.0) for r in rows)
             for k in ("seconds_sample", "seconds_score", "seconds_update")}
    print(f"RL step: {statistics.median(secs):.2f} s (median of {args.repeats}; "
          + ", ".join(f"{k.removeprefix('seconds_')} {v:.2f}" for k, v in parts.items())
          + f"; generation rounds {statistics.mean(r['gen_rounds'] for r in rows):.1f})")


if __name__ == "__main__":
    main()
