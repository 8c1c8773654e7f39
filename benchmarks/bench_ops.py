"""Time and peak memory of per-token entropy: dense log-softmax vs the chunked kernels of entropy_lens.ops.

Routes, on N tokens × V vocabulary (defaults 4096 × 151,936, Qwen2.5's vocabulary; hidden size 1536):

  naive         logits [N, V] given: log_softmax(logits.float()) → entropy, gather, Σp²  (naive_token_stats)
  logits        logits [N, V] given: token_stats_from_logits (five sums: H, Σp², Σp² log p, varentropy)
  logits-v1     the same, with the kernel of store schema v1 (three sums; benchmarks/_kernel_v1.py): the
                side-by-side reference for what the two newer accumulators cost
  hidden        hidden [N, D] and lm_head weight [V, D] given: token_stats_from_hidden (no [N, V] logits)
  hidden-dense  hidden and weight given: logits = hidden @ weight.T, then naive_token_stats; the fair
                baseline for `hidden`, since both pay for the lm_head matmul

Method.  Each route runs in a fresh subprocess (``--worker``) so that no route inherits another's freed
memory or warm allocator.  The worker allocates its inputs in place (``torch.empty`` then ``normal_`` in
row blocks, so creating them leaves no temporary behind), runs every op once on tiny inputs (so one-off
library initialisation is charged to no route), then records its baseline and runs the route: one warm-up
call, then ``--repeats`` timed calls; the time reported is their median.

Peak extra memory is the high-water mark minus the baseline, both taken after the inputs exist:
  * CPU: the process's resident-set high-water mark.  The worker resets it by writing 5 to
    /proc/self/clear_refs (Linux ≥ 4.0) right after the baseline, and reads VmHWM − VmRSS(baseline) from
    /proc/self/status afterwards.  This counts every page the route touches, allocator slack and library
    workspaces included, not just tensors; it is an upper bound on what the route's tensors needed.  (Where
    clear_refs is not writable it falls back to ru_maxrss, valid because input creation is transient-free;
    the table says which.)  PyTorch's CPU allocator does not cache, so freed tensors leave the RSS.
  * CUDA: torch.cuda.max_memory_allocated() − memory_allocated() after reset_peak_memory_stats(); this is
    tensor memory only (the caching allocator's reserve is not counted).

Timings on a shared machine are only as good as its idleness: the load average is printed with the table.
On a busy CPU, libgomp's default spin-waiting hurts the kernels' many small parallel regions far more than
the dense route's few huge ones; compare with ``OMP_WAIT_POLICY=PASSIVE`` (inherited by the workers).

    python benchmarks/bench_ops.py                       # all routes, fp32, CPU
    python benchmarks/bench_ops.py --dtype bf16 --routes naive logits
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROUTES = ["naive", "logits", "logits-v1", "hidden", "hidden-dense"]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


class _V1Stats:
    def __init__(self, logprob, entropy, sum_p2):
        self.logprob, self.entropy, self.sum_p2 = logprob, entropy, sum_p2


def _worker(args: argparse.Namespace) -> dict:
    import torch

    from entropy_lens import ops

    torch.manual_seed(args.seed)
    device, dtype = torch.device(args.device), getattr(torch, DTYPES[args.dtype])
    n, v, d = args.tokens, args.vocab, args.hidden_size

    def filled(rows: int, cols: int, std: float) -> torch.Tensor:
        x = torch.empty(rows, cols, dtype=dtype, device=device)
        for r0 in range(0, rows, 256):
            x[r0 : r0 + 256].normal_(0.0, std)  # in place: no full-size temporary while creating inputs
        return x

    targets = torch.randint(0, v, (n,), device=device)
    if args.worker in ("naive", "logits", "logits-v1"):
        logits = filled(n, v, 2.0)
    else:
        hidden, weight = filled(n, d, 1.0), filled(v, d, 2.0 / d**0.5)

    def run():
        if args.worker == "naive":
            return ops.naive_token_stats(logits, targets)
        if args.worker == "logits":
            return ops.token_stats_from_logits(logits, targets, chunk_size=args.chunk_size)
        if args.worker == "logits-v1":
            from _kernel_v1 import token_stats_v1

            return _V1Stats(*token_stats_v1(logits, targets, chunk_size=args.chunk_size))
        if args.worker == "hidden":
            return ops.token_stats_from_hidden(hidden, weight, targets, chunk_size=args.chunk_size)
        return ops.naive_token_stats(hidden @ weight.T, targets)

    # One-off initialisation (kernels' lazy setup, thread pools, BLAS) on tiny inputs, charged to no route.
    tiny_z, tiny_t = torch.randn(4, 300, device=device).to(dtype), torch.zeros(4, dtype=torch.long, device=device)
    ops.naive_token_stats(tiny_z, tiny_t)
    ops.token_stats_from_logits(tiny_z, tiny_t, chunk_size=64)
    ops.token_stats_from_hidden(tiny_z, tiny_z[:3], tiny_t.clamp(max=2), chunk_size=2)
    del tiny_z, tiny_t

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        memory_method = "cuda max_memory_allocated"
    else:
        import resource

        base = _status_kb("VmRSS") * 1024
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the RSS high-water mark to the current RSS
            memory_method = "VmHWM after clear_refs"
        except OSError:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            memory_method = "ru_maxrss"

    times = []
    for i in range(1 + args.repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        stats = run()
        if cuda:
            torch.cuda.synchronize()
        if i:  # the first call is the warm-up
            times.append(time.perf_counter() - t0)

    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    elif memory_method == "ru_maxrss":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    else:
        peak = _status_kb("VmHWM") * 1024 - base
    return {
        "route": args.worker,
        "time_s": statistics.median(times),
        "times_s": times,
        "peak_extra_bytes": peak,
        "memory_method": memory_method,
        "mean_entropy": stats.entropy.double().mean().item(),  # the routes must agree on this
        "mean_logprob": stats.logprob.double().mean().item(),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=4096, help="N, tokens scored")
    p.add_argument("--vocab", type=int, default=151936, help="V, vocabulary size (Qwen2.5: 151,936)")
    p.add_argument("--hidden-size", type=int, default=1536, help="D, for the hidden-state routes (1.5B: 1536)")
    p.add_argument("--chunk-size", type=int, default=8192, help="vocabulary chunk of the kernels")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="dtype of logits / hidden / weight")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per route, after one warm-up")
    p.add_argument("--routes", nargs="+", choices=ROUTES, default=ROUTES, help="which routes to run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=ROUTES, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        print(json.dumps(_worker(args)))
        return

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    shared = [
        f"--{k.replace('_', '-')}={getattr(args, k)}"
        for k in ("tokens", "vocab", "hidden_size", "chunk_size", "dtype", "device", "repeats", "seed")
    ]
    load_before = os.getloadavg()
    results = {}
    for route in args.routes:
        print(f"running {route} ...", file=sys.stderr, flush=True)
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), f"--worker={route}", *shared],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode:
            sys.exit(f"route {route} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
        results[route] = json.loads(out.stdout.strip().splitlines()[-1])
    load_after = os.getloadavg()

    any_r = next(iter(results.values()))
    print(
        f"N={args.tokens} tokens × V={args.vocab} vocab, D={args.hidden_size}, dtype={args.dtype}, "
        f"device={args.device}, chunk_size={args.chunk_size}, torch threads={any_r['threads']}, "
        f"median of {args.repeats} after 1 warm-up; peak memory: {any_r['memory_method']}"
    )
    print(
        f"load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}"
    )
    baselines = {"naive": "naive", "logits": "naive", "logits-v1": "logits", "hidden": "hidden-dense", "hidden-dense": "naive"}
    header = f"{'route':<13} {'time s':>9} {'peak extra MB':>14} {'vs':>13} {'time ratio':>11} {'peak ratio':>11}"
    print(header + f" {'mean H':>10} {'mean logp':>10}")
    print("-" * (len(header) + 22))
    for route, r in results.items():
        base = results.get(baselines[route])
        if base and base is not r:
            vs = baselines[route]
            t_ratio = f"{r['time_s'] / base['time_s']:.3f}"
            m_ratio = f"{r['peak_extra_bytes'] / base['peak_extra_bytes']:.4f}"
        else:
            vs, t_ratio, m_ratio = "-", "-", "-"
        print(
            f"{route:<13} {r['time_s']:>9.3f} {r['peak_extra_bytes'] / 2**20:>14.1f} {vs:>13} {t_ratio:>11} "
            f"{m_ratio:>11} {r['mean_entropy']:>10.5f} {r['mean_logprob']:>10.4f}"
        )
    print("all timed calls (s): " + "; ".join(f"{k}: {', '.join(f'{t:.3f}' for t in r['times_s'])}"
                                             for k, r in results.items()))  # fmt: skip
    if "logits-v1" in results and "logits" in results:
        t = results["logits"]["time_s"] / results["logits-v1"]["time_s"]
        print(f"target (logits, five sums, vs logits-v1, three sums: time ≤ 1.15×): {t:.3f}× → "
              f"{'MET' if t <= 1.15 else 'NOT MET'}")
    if "naive" in results and "logits" in results:
        t = results["logits"]["time_s"] / results["naive"]["time_s"]
        m = results["logits"]["peak_extra_bytes"] / results["naive"]["peak_extra_bytes"]
        ok = t <= 1.2 and m <= 1 / 8
        print(
            f"target (logits vs naive: peak ≤ 1/8, time ≤ 1.2×): peak {m:.4f}, time {t:.3f}× → "
            f"{'MET' if ok else 'NOT MET'}"
        )


if __name__ == "__main__":
    main()
