"""The Python side of ``benchmarks/gpu_check.sh``: one phase per call, results as JSON files.

Phases (``--phase``):

  env      torch / CUDA / device facts.
  kernels  the bf16 matmul roofline measured on the spot (``--matmul`` cube, TFLOP/s), then per-token
           statistics of N tokens × V vocabulary, D hidden (1.5B: 8192 × 151,936 × 1536) by three routes,
           time (median of 3 after a warm-up) and peak extra memory (``max_memory_allocated``):
             hidden  token_stats_from_hidden(hidden, W): vocab-chunked, no [N, V] logits
             logits  logits = hidden @ Wᵀ (bf16), then token_stats_from_logits
             naive   logits = hidden @ Wᵀ, then the dense fp32 log_softmax twin (naive_token_stats)
  sweep    a randomly initialised Qwen2.5-1.5B-shaped Qwen2ForCausalLM (hidden 1536, 28 layers, 12 heads,
           2 KV heads, MLP 8960, vocab 151,936, tied embeddings) in bf16 on the GPU, with a 151,936-entry
           tokenizer; ``--prompts`` arith prompts × ``--samples`` samples × ≤ ``--max-new-tokens`` tokens sampled
           by the hf backend (batches of ``--sample-batch``, seeds from ``batch_seed``) within
           ``--sample-budget`` seconds (fewer prompts if the budget runs out; the JSON says how many), then
           scored by ``capture.scoring.score`` (batches of ``--score-batch``).  Sampled and scored tokens/s,
           and scoring as a fraction of the roofline at 2·params FLOPs per token.  ``--save DIR`` saves the
           checkpoint for the smoke phase.
  smoke    ``collect`` end to end (the CLI's code path, bf16 on CUDA) on the saved checkpoint, small sizes.
  summary  one table from every phase's JSON.

``--tiny`` shrinks every size (a 2-layer model, vocab 1,000, a few prompts) so the whole script runs on a CPU
in seconds; that is how it is tested where there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FULL = dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151_936, tokens=8192,
            matmul=8192, prompts=256, samples=8, max_new_tokens=1024, sample_batch=512, score_batch=64)
TINY = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1000, tokens=256, matmul=512,
            prompts=4, samples=2, max_new_tokens=16, sample_batch=8, score_batch=4)


def _device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, repeats: int = 3) -> tuple[float, int | None, object]:
    """Median seconds of ``repeats`` calls after one warm-up, peak extra CUDA bytes, and the last result."""
    import torch

    cuda = torch.cuda.is_available()
    fn()
    _sync()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    times = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() - base if cuda else None
    return statistics.median(times), peak, out


def roofline(n: int) -> float:
    """Measured dense bf16 matmul throughput, FLOP/s, on an n³ problem."""
    import torch

    dev = _device()
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    iters = 50 if dev == "cuda" else 3
    def run():
        for _ in range(iters):
            c = a @ b
        return c

    t, _, _ = _timed(run, repeats=3)
    return 2 * n**3 * iters / t


def phase_env(args) -> dict:
    import torch
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda,
           "device": _device(), "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}")
    try:
        import vllm

        out["vllm"] = vllm.__version__
    except Exception:
        out["vllm"] = None
    return out


def phase_kernels(args, s: dict) -> dict:
    import torch

    from entropy_lens import ops

    dev = _device()
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    flops = roofline(s["matmul"])
    print(f"roofline: {flops / 1e12:.1f} TFLOP/s ({'bf16' if dev == 'cuda' else 'fp32'} {s['matmul']}³ matmul)",
          flush=True)
    g = torch.Generator(device=dev).manual_seed(0)
    n, v, d = s["tokens"], s["vocab"], s["hidden"]
    hidden = torch.randn(n, d, device=dev, dtype=dtype, generator=g)
    weight = (torch.randn(v, d, device=dev, dtype=dtype, generator=g) * d**-0.5 * 2)
    targets = torch.randint(0, v, (n,), device=dev, generator=g)
    routes = {
        "hidden": lambda: ops.token_stats_from_hidden(hidden, weight, targets, chunk_size=8192),
        "logits": lambda: ops.token_stats_from_logits(hidden @ weight.T, targets, chunk_size=8192),
        "naive": lambda: ops.naive_token_stats(hidden @ weight.T, targets),
    }
    res = {}
    for name, fn in routes.items():
        try:
            t, peak, stats = _timed(fn)
            res[name] = {"seconds": t, "peak_extra_bytes": peak, "mean_entropy": stats.entropy.double().mean().item()}
        except torch.OutOfMemoryError as e:  # the dense route is the one expected to fail first
            res[name] = {"error": f"out of memory: {str(e).splitlines()[0]}"}
            torch.cuda.empty_cache()
        print(f"  {name:<7} {json.dumps(res[name])}", flush=True)
    matmul_flops = 2 * n * v * d
    return {"roofline_flops": flops, "N": n, "V": v, "D": d, "dtype": str(dtype), "routes": res,
            "lm_head_matmul_seconds_at_roofline": matmul_flops / flops}


def _tokenizer(vocab: int):
    """A character-level tokenizer of exactly ``vocab`` entries: the arith alphabet, then other code points."""
    from entropy_lens.models import SPECIAL_TOKENS, build_char_tokenizer
    from entropy_lens.tasks.arith import ALPHABET

    chars = list(dict.fromkeys(ALPHABET))
    cp = 0x100
    while len(chars) + len(SPECIAL_TOKENS) < vocab:
        c = chr(cp)
        cp += 1
        if 0xD800 <= ord(c) <= 0xDFFF or c.isspace() or c in chars:
            continue
        chars.append(c)
    return build_char_tokenizer("".join(chars))


def phase_sweep(args, s: dict) -> dict:
    import torch

    from entropy_lens.capture.sampling import SamplingParams, batch_seed, encode_prompt, sample_hf
    from entropy_lens.capture.scoring import score
    from entropy_lens.models import TinyModelConfig, build_tiny_model, save_checkpoint
    from entropy_lens.tasks import load_eval_set

    dev = _device()
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    t0 = time.perf_counter()
    tok = _tokenizer(s["vocab"])
    cfg = TinyModelConfig(hidden_size=s["hidden"], num_layers=s["layers"], num_heads=s["heads"],
                          num_kv_heads=s["kv_heads"], intermediate_size=s["intermediate"],
                          max_positions=max(4096, s["max_new_tokens"] + 256))
    with torch.device(dev):  # initialise on the GPU: a 1.5B fp32 init on the CPU takes minutes
        model = build_tiny_model(tok, cfg, seed=0)
    model = model.to(dtype).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:,.1f}M parameters, vocab {len(tok)}, {dtype}, built in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    problems = load_eval_set("arith").problems[: s["prompts"]]
    prompt_ids = [encode_prompt(tok, q.prompt) for q in problems]
    jobs = [(p, k) for p in range(len(problems)) for k in range(s["samples"])]
    params = SamplingParams(s["max_new_tokens"], 1.0, 1.0)
    sampler = sample_hf
    bs = s["sample_batch"]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    responses, t_sample, last = [], 0.0, 0.0
    for b, lo in enumerate(range(0, len(jobs), bs)):
        if t_sample + last > args.sample_budget:
            print(f"sampling budget {args.sample_budget:.0f} s reached after {b} batch(es)", flush=True)
            break
        _sync()
        t = time.perf_counter()
        responses += sampler(model, tok, [prompt_ids[p] for p, _ in jobs[lo:lo + bs]], params,
                             seed=batch_seed(0, 0, b))
        _sync()
        last = time.perf_counter() - t
        t_sample += last
        n_b = sum(len(r.token_ids) for r in responses[lo:])
        print(f"  sample batch {b}: {len(responses) - lo} sequences, {n_b:,} tokens in {last:.1f} s", flush=True)
    done = jobs[: len(responses)]
    n_sampled = sum(len(r.token_ids) for r in responses)
    peak_sample = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    _sync()
    t = time.perf_counter()
    stats = score(model, [prompt_ids[p] for p, _ in done], [r.token_ids for r in responses],
                  batch_size=s["score_batch"])
    _sync()
    t_score = time.perf_counter() - t
    peak_score = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    n_scored = len(stats.entropy)
    flops = json.loads((args.results / "kernels.json").read_text())["roofline_flops"] \
        if (args.results / "kernels.json").exists() else roofline(s["matmul"])
    scored_rate = n_scored / t_score
    out = {"params": n_params, "dtype": str(dtype), "prompts_done": len(done) // s["samples"],
           "prompts_asked": len(problems), "samples": s["samples"], "max_new_tokens": s["max_new_tokens"],
           "sample_batch": bs, "score_batch": s["score_batch"], "tokens_sampled": n_sampled,
           "sample_seconds": t_sample, "sampled_tokens_per_s": n_sampled / t_sample if t_sample else None,
           "tokens_scored": n_scored, "score_seconds": t_score, "scored_tokens_per_s": scored_rate,
           "peak_bytes_sampling": peak_sample, "peak_bytes_scoring": peak_score, "roofline_flops": flops,
           "scoring_flops_per_token": 2 * n_params,
           "scoring_fraction_of_roofline": scored_rate * 2 * n_params / flops,
           "mean_entropy": float(stats.entropy.mean()) if n_scored else None,
           "truncated_share": sum(r.truncated for r in responses) / max(len(responses), 1)}
    if args.save:
        t = time.perf_counter()
        save_checkpoint(model, tok, args.save)
        out["save_seconds"] = time.perf_counter() - t
    return out


def phase_smoke(args, s: dict) -> dict:
    """``collect`` end to end (CLI code path, bf16 on CUDA) on the checkpoint the sweep phase saved."""
    import polars as pl

    import entropy_lens
    from entropy_lens.capture.config import CollectConfig
    from entropy_lens.capture.sweep import collect

    if not args.save or not (args.save / "config.json").exists():
        raise SystemExit(f"smoke: no checkpoint at {args.save} (run the sweep phase with --save first)")
    out = args.save.parent / "smoke_store"
    cfg = CollectConfig(str(args.save), out=str(out), max_prompts=min(16, s["prompts"]), samples_per_prompt=4,
                        max_new_tokens=min(128, s["max_new_tokens"]), batch_size=64, updates=False)
    summary = collect(cfg)
    store = entropy_lens.open(out)
    tokens = store.tokens.select(pl.len(), pl.col("entropy").mean(), pl.col("logprob").max()).collect().row(0)
    ok = tokens[0] == summary.tokens_scored and tokens[2] <= 0
    return {"summary": str(summary), "rows": tokens[0], "mean_entropy": tokens[1], "ok": ok}


def phase_summary(args) -> dict:
    res = {p: json.loads((args.results / f"{p}.json").read_text())
           for p in ("env", "kernels", "sweep", "smoke") if (args.results / f"{p}.json").exists()}
    print("=" * 78)
    env = res.get("env", {})
    print(f"device: {env.get('gpu', env.get('device'))}; torch {env.get('torch')}, CUDA {env.get('cuda')}, "
          f"transformers {env.get('transformers')}, vllm {env.get('vllm')}")
    k = res.get("kernels")
    if k:
        print(f"roofline (measured): {k['roofline_flops'] / 1e12:.1f} TFLOP/s")
        print(f"per-token stats, N={k['N']} × V={k['V']}, D={k['D']}, {k['dtype']}:")
        for name, r in k["routes"].items():
            if "error" in r:
                print(f"  {name:<7} {r['error']}")
            else:
                mem = f"{r['peak_extra_bytes'] / 2**20:,.0f} MiB" if r["peak_extra_bytes"] is not None else "n/a (CPU)"
                print(f"  {name:<7} {r['seconds'] * 1e3:9.2f} ms   peak extra {mem:>12}   mean H {r['mean_entropy']:.4f}")
    s = res.get("sweep")
    if s:
        gib = lambda b: f"{b / 2**30:.1f} GiB" if b is not None else "n/a"  # noqa: E731
        print(f"sweep ({s['params'] / 1e6:,.1f}M params, {s['dtype']}): {s['prompts_done']}/{s['prompts_asked']} prompts "
              f"× {s['samples']} samples × ≤{s['max_new_tokens']} tokens")
        print(f"  sampled {s['tokens_sampled']:,} tokens in {s['sample_seconds']:.1f} s = "
              f"{s['sampled_tokens_per_s'] or 0:,.0f} tokens/s (batch {s['sample_batch']}, peak {gib(s['peak_bytes_sampling'])})")
        print(f"  scored  {s['tokens_scored']:,} tokens in {s['score_seconds']:.1f} s = {s['scored_tokens_per_s']:,.0f} "
              f"tokens/s (batch {s['score_batch']}, peak {gib(s['peak_bytes_scoring'])})")
        print(f"  scoring at 2·params = {s['scoring_flops_per_token'] / 1e9:.2f} GFLOP/token: "
              f"{s['scoring_fraction_of_roofline']:.1%} of the measured roofline")
    if "smoke" in res:
        print(f"collect smoke test: {res['smoke'].get('summary')}")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phase", required=True, choices=["env", "kernels", "sweep", "smoke", "summary"])
    p.add_argument("--tiny", action="store_true", help="tiny sizes: runs on a CPU in seconds")
    p.add_argument("--results", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"),
                   help="folder for the phase JSON files ($OUT when set)")
    p.add_argument("--sample-budget", type=float, default=240.0, help="seconds of sampling at most (sweep)")
    p.add_argument("--save", type=Path, help="save the sweep phase's checkpoint here")
    for k in FULL:
        p.add_argument(f"--{k.replace('_', '-')}", type=int, help=f"override {k} (full: {FULL[k]}, tiny: {TINY[k]})")
    args = p.parse_args()
    sizes = dict(TINY if args.tiny else FULL)
    sizes.update({k: getattr(args, k) for k in FULL if getattr(args, k) is not None})
    args.results.mkdir(parents=True, exist_ok=True)
    if args.phase == "env":
        out = phase_env(args)
    elif args.phase == "kernels":
        out = phase_kernels(args, sizes)
    elif args.phase == "sweep":
        out = phase_sweep(args, sizes)
    elif args.phase == "smoke":
        out = phase_smoke(args, sizes)
    else:
        phase_summary(args)
        return
    out["tiny"] = args.tiny
    (args.results / f"{args.phase}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
