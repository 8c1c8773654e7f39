"""Scored tokens per second of ``collect`` on the tiny default model (CPU), beside a naive pipeline.

Both run in this process on the same checkpoint, the same prompts, the same batches and the same seeds:

  collect   ``entropy_lens.capture.sweep.collect``: KV-cached sampling (hf backend), then the teacher-forced
            pass (hidden states + lm_head in vocabulary chunks), grading, and the Parquet write — the whole
            command, end to end (one checkpoint, so no updates pass).
  naive     ``model.generate(output_scores=True, return_dict_in_generate=True)`` with the same generation
            settings; entropy and the sampled token's log-prob from the returned per-step scores via
            ``log_softmax`` ([B, T, V] stacked), up to and including each response's EOS.  No store, no grading.

Because sampling draws the same random numbers in both, the responses are identical; the benchmark checks
that, and that the two entropies agree, so both did the same work.  The figure of merit is response tokens
with exact entropy per second of wall time; the ratio is collect / naive.

    python benchmarks/bench_collect.py                          # 32 prompts × 4 samples × ≤128 tokens
    python benchmarks/bench_collect.py --prompts 64 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def naive_pipeline(model, tokenizer, prompt_ids, jobs, args) -> tuple[int, list[float]]:
    """Generate with output_scores and take entropy from the scores; returns (tokens, entropies)."""
    import torch
    from transformers import GenerationConfig

    from entropy_lens.capture.sampling import batch_seed, cut_at_eos, eos_token_ids

    eos = eos_token_ids(model, tokenizer)
    gen = GenerationConfig(do_sample=True, temperature=args.temperature, top_p=1.0, top_k=0, num_beams=1,
                           max_new_tokens=args.max_new_tokens, repetition_penalty=1.0,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos), bos_token_id=None,
                           output_scores=True, return_dict_in_generate=True)
    n_tokens, entropies, token_ids = 0, [], []
    with torch.no_grad():
        for b, lo in enumerate(range(0, len(jobs), args.batch_size)):
            prompts = [prompt_ids[p] for p, _ in jobs[lo:lo + args.batch_size]]
            width = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, p in enumerate(prompts):
                ids[i, width - len(p):] = torch.tensor(p)
                mask[i, width - len(p):] = 1
            torch.manual_seed(batch_seed(args.seed, 0, b))
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
            new = out.sequences[:, width:]
            logp = torch.log_softmax(torch.stack(out.scores, dim=1).float(), dim=-1)  # [B, T, V]
            entropy = -(logp.exp() * logp).sum(-1)
            token_logp = logp.gather(-1, new[..., None])[..., 0]  # noqa: F841  (the naive pipeline's log-probs)
            for i, row in enumerate(new.tolist()):
                n = len(cut_at_eos(row, eos, args.max_new_tokens).token_ids)
                n_tokens += n
                entropies += entropy[i, :n].tolist()
                token_ids.append(row[:n])
    return n_tokens, entropies, token_ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--samples", type=int, default=4, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each pipeline (median reported)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import numpy as np
    import torch

    import entropy_lens
    from entropy_lens.capture.config import CollectConfig
    from entropy_lens.capture.sampling import encode_prompt
    from entropy_lens.capture.sweep import collect
    from entropy_lens.capture.tables import step_jobs
    from entropy_lens.models import build_char_tokenizer, build_tiny_model, load_checkpoint, save_checkpoint
    from entropy_lens.tasks import load_eval_set
    from entropy_lens.tasks.arith import ALPHABET

    tmp = Path(tempfile.mkdtemp(prefix="bench_collect_"))
    tok = build_char_tokenizer(ALPHABET)
    model = build_tiny_model(tok, seed=args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    ckpt = save_checkpoint(model, tok, tmp / "ckpt")
    cfg = dict(dataset="arith", max_prompts=args.prompts, samples_per_prompt=args.samples,
               max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, temperature=args.temperature,
               seed=args.seed, device="cpu", updates=False)

    model, tokenizer = load_checkpoint(ckpt, device="cpu")
    problems = load_eval_set("arith").problems[: args.prompts]
    prompt_ids = [encode_prompt(tokenizer, q.prompt) for q in problems]
    jobs = step_jobs(len(problems), args.samples)
    naive_pipeline(model, tokenizer, prompt_ids, jobs[: args.batch_size], args)  # warm-up (one batch)

    t_collect, t_naive = [], []
    for r in range(args.repeats):
        out = tmp / f"store{r}"
        t0 = time.perf_counter()
        summary = collect(CollectConfig(str(ckpt), out=str(out), **cfg))
        t_collect.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n_naive, naive_h, naive_ids = naive_pipeline(model, tokenizer, prompt_ids, jobs, args)
        t_naive.append(time.perf_counter() - t0)
    store = entropy_lens.open(tmp / "store0")
    tokens = store.tokens.collect().sort("prompt_id", "sample_id", "position")
    same_tokens = tokens["token_id"].to_list() == [t for row in naive_ids for t in row]
    max_dh = float(np.max(np.abs(tokens["entropy"].to_numpy() - np.array(naive_h)))) if same_tokens else float("nan")
    tc, tn = statistics.median(t_collect), statistics.median(t_naive)
    rate_c, rate_n = summary.tokens_scored / tc, n_naive / tn
    print(f"tiny default model: {n_params:,} parameters, vocab {len(tokenizer)}; CPU, torch threads "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}")
    print(f"{args.prompts} prompts × {args.samples} samples, ≤{args.max_new_tokens} new tokens, batch "
          f"{args.batch_size}, temperature {args.temperature}; median of {args.repeats} run(s)")
    print(f"{'pipeline':<9} {'tokens':>8} {'seconds':>8} {'scored tokens/s':>16}")
    print(f"{'collect':<9} {summary.tokens_scored:>8,} {tc:>8.2f} {rate_c:>16,.0f}   (sample + teacher-forced score "
          "+ grade + Parquet)")
    print(f"{'naive':<9} {n_naive:>8,} {tn:>8.2f} {rate_n:>16,.0f}   (generate(output_scores) + log_softmax)")
    print(f"ratio collect / naive: {rate_c / rate_n:.2f}×")
    print(f"same responses in both: {same_tokens}; max |H_collect − H_naive| = {max_dh:.2e} nats")


if __name__ == "__main__":
    main()
