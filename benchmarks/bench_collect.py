"""Scored tokens per second and peak memory of ``collect`` on a tiny model (CPU), beside a naive pipeline.

Both run on the same checkpoint, the same prompts, the same batches and the same seeds, each in its own
process (so that "peak memory" is the whole process's ``ru_maxrss`` and the time is the whole process's wall
time, imports and model loading included):

  collect   ``entropy_lens.capture.sweep.collect``: with its default ``static`` backend, the decode loop on a
            pre-allocated KV cache recording each token's statistics from the logits it was drawn from; with
            ``--backend hf``, ``generate`` and then the teacher-forced pass (hidden states + lm_head in
            vocabulary chunks); then grading and the Parquet write — the whole command, end to end (one
            checkpoint, so no updates pass).
  naive     ``model.generate(output_scores=True, return_dict_in_generate=True)`` with the same generation
            settings; entropy and the sampled token's log-prob from the returned per-step scores via
            ``log_softmax`` ([B, T, V] stacked), up to and including each response's EOS.  No store, no grading.

With ``--backend hf`` sampling draws the same random numbers in both, so the responses are identical; the
benchmark checks that, and that the two entropies agree, so both did the same work.  The static sampler has
its own random stream: its responses differ, and the benchmark checks collect's entropies against a dense
teacher-forced ``log_softmax`` of its own responses instead.  The figures of merit are response tokens
with exact entropy per second of wall time (ratio collect / naive) and peak resident memory (ratio too).

``--vocab V`` pads the character tokenizer to V tokens (Qwen2.5's is 151,936) and builds the tiny model on it
(hidden 128, so the vocabulary dominates): a random-initialised model then samples near-uniformly over V and
never ends early, so every response is ``--max-new-tokens`` long.

    python benchmarks/bench_collect.py                                   # 32 prompts × 4 samples × ≤128 tokens
    python benchmarks/bench_collect.py --vocab 151936 --prompts 16 --samples 4 --max-new-tokens 96

Measured on the 2-core box (2 threads, one run each, at commit 992a929), 64 responses × 96 tokens at
V = 151,936: collect (static, its default) 16.7 s and 782 MB against the naive 56.0 s and 14.8 GB (3.35×
tokens/s, 0.053× memory; its entropies within 1.7e-5 nats of the dense pass); with ``--backend hf`` 49.3 s
and 833 MB against 53.7 s (1.09×, 0.056×).  At the tiny default vocabulary (52; median of 3 runs) the work is
mostly process start-up: 1.12× (static) and 1.00× (hf), 7–9 s each; collect's peak memory is then 1.1–1.3×
the naive one's (polars and pyarrow loaded, ~50–160 MB).
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def teacher_forced_entropy(ckpt: Path, rows, args) -> list[float]:
    """The entropy at each of collect's response tokens from one plain forward and a dense ``log_softmax``
    (the check when the two pipelines sampled different responses: the static sampler's own random stream)."""
    import torch

    from entropy_lens.capture.sampling import encode_prompt
    from entropy_lens.models import load_checkpoint
    from entropy_lens.tasks import load_eval_set

    model, tokenizer = load_checkpoint(ckpt, device="cpu")
    problems = load_eval_set("arith").problems
    out = []
    with torch.no_grad():
        for prompt_id, response in rows:
            prompt = encode_prompt(tokenizer, problems[prompt_id].prompt)
            logits = model(input_ids=torch.tensor([prompt + list(response)])).logits[0, len(prompt) - 1:-1]
            logp = torch.log_softmax(logits.float() / args.temperature, dim=-1)
            out += (-(logp.exp() * logp).sum(-1)).tolist()
    return out


def padded_char_tokenizer(vocab: int):
    """The character tokenizer of the arith alphabet, padded with rarely used characters to ``vocab`` tokens."""
    from entropy_lens.models import build_char_tokenizer
    from entropy_lens.tasks.arith import ALPHABET

    base = len(build_char_tokenizer(ALPHABET))
    pools = [range(0x4E00, 0xA000), range(0xE000, 0xF900), range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE)]
    extra = [chr(c) for pool in pools for c in pool if chr(c) not in ALPHABET][: max(0, vocab - base)]
    if len(extra) < vocab - base:
        raise SystemExit(f"--vocab {vocab}: at most {base + len(extra)} tokens can be built this way")
    return build_char_tokenizer(ALPHABET + "".join(extra))


def child(args) -> None:
    """Run one pipeline (``args.pipeline``) on the saved checkpoint; write its tokens and entropies, and print
    one JSON line: scored tokens and peak resident memory of this process."""
    import json
    import resource

    import numpy as np

    tmp = Path(args.work)
    cfg = dict(dataset="arith", max_prompts=args.prompts, samples_per_prompt=args.samples,
               max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, temperature=args.temperature,
               seed=args.seed, device="cpu", updates=False, backend=args.backend)
    if args.pipeline == "collect":
        import entropy_lens
        from entropy_lens.capture.config import CollectConfig
        from entropy_lens.capture.sweep import collect

        collect(CollectConfig(str(tmp / "ckpt"), out=str(tmp / "store"), **cfg))
        tokens = entropy_lens.open(tmp / "store").tokens.collect().sort("prompt_id", "sample_id", "position")
        ids, entropy = tokens["token_id"].to_numpy(), tokens["entropy"].to_numpy()
        rows = tokens.group_by("prompt_id", "sample_id", maintain_order=True).agg("token_id")
        (tmp / "collect_rows.json").write_text(json.dumps(list(zip(rows["prompt_id"], rows["token_id"].to_list()))))
    else:
        from entropy_lens.capture.sampling import encode_prompt
        from entropy_lens.capture.tables import step_jobs
        from entropy_lens.models import load_checkpoint
        from entropy_lens.tasks import load_eval_set

        model, tokenizer = load_checkpoint(tmp / "ckpt", device="cpu")
        problems = load_eval_set("arith").problems[: args.prompts]
        prompt_ids = [encode_prompt(tokenizer, q.prompt) for q in problems]
        _, h, rows = naive_pipeline(model, tokenizer, prompt_ids, step_jobs(len(problems), args.samples), args)
        ids, entropy = np.array([t for r in rows for t in r]), np.array(h)
    np.savez(tmp / f"{args.pipeline}.npz", ids=ids, entropy=entropy)
    print(json.dumps({"tokens": int(len(ids)), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(args, pipeline: str, work: Path) -> dict:
    import json
    import subprocess

    flags = ["--prompts", args.prompts, "--samples", args.samples, "--max-new-tokens", args.max_new_tokens,
             "--batch-size", args.batch_size, "--temperature", args.temperature, "--seed", args.seed,
             "--backend", args.backend]
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, *map(str, flags), "--pipeline", pipeline, "--work", str(work)],
                         capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{pipeline} failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--samples", type=int, default=4, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=1, help="runs of each pipeline, alternating (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", type=int, default=0, help="pad the tokenizer to this many tokens (0: the character "
                                                        "tokenizer as it is)")
    p.add_argument("--backend", default="static", help="collect's sampling backend (static, its default: the "
                                                       "trainer's decode loop, its own random stream; or hf)")
    p.add_argument("--pipeline", choices=("collect", "naive"), help=argparse.SUPPRESS)  # a child process
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.pipeline:
        return child(args)

    import json

    import numpy as np
    import torch

    from entropy_lens.models import build_char_tokenizer, build_tiny_model, save_checkpoint
    from entropy_lens.tasks.arith import ALPHABET

    tmp = Path(tempfile.mkdtemp(prefix="bench_collect_"))
    tok = padded_char_tokenizer(args.vocab) if args.vocab else build_char_tokenizer(ALPHABET)
    model = build_tiny_model(tok, seed=args.seed)
    n_params = sum(q.numel() for q in model.parameters())
    save_checkpoint(model, tok, tmp / "ckpt")
    del model
    runs = {"collect": [], "naive": []}
    for r in range(args.repeats):
        for name in ("collect", "naive") if r % 2 == 0 else ("naive", "collect"):
            shutil.rmtree(tmp / "store", ignore_errors=True)
            runs[name].append(run_child(args, name, tmp))
    got = {k: np.load(tmp / f"{k}.npz") for k in runs}
    same = np.array_equal(got["collect"]["ids"], got["naive"]["ids"])
    reference = (got["naive"]["entropy"] if same else
                 np.array(teacher_forced_entropy(tmp / "ckpt", json.loads((tmp / "collect_rows.json").read_text()),
                                                 args)))
    max_dh = float(np.max(np.abs(got["collect"]["entropy"] - reference)))
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("seconds", "peak_mb", "tokens")} for k, v in runs.items()}
    rate = {k: m["tokens"] / m["seconds"] for k, m in med.items()}
    print(f"tiny model: {n_params:,} parameters, vocab {len(tok):,}; CPU, torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{args.prompts} prompts × {args.samples} samples, ≤{args.max_new_tokens} new tokens, batch "
          f"{args.batch_size}, temperature {args.temperature}; whole processes, median of {args.repeats} run(s)")
    print(f"{'pipeline':<9} {'tokens':>8} {'seconds':>8} {'scored tokens/s':>16} {'peak MB':>9}")
    scored = "sample and score" if args.backend == "static" else "sample + teacher-forced score"
    for name, what in (("collect", f"{scored} + grade + Parquet"),
                       ("naive", "generate(output_scores) + log_softmax")):
        m = med[name]
        print(f"{name:<9} {m['tokens']:>8,.0f} {m['seconds']:>8.2f} {rate[name]:>16,.0f} {m['peak_mb']:>9,.0f}   ({what})")
    print(f"ratio collect / naive: {rate['collect'] / rate['naive']:.2f}× tokens/s, "
          f"{med['collect']['peak_mb'] / med['naive']['peak_mb']:.3f}× peak memory")
    print(f"same responses in both: {same}; max |H_collect − H_{'naive' if same else 'teacher-forced'}| = "
          f"{max_dh:.2e} nats")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
