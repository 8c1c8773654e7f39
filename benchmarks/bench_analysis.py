"""Throughput and peak memory of the whole analysis suite over a large synthetic store (default 10⁸ token rows).

Phase 1 (this process): write a synthetic sweep store with :class:`entropy_lens.store.StoreWriter`, so the
layout is the real one (step partitions, sorted rows, 1M-row row groups, zstd, manifest):

* ``--steps`` checkpoints; a rising stage (first 40% of steps: mean entropy falls, accuracy climbs) then a
  plateau; ``G = 8`` samples per prompt and as many prompts as it takes to reach ``--rows`` tokens;
* response lengths ~ lognormal (median 350 tokens, σ = 0.6), capped at 2048 (capped ones are truncated);
* token entropy ~ a mixture: ~20% "forking" tokens with H ~ Gamma(2, 0.9·scale) and the rest
  H ~ Exponential(0.06·scale), scale falling over the rising stage; times a U-shape in relative position,
  1 + 0.8·(2r − 1)²; each response has a confidence factor that scales its entropy and log-probs, so
  log-PPL is higher for incorrect responses (correctness correlated with PPL);
* log-prob of the sampled token ≈ −H·U(0.2, 1.5); Σp² consistent with it (≥ p²);
* token ids Zipf(1.2) over Qwen2.5's 151,936-entry vocabulary (a permuted rank order), with a share of
  "formal" tokens that grows with the step; a ``vocab`` table with digits, LaTeX, the lexicon's words;
* ``updates`` for every step but the last: Δlog-p ~ N(±0.02·H, 0.002 + 0.05·H), + for correct responses.

Phase 2: every public analysis function that applies runs in its own fresh subprocess (``--worker NAME``),
which reports its wall time and its peak resident set (``VmHWM``, the whole process: interpreter,
polars, the query and its result).  Generation's memory counts for none of them.  Rows/s is the number of
``tokens`` rows divided by the function's wall time (a function that scans twice pays twice).

    python benchmarks/bench_analysis.py --rows 1e7                  # develop
    python benchmarks/bench_analysis.py --rows 1e8 --store /tmp/big  # the target run (keeps the store)
    python benchmarks/bench_analysis.py --store /tmp/big --reuse --only token_shift u_shape_summary
    BENCH_LAZYFRAMES=1 python benchmarks/bench_analysis.py --store /tmp/big --reuse   # Store.tokens, not partitions

Targets (2 cores): peak ≤ 8 GiB and ≥ 10⁷ token rows/s for every function.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
V = 151_936
G = 8
MAX_LEN = 2048

# name → (tables it reads, description); the order is the order they run in
FUNCTIONS = {
    "step_curves": "stages.step_curves + detect_stage_boundary (tokens, samples)",
    "polarity_entropy": "polarity.polarity_entropy + polarity_rates (tokens ⋈ samples)",
    "token_shift": "vocab.token_shift + top_token_shifts (tokens, vocab)",
    "delta_p_distribution": "updates.delta_p_distribution (tokens ⋈ updates ⋈ samples, 7 quantiles)",
    "delta_p_histogram": "updates.delta_p_histogram (tokens ⋈ updates ⋈ samples)",
    "update_by_entropy_bin": "updates.update_by_entropy_bin (tokens ⋈ updates, plateau)",
    "significant_update_sets": "updates.significant_update_sets (tokens ⋈ updates ⋈ samples, plateau)",
    "category_updates": "categories.category_updates (tokens ⋈ updates ⋈ vocab categories, plateau)",
    "category_proportions": "categories.category_proportions (tokens ⋈ vocab categories, by step)",
    "ppl_buckets": "instance.ppl_weights + ppl_buckets (samples)",
    "ppl_bucket_updates": "instance.ppl_bucket_updates (tokens ⋈ updates ⋈ samples, plateau)",
    "entropy_by_position": "position.entropy_by_position (tokens, + samples for polarity)",
    "update_by_position": "position.update_by_position (tokens ⋈ updates, plateau)",
    "u_shape_summary": "position.u_shape_summary (tokens ⋈ samples, bootstrap over responses)",
    "defect_proportions": "defects.defect_proportions (samples)",
}
TOKEN_FREE = {"ppl_buckets", "defect_proportions"}  # read samples only: rows/s is not meaningful


# ----------------------------------------------------------------------------------------------- phase 1
def _vocab_strings(rng) -> list[str]:
    from entropy_lens.analysis.categories import Lexicon

    lx = Lexicon()
    fixed = ["<|endoftext|>", *"0123456789", *"=+-*/^_()[]{}<>|", "\\frac", "\\sqrt", "\\cdot", "\\boxed",
             *[f"Ġ{w}" for w in (*lx.logical_words, *lx.metacognitive_words)], *[f"Ġ{w}" for w in lx.formal_words]]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    rest = ["Ġ" * int(rng.random() < 0.6) + "".join(rng.choice(letters, size=int(rng.integers(1, 9))))
            for _ in range(V - len(fixed))]
    return fixed + rest


def _step_tables(rng, step_index: int, n_steps: int, step: int, n_prompts: int, perm, formal_ids, last: bool):
    import numpy as np

    u = step_index / max(n_steps - 1, 1)
    rising = min(u / 0.4, 1.0)  # 0 → 1 over the rising stage, then flat
    scale = 1.0 - 0.6 * rising  # entropy scale: falls, then plateaus
    acc = 0.3 + 0.45 * rising
    n_resp = n_prompts * G
    conf = rng.standard_normal(n_resp)  # per-response: high = unsure (higher entropy, higher PPL)
    length = np.minimum(np.exp(rng.normal(np.log(350), 0.6, n_resp)).astype(np.int64) + 1, MAX_LEN)
    logit = np.log(acc / (1 - acc)) - 1.2 * conf
    correct = rng.random(n_resp) < 1 / (1 + np.exp(-logit))
    n = int(length.sum())
    starts = np.concatenate([[0], np.cumsum(length)[:-1]])
    position = np.arange(n, dtype=np.int64) - np.repeat(starts, length)
    rel = (position / np.repeat(length, length)).astype(np.float32)
    m = np.repeat(np.exp(0.25 * conf), length).astype(np.float32)
    fork = rng.random(n, dtype=np.float32) < 0.12 + 0.08 * scale
    h = np.where(fork, rng.gamma(2.0, 0.9 * scale, n).astype(np.float32),
                 rng.exponential(0.06 * scale, n).astype(np.float32))
    h = np.minimum(h * m * (1.0 + 0.8 * (2.0 * rel - 1.0) ** 2), np.log(V)).astype(np.float32)
    logprob = np.minimum(-h * rng.uniform(0.2, 1.5, n).astype(np.float32) * m, 0.0).astype(np.float32)
    p = np.exp(logprob)
    sum_p2 = np.minimum(p * p + (1 - p) ** 2 * rng.uniform(0.05, 1.0, n).astype(np.float32) * np.exp(-h), 1.0)
    ranks = np.minimum(rng.zipf(1.2, n), V) - 1
    token_id = perm[ranks]
    formal = rng.random(n, dtype=np.float32) < 0.05 + 0.15 * rising
    token_id = np.where(formal, formal_ids[rng.integers(0, len(formal_ids), n)], token_id).astype(np.int32)
    resp = np.repeat(np.arange(n_resp), length)
    tokens = {"step": np.full(n, step, np.int32), "prompt_id": (resp // G).astype(np.int32),
              "sample_id": (resp % G).astype(np.int32), "position": position.astype(np.int32), "rel_position": rel,
              "token_id": token_id, "logprob": logprob, "entropy": h, "sum_p2": sum_p2.astype(np.float32)}
    logppl = -np.add.reduceat(logprob.astype(np.float64), starts) / length
    mean_h = np.add.reduceat(h.astype(np.float64), starts) / length
    gold = rng.integers(0, 1000, n_prompts).astype(str)
    gold_r = np.repeat(gold, G)
    answer = np.where(correct, gold_r, (rng.integers(0, 1000, n_resp)).astype(str))
    text = np.char.add("... so the answer is A: ", answer)
    samples = {"step": np.full(n_resp, step, np.int32), "prompt_id": (np.arange(n_resp) // G).astype(np.int32),
               "sample_id": (np.arange(n_resp) % G).astype(np.int32), "length": length.astype(np.int32),
               "truncated": length >= MAX_LEN, "prompt": np.char.add("Q: problem ", np.repeat(np.arange(n_prompts), G).astype(str)),
               "text": text, "answer": answer, "gold": gold_r, "format_ok": np.ones(n_resp, bool), "correct": correct,
               "reward": np.where(correct, 1.0, -1.0).astype(np.float32), "logppl": logppl.astype(np.float32),
               "mean_entropy": mean_h.astype(np.float32), "source": np.full(n_resp, "collect")}
    updates = None
    if not last:
        sign = np.where(np.repeat(correct, length), 1.0, -1.0).astype(np.float32)
        delta = rng.normal(0.0, 1.0, n).astype(np.float32) * (0.002 + 0.05 * h) + sign * 0.02 * h
        updates = {"step": tokens["step"], "next_step": np.full(n, step + 10, np.int32),
                   "prompt_id": tokens["prompt_id"], "sample_id": tokens["sample_id"], "position": tokens["position"],
                   "logprob_next": np.minimum(logprob + delta, 0.0).astype(np.float32)}
    return tokens, samples, updates


def generate(root: Path, rows: int, n_steps: int, seed: int) -> dict:
    import numpy as np

    from entropy_lens.store import StoreWriter

    rng = np.random.default_rng(seed)
    per_step = rows / n_steps
    n_prompts = max(1, int(round(per_step / (G * 350 * np.exp(0.6**2 / 2)))))  # E[lognormal length]
    vocab = _vocab_strings(rng)
    perm = rng.permutation(V).astype(np.int32)
    formal_ids = np.arange(1, 40, dtype=np.int32)
    total = 0
    t0 = time.perf_counter()
    with StoreWriter(root, kind="sweep", settings={"synthetic": True, "rows": rows, "steps": n_steps,
                                                   "seed": seed}) as w:
        w.write_table("vocab", {"token_id": list(range(V)), "token": vocab})
        for i in range(n_steps):
            step = 10 * i
            if w.is_complete(step) and (i == n_steps - 1 or w.is_complete(step, ["updates"])):
                continue
            tokens, samples, updates = _step_tables(rng, i, n_steps, step, n_prompts, perm, formal_ids,
                                                    last=i == n_steps - 1)
            w.write_step(step, tokens=tokens, samples=samples, **({"updates": updates} if updates else {}))
            total += len(tokens["step"])
            print(f"  step {step}: {len(tokens['step']):,} token rows ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    return {"seconds": time.perf_counter() - t0, "rows_written": total}


# ----------------------------------------------------------------------------------------------- phase 2
def _vm_hwm() -> int:
    """This process's peak resident set, bytes.  VmHWM, not ru_maxrss: Linux carries ru_maxrss across
    fork + exec, so a worker would report the generating parent's peak; VmHWM belongs to the new image."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) * 1024


def _worker(name: str, store_path: str, boundary: int | None) -> dict:
    import polars as pl

    import entropy_lens
    from entropy_lens.analysis import categories, defects, instance, polarity, position, stages, updates, vocab

    store = entropy_lens.open(store_path)
    # tokens and updates as step partitions: the step-wise analyses read each step's file (the lazy ones scan them)
    t, u = store.partitions("tokens"), store.partitions("updates")
    if os.environ.get("BENCH_LAZYFRAMES"):  # the plain LazyFrames instead: each step is a filter of the scan
        t, u = store.tokens, store.updates
    s, v = store.samples, store.vocab
    base = _vm_hwm()
    plateau = dict(boundary=boundary, stage="plateau") if boundary is not None else {}
    extra = {}
    t0 = time.perf_counter()
    if name == "step_curves":
        out = stages.step_curves(tokens=t, samples=s)
        extra["boundary"] = stages.detect_stage_boundary(out).step
    elif name == "polarity_entropy":
        out = polarity.polarity_entropy(tokens=t, samples=s)
        polarity.polarity_rates(out, boundary)
    elif name == "token_shift":
        out = vocab.token_shift(tokens=t, vocab=v, boundary=boundary)
        vocab.top_token_shifts(out)
    elif name == "delta_p_distribution":
        out = updates.delta_p_distribution(tokens=t, updates=u, samples=s, boundary=boundary)
    elif name == "delta_p_histogram":
        out = updates.delta_p_histogram(tokens=t, updates=u, samples=s, boundary=boundary)
    elif name == "update_by_entropy_bin":
        out = updates.update_by_entropy_bin(tokens=t, updates=u, **plateau)
    elif name == "significant_update_sets":
        out = updates.significant_update_sets(tokens=t, updates=u, samples=s, **plateau)
    elif name == "category_updates":
        out = categories.category_updates(tokens=t, updates=u, vocab=v, **plateau)
    elif name == "category_proportions":
        out = categories.category_proportions(tokens=t, vocab=v)
    elif name == "ppl_buckets":
        instance.ppl_weights(samples=s)
        out = instance.ppl_buckets(samples=s)
    elif name == "ppl_bucket_updates":
        out = instance.ppl_bucket_updates(tokens=t, updates=u, samples=s, **plateau)
    elif name == "entropy_by_position":
        out = position.entropy_by_position(tokens=t, samples=s)
    elif name == "update_by_position":
        out = position.update_by_position(tokens=t, updates=u, **plateau)
    elif name == "u_shape_summary":
        out = position.u_shape_summary(tokens=t, samples=s)
    elif name == "defect_proportions":
        out = defects.defect_proportions(samples=s)
    else:
        raise SystemExit(f"unknown function {name}")
    seconds = time.perf_counter() - t0
    assert isinstance(out, pl.DataFrame) and out.height > 0, name
    return {"name": name, "seconds": seconds, "maxrss": _vm_hwm(),
            "rss_before": base, "out_rows": out.height, "threads": pl.thread_pool_size(), **extra}


def _count(store: Path) -> dict:
    import polars as pl

    import entropy_lens

    st = entropy_lens.open(store)
    return {k: getattr(st, k).select(pl.len()).collect().item() for k in ("tokens", "samples", "updates")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=float, default=1e8, help="token rows to generate (approximately)")
    p.add_argument("--steps", type=int, default=20, help="checkpoints (step partitions)")
    p.add_argument("--store", help="store folder (default: a temporary folder, deleted afterwards)")
    p.add_argument("--reuse", action="store_true", help="analyse --store as it is, without generating")
    p.add_argument("--keep", action="store_true", help="keep the generated store")
    p.add_argument("--only", nargs="+", choices=list(FUNCTIONS), help="run only these functions")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per function")
    p.add_argument("--mem-cap", type=float, default=10.0,
                   help="GiB of resident memory after which a function's process is killed (protects a shared "
                        "machine; reported as a miss)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--boundary", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.store, args.boundary)))
        return

    tmp = None
    if args.store is None:
        tmp = tempfile.mkdtemp(prefix="bench_analysis_")
        args.store = str(Path(tmp) / "store")
    store = Path(args.store)
    try:
        if not args.reuse:
            print(f"generating ~{int(args.rows):,} token rows in {args.steps} steps into {store} ...", file=sys.stderr)
            gen = generate(store, int(args.rows), args.steps, args.seed)
            print(f"generation: {gen['rows_written']:,} token rows in {gen['seconds']:.1f} s "
                  f"({gen['rows_written'] / max(gen['seconds'], 1e-9):,.0f} rows/s, written with StoreWriter)")
        counts = _count(store)
        size = sum(f.stat().st_size for f in store.rglob("*.parquet"))
        print(f"store: {counts['tokens']:,} tokens, {counts['samples']:,} samples, {counts['updates']:,} updates rows; "
              f"{size / 2**30:.2f} GiB of Parquet; load average {os.getloadavg()[0]:.2f}")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        names = args.only or list(FUNCTIONS)
        boundary = args.boundary
        if boundary is None and "step_curves" not in names:
            names = ["step_curves", *names]
        results = []
        for name in names:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--store", str(store)]
            if boundary is not None:
                cmd += ["--boundary", str(boundary)]
            print(f"running {name} ...", file=sys.stderr, flush=True)
            code, stdout, stderr, why = _run_capped(cmd, env, args.timeout, args.mem_cap * 2**30)
            if code:
                results.append({"name": name, "error": why or f"exit {code}: {stderr.strip().splitlines()[-1:]}"})
                continue
            res = json.loads(stdout.strip().splitlines()[-1])
            results.append(res)
            if name == "step_curves" and boundary is None:
                boundary = res["boundary"]
        _report(results, counts["tokens"], boundary)
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp:
            print(f"store kept at {store}")


def _run_capped(cmd, env, timeout: float, cap_bytes: float):
    """Run ``cmd``; kill it when its RSS passes ``cap_bytes`` or after ``timeout`` s.  (code, out, err, why)."""
    out_f, err_f = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, env=env, stdout=out_f, stderr=err_f, text=True)
    t0, why, peak = time.perf_counter(), None, 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                rss = int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) * 1024
        except (OSError, StopIteration):
            rss = 0
        peak = max(peak, rss)
        if rss > cap_bytes:
            why = f"killed: resident memory passed the {cap_bytes / 2**30:.1f} GiB cap after {time.perf_counter() - t0:.0f} s"
        elif time.perf_counter() - t0 > timeout:
            why = f"killed: timed out after {timeout:.0f} s (RSS then {rss / 2**30:.2f} GiB)"
        if why:
            proc.kill()
            proc.wait()
            break
        time.sleep(0.1)
    out_f.seek(0)
    err_f.seek(0)
    return proc.returncode, out_f.read(), err_f.read(), why


def _report(results: list[dict], n_tokens: int, boundary) -> None:
    print(f"\nstage boundary used (knee detector on step_curves): {boundary}; {n_tokens:,} token rows; "
          f"polars threads: {next((r['threads'] for r in results if 'threads' in r), '?')}")
    print(f"{'function':<24} {'seconds':>8} {'token rows/s':>14} {'peak RSS MiB':>13} {'rows out':>9}  target")
    worst_rate, worst_mem, total = float("inf"), 0, 0.0
    for r in results:
        if "error" in r:
            print(f"{r['name']:<24} {'—':>8} {'—':>14} {'—':>13} {'—':>9}  FAILED: {r['error']}")
            worst_rate = 0
            continue
        total += r["seconds"]
        rate = n_tokens / r["seconds"] if r["name"] not in TOKEN_FREE else None
        mem = r["maxrss"]
        worst_mem = max(worst_mem, mem)
        ok = mem <= 8 * 2**30 and (rate is None or rate >= 1e7)
        if rate is not None:
            worst_rate = min(worst_rate, rate)
        print(f"{r['name']:<24} {r['seconds']:>8.2f} {(f'{rate:,.0f}' if rate else 'samples only'):>14} "
              f"{mem / 2**20:>13,.0f} {r['out_rows']:>9,}  {'ok' if ok else 'MISSED'}")
    n_scan = sum(1 for r in results if "error" not in r and r["name"] not in TOKEN_FREE)
    print(f"suite: {total:.1f} s for {len(results)} functions ({n_scan} over tokens: "
          f"{n_scan * n_tokens / max(total, 1e-9):,.0f} token rows/s overall); slowest {worst_rate:,.0f} rows/s; "
          f"largest peak {worst_mem / 2**30:.2f} GiB")
    print(f"target (every function ≤ 8 GiB peak and ≥ 10⁷ rows/s): "
          f"{'MET' if worst_rate >= 1e7 and worst_mem <= 8 * 2**30 else 'NOT MET'}")


if __name__ == "__main__":
    main()
