"""`make figures`: the whole paper pipeline on the embedded default, from nothing, on 2 CPU cores.

    python -m figures.make_all --run data/runs/demo [--out figures/out] [--jobs 2] [--scale 1.0]

Stages, each a separate `entropy-lens` process and a file boundary (re-running skips finished work: the
trainer resumes from its latest checkpoint, collect skips finished steps):

1. `train --out RUN/baseline`: SFT warm-up, then GRPO+DAPO (the baseline). Its knee (analysis.stages) is
   the rising → plateau boundary s*.
2. In parallel, `--jobs` at a time, all branched from the baseline:
   - `train --shaping ppl` and `--shaping ppl-high` from the baseline's post-SFT checkpoint (step 0), as
     long as the baseline: the paper ran PPL shaping from the start (paper-notes §3, Fig. R a/b);
   - `train --shaping position` and `--shaping position-begin` from the baseline's checkpoint at s*, to the
     baseline's last step: the paper branched its POSITION runs at the plateau (Fig. R c/d);
   - `collect RUN/baseline --out RUN/baseline/sweep`: every checkpoint on the held-out set, with
     updates (Δp between consecutive swept checkpoints);
3. the bench stage, `--jobs` at a time: `collect RUN/<run> --dataset D --out RUN/<run>/bench-D` on the
   checkpoints Table 1 scores (the baseline's step 0 and the final checkpoint of every run) for each of its
   benchmarks (`arith`, `arith-long`, `arith-wide`), skipping what a store already holds (the sweep has the baseline's
   step 0 on `arith`); see figures/table1.py; in the same pool, `intervene RUN/baseline/sweep`: token
   replacement at high-entropy positions (paper-notes §2.2 H, §2.3 K);
4. every figure script in figures/ (Table 1 included), then figures/FINDINGS.md.

``--scale`` shrinks step counts for a quick look (the miniature end-to-end test uses it); 1.0 is the
documented run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

FIGURE_SCRIPTS = ("fig1_stages", "fig2_rising", "fig3_plateau", "fig4_instance", "fig5_position",
                  "fig_methods", "fig_response", "table1")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "entropy_lens", *args]


def run(name: str, cmd: list[str], log_dir: Path, threads: int | None = None) -> float:
    """Run one stage with its output in LOG_DIR/NAME.log; raise with the log's tail if it fails.

    ``threads`` caps the stage's intra-op threads: stages that run side by side get one core each, since
    two 2-thread torch processes on 2 cores spend their time waiting on each other's threads.
    """
    log = log_dir / f"{name}.log"
    t0 = time.perf_counter()
    print(f"[make_all] {name}: {' '.join(cmd[2:])}", flush=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with open(log, "w") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    dt = time.perf_counter() - t0
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"[make_all] {name} failed (exit {code}) after {dt:.0f}s; log: {log}\n{tail}")
    print(f"[make_all] {name}: done in {dt:.0f}s (log: {log})", flush=True)
    return dt


def run_side_by_side(jobs: dict[str, list[str]], log_dir: Path, n_jobs: int) -> None:
    """Run the stages ``jobs`` (name → command), ``n_jobs`` at a time, one core's worth of threads each."""
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        per_job = max(1, (os.cpu_count() or 1) // n_jobs)
        futures = [pool.submit(run, name, cmd, log_dir, per_job) for name, cmd in jobs.items()]
        for f in futures:
            f.result()


def checkpoint_steps(run_dir: Path) -> list[int]:
    from entropy_lens.checkpoints import discover

    return [c.step for c in discover(run_dir)]


def plateau_branch_step(baseline: Path) -> int:
    """The saved checkpoint nearest the baseline's knee, at or before it (the POSITION branch point)."""
    from entropy_lens.analysis.context import RunView
    from entropy_lens.errors import UserError

    view = RunView.open(baseline)
    if view.boundary is None:
        raise UserError(f"{baseline}: no stage boundary to branch the POSITION runs at ({view.boundary_reason})")
    knee = view.boundary_step
    steps = checkpoint_steps(baseline)
    return max([s for s in steps if s <= knee] or steps[:1])


def draw_figures(run_dir: Path, out: Path, findings: Path) -> None:
    """Stage 4: every figure script (Table 1 included) into ``out``, then FINDINGS.md at ``findings``."""
    for name in FIGURE_SCRIPTS:
        importlib.import_module(f"figures.{name}").main(run_dir, out)
    importlib.import_module("figures.findings").write_findings(run_dir, findings)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="data/runs/demo", help="Experiment folder (created).")
    ap.add_argument("--out", default=str(HERE / "out"), help="Where figures and FINDINGS.md go.")
    ap.add_argument("--jobs", type=int, default=2, help="Stages run at once in step 2 (one per core).")
    ap.add_argument("--scale", type=float, default=1.0, help="Multiply RL/SFT step counts (quick looks, tests).")
    ap.add_argument("--findings", default=str(HERE / "FINDINGS.md"), help="Where FINDINGS.md is written.")
    args = ap.parse_args()

    from entropy_lens.train.config import TrainConfig

    t_start = time.perf_counter()
    run_dir, out = Path(args.run), Path(args.out)
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    base = run_dir / "baseline"
    defaults = TrainConfig()
    rl_steps = max(2, round(defaults.steps * args.scale))
    sft_steps = max(2, round(defaults.sft_steps * args.scale))
    every = max(1, round(defaults.save_every * args.scale)) if args.scale < 1 else defaults.save_every
    sched = ["--steps", str(rl_steps), "--save-every", str(every), "--eval-every", str(every)]

    run("baseline", cli("train", "--out", str(base), "--sft-steps", str(sft_steps), *sched), logs)

    step0 = base / "checkpoints" / "step_0"
    branch = plateau_branch_step(base)
    branch_ckpt = base / "checkpoints" / f"step_{branch}"
    print(f"[make_all] baseline knee → POSITION runs branch at step {branch}", flush=True)
    branch_steps = max(1, rl_steps - branch)
    jobs = {
        # Every checkpoint (10 RL steps apart): Δp is the change over 10 updates, and the rising stage (to
        # the knee near step 33) has the ≥ 3 swept steps that finding A's slope needs.
        "sweep": cli("collect", str(base), "--dataset", "arith", "--out", str(base / "sweep")),
        "ppl": cli("train", "--out", str(run_dir / "ppl"), "--shaping", "ppl", "--from", str(step0), *sched),
        "ppl-high": cli("train", "--out", str(run_dir / "ppl-high"), "--shaping", "ppl-high", "--from", str(step0),
                        *sched),
        "position": cli("train", "--out", str(run_dir / "position"), "--shaping", "position", "--from",
                        str(branch_ckpt), "--steps", str(branch_steps), "--save-every", str(every),
                        "--eval-every", str(every)),
        "position-begin": cli("train", "--out", str(run_dir / "position-begin"), "--shaping", "position-begin",
                              "--from", str(branch_ckpt), "--steps", str(branch_steps), "--save-every",
                              str(every), "--eval-every", str(every)),
    }
    run_side_by_side(jobs, logs, args.jobs)

    # Table 1's checkpoints on its benchmarks, once every run has its final checkpoint; only what no store
    # holds yet (no updates: the table needs samples only)
    table1 = importlib.import_module("figures.table1")
    bench = {f"bench-{r}-{ds}": cli("collect", str(run_dir / r), "--dataset", ds, "--out",
                                    str(table1.bench_dir(run_dir, r, ds)), "--steps", table1.steps_spec(steps),
                                    "--no-updates")
             for r, ds, steps in table1.collects_needed(run_dir)}
    # ... side by side with the interventions, which need only the sweep
    t_bench = time.perf_counter()
    run_side_by_side({"intervene": cli("intervene", str(base / "sweep"), "--out",
                                       str(run_dir / "interventions.parquet")), **bench}, logs, args.jobs)
    print(f"[make_all] bench stage: {len(bench)} collect(s) and the interventions in "
          f"{time.perf_counter() - t_bench:.0f}s", flush=True)

    draw_figures(run_dir, out, Path(args.findings))
    print(f"[make_all] figures in {out}; findings in {args.findings}; "
          f"total {time.perf_counter() - t_start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
