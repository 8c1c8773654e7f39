"""What ``LensGRPOTrainer``'s live capture costs a TRL ``GRPOTrainer`` step, side by side (target: ≤ 1.15×).

    python benchmarks/bench_trl_capture.py                    # uses data/runs/demo/baseline/checkpoints/step_0
    python benchmarks/bench_trl_capture.py --checkpoint RUN/checkpoints/step_0 --repeats 7 --shaping position

One TRL run, in one process, whose generation batches alternate between capture on (``lens_store`` written:
the no-grad capture forward, the layout and the Parquet writes of the step; with ``--shaping``, the shaper
too) and capture off (TRL's own ``_generate_and_score_completions`` and ``log``, nothing else), so that each
pair of consecutive batches sees the same load, the same model and the same kind of prompts.  A "step" is one
generation batch and its ``--minibatches`` optimizer steps, timed from one ``on_step_end`` to the next.  The
work is that of ``bench_train.py --vs-trl``: 32 prompts × 8 samples, ≤ 64 new tokens at T = 1, the arith
exact-match reward, ``loss_type="dapo"``, ``beta=0``, fp32, no gradient checkpointing, HF ``generate``, learning
rate 0 (the model stays at the checkpoint, so every step is the same work).  The first ``--warmup`` pairs are
dropped; the figure printed is the median over pairs of (capture-on step / capture-off step).

Without a checkpoint on disk a randomly initialised tiny model is used (responses run to max_new_tokens;
even-length responses count as correct so that groups have mixed rewards).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entropy_lens.models import build_char_tokenizer, build_tiny_model, load_checkpoint  # noqa: E402
from entropy_lens.tasks import load_eval_set  # noqa: E402
from entropy_lens.tasks.arith import ALPHABET  # noqa: E402
from entropy_lens.train import grpo  # noqa: E402
from entropy_lens.train.config import TrainConfig  # noqa: E402


def load(checkpoint: str):
    """(model, tokenizer, description, verify): the checkpoint, or a random tiny model graded by parity."""
    if Path(checkpoint).is_dir():
        model, tok = load_checkpoint(checkpoint)
        return model, tok, checkpoint, lambda c, a: grpo.verify(c, a).correct
    tok = build_char_tokenizer(ALPHABET)
    return (build_tiny_model(tok), tok, "random init (no checkpoint found; even-length responses count as correct)",
            lambda c, a: len(c) % 2 == 0)


def make_trainer(args, model, tok, verify, store: Path):
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from entropy_lens.integrations.trl import LensGRPOTrainer

    cfg = TrainConfig()
    n, g, m = args.prompts, args.group, args.minibatches
    pairs = args.warmup + args.repeats
    held_out = {p.prompt for p in load_eval_set("arith").problems}
    problems = [p for s in range(2 * pairs) for p in grpo.training_problems(s, 0, n, cfg, held_out)]
    dataset = Dataset.from_dict({"prompt": [p.prompt for p in problems], "answer": [p.answer for p in problems]})

    def arith_reward(completions, answer, **_):
        return [1.0 if verify(c, a) else -1.0 for c, a in zip(completions, answer)]

    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    targs = GRPOConfig(
        output_dir=str(store.parent / "trl"), use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        learning_rate=0.0, lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=n * g // m,
        steps_per_generation=m, gradient_accumulation_steps=1, num_generations=g, num_iterations=1,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, use_vllm=False,
        loss_type="dapo", beta=0.0, epsilon=cfg.eps_low, epsilon_high=cfg.eps_high, max_steps=2 * pairs * m,
        logging_strategy="steps", logging_steps=m, report_to="none", save_strategy="no", eval_strategy="no",
        disable_tqdm=True, log_completions=False, shuffle_dataset=False, dataloader_num_workers=0, seed=0)
    times: dict[str, list[float]] = {"on": [], "off": []}
    clock = {"since": 0.0}

    class Alternating(LensGRPOTrainer):
        """Capture on even generation batches, TRL's own path on odd ones."""

        capture_on = False

        def _generate_and_score_completions(self, inputs):
            self.capture_on = self.state.global_step // m % 2 == 0
            if self.capture_on:
                return super()._generate_and_score_completions(inputs)
            return GRPOTrainer._generate_and_score_completions(self, inputs)

        def log(self, logs, start_time=None):
            if self.capture_on:
                return super().log(logs, start_time)
            return GRPOTrainer.log(self, logs, start_time)

    class Clock(TrainerCallback):
        def on_step_end(self, _args, state, control, **kw):
            if state.global_step % m:
                return
            k = state.global_step // m - 1  # the generation batch just finished
            times["on" if k % 2 == 0 else "off"].append(time.perf_counter() - clock["since"])
            if k % 2:
                print(f"  pair {k // 2}: capture on {times['on'][-1]:.2f} s, off {times['off'][-1]:.2f} s"
                      + ("  [warm-up]" if k // 2 < args.warmup else ""), flush=True)
            clock["since"] = time.perf_counter()

    trainer = Alternating(model=model, reward_funcs=arith_reward, args=targs, train_dataset=dataset,
                          processing_class=tok, callbacks=[Clock()], lens_store=store, shaping=args.shaping)
    trainer.remove_callback(PrinterCallback)  # TRL's per-log dicts (disable_tqdm prints them) would bury the pairs
    return trainer, times, clock


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="data/runs/demo/baseline/checkpoints/step_0")
    ap.add_argument("--repeats", type=int, default=5, help="measured (on, off) pairs")
    ap.add_argument("--warmup", type=int, default=1, help="leading pairs left out of the medians")
    ap.add_argument("--minibatches", type=int, default=2, help="optimizer steps per generation batch")
    ap.add_argument("--prompts", type=int, default=32, help="prompts per generation batch")
    ap.add_argument("--group", type=int, default=8, help="samples per prompt (num_generations)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--shaping", default=None, help="a registered shaper applied on capture-on steps (default none)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = $OMP_NUM_THREADS if set, else all")
    args = ap.parse_args()
    torch.set_num_threads(grpo.resolve_threads(args.threads))
    model, tok, what, verify = load(args.checkpoint)
    print(f"model: {what}; {sum(p.numel() for p in model.parameters()):,} parameters; torch threads "
          f"{torch.get_num_threads()}; {args.prompts} prompts x {args.group}, <= {args.max_new_tokens} new tokens, "
          f"{args.minibatches} optimizer steps per batch; shaping {args.shaping or 'none'}; load average "
          f"{os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-trl-capture-") as tmp:
        trainer, times, clock = make_trainer(args, model, tok, verify, Path(tmp) / "lens")
        clock["since"] = time.perf_counter()
        trainer.train()
    on, off = times["on"][args.warmup:], times["off"][args.warmup:]
    ratios = [a / b for a, b in zip(on, off)]
    print(f"TRL step with capture: {statistics.median(on):.2f} s, without: {statistics.median(off):.2f} s "
          f"(medians of {len(on)})")
    print(f"ratio with / without capture: {statistics.median(ratios):.3f} (median of {len(ratios)} pairs; range "
          f"{min(ratios):.3f}-{max(ratios):.3f}); target <= 1.15")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
