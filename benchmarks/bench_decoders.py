"""Seconds per sampling round of each registered decoder of ``capture.decoders``, interleaved in one process.

    python benchmarks/bench_decoders.py [--checkpoint RUN/checkpoints/step_0] [--threads 1] [--repeats 5]

One round is the embedded trainer's first dynamic-sampling round (``--prompts`` prompts × 8 samples, ≤ 64 new
tokens at T = 1) through ``sample_with_stats`` with each decoder in turn, so both see the same load; it prints
the median seconds of each, their ratio, and how far the recorded statistics are from a teacher-forced
``scoring.score`` of the same tokens (the decoders' naive twin).  Without a checkpoint on disk it uses a randomly
initialised tiny model.
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

from entropy_lens.capture.decoders import DECODERS, pick_decoder  # noqa: E402
from entropy_lens.capture.sampling import SamplingParams, encode_prompt, sample_with_stats  # noqa: E402
from entropy_lens.capture.scoring import score  # noqa: E402
from entropy_lens.models import build_char_tokenizer, build_tiny_model, load_checkpoint  # noqa: E402
from entropy_lens.tasks import load_eval_set  # noqa: E402
from entropy_lens.tasks.arith import ALPHABET  # noqa: E402
from entropy_lens.train import grpo  # noqa: E402
from entropy_lens.train.config import TrainConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="data/runs/demo/baseline/checkpoints/step_0")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--repeats", type=int, default=5, help="rounds per decoder (interleaved)")
    ap.add_argument("--prompts", type=int, default=46, help="prompts in the round (× 8 samples each)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if Path(args.checkpoint).is_dir():
        model, tok = load_checkpoint(args.checkpoint)
    else:
        tok = build_char_tokenizer(ALPHABET)
        model = build_tiny_model(tok).eval()
    cfg = TrainConfig()
    held_out = {p.prompt for p in load_eval_set("arith").problems}
    problems = grpo.training_problems(0, 0, args.prompts, cfg, held_out)
    prompts = [encode_prompt(tok, p.prompt) for p in problems for _ in range(cfg.group_size)]
    params = SamplingParams(cfg.max_new_tokens, cfg.temperature, 1.0)
    names = [n for n in DECODERS.names() if DECODERS.get(n).fits(model)]
    print(f"{len(prompts)} rows, torch threads {torch.get_num_threads()}, decoders {names} "
          f"(picked for this model: {pick_decoder(model)})")
    seconds = {n: [] for n in names}
    for r in range(args.repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            sample_with_stats(model, tok, prompts, params, seed=r, decoder=n)
            seconds[n].append(time.perf_counter() - t0)
    for n in names:
        responses, stats = sample_with_stats(model, tok, prompts[:64], params, seed=0, decoder=n)
        ref = score(model, prompts[:64], [x.token_ids for x in responses])
        dev = max(float(np.abs(getattr(stats, k) - getattr(ref, k)).max()) for k in ("logprob", "entropy"))
        print(f"  {n:<10} {statistics.median(seconds[n]):.3f} s a round (median of {args.repeats}); "
              f"max |Δ| vs teacher-forced scoring {dev:.1e}")
    if len(names) == 2:
        a, b = names
        print(f"  ratio {a} / {b}: {statistics.median(x / y for x, y in zip(seconds[a], seconds[b])):.3f} "
              f"(median of paired rounds)")


if __name__ == "__main__":
    main()
