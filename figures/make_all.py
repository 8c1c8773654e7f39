"""`make figures`: the whole paper pipeline on the embedded default, from nothing, on 2 CPU cores.

    python -m figures.make_all --run data/runs/demo [--out figures/out] [--jobs 2] [--seeds 3] [--scale 1.0]

Each stage is a separate `entropy-lens` process and a file boundary; a stage starts as soon as the stages
it reads have finished, ``--jobs`` at a time with one core's worth of threads each (re-running skips
finished work: the trainer resumes from its latest checkpoint, collect skips finished steps):

1. ``sft``: `train --out RUN/baseline --steps 0`, the SFT warm-up alone (every core: nothing else can run).
2. The RL runs, all from the post-SFT checkpoint ``RUN/baseline/checkpoints/step_0``:
   - ``baseline`` (seed 0, resuming RUN/baseline) and ``baseline-seed1``, ``baseline-seed2`` (``--seed``
     1, 2): the GRPO baseline on three seeds.  The seeds share the warm-up; their RL steps (sampling, the
     held-out evaluation) draw from different seeds, and each gets its own stage boundary;
   - ``ppl`` and ``ppl-high``, as long as the baseline: the paper ran PPL shaping from the start
     (paper-notes §3, Fig. R a/b);
   - ``position`` and ``position-begin`` from seed 0's checkpoint at its stage boundary, to the baseline's
     last step: the paper branched its POSITION runs at the plateau (Fig. R c/d).  Method runs are one seed.
3. Per baseline seed: ``sweep`` (`collect` every checkpoint on the held-out set, with updates: Δp between
   consecutive checkpoints) and ``intervene`` (token replacement at high-entropy positions, paper-notes §2.2
   H, §2.3 K) on it.
4. ``bench``: `collect RUN/<run> --dataset D` on the checkpoints Table 1 scores (the baseline's step 0 and
   the final checkpoint of every run) for each of its benchmarks (`arith`, `arith-long`, `arith-wide`),
   skipping what a store already holds (figures/table1.py).
5. Every figure script in figures/ (Table 1 included; figures/draw_all.py) and, side by side with it,
   figures/FINDINGS.md with each verdict per seed (figures/findings.py).

The run ends with a table of every stage's start and duration.  ``--scale`` shrinks step counts for a
quick look (the miniature end-to-end test uses it); 1.0 is the documented run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from figures.figlib import seed_runs

HERE = Path(__file__).resolve().parent


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "entropy_lens", *args]


@dataclass
class Stage:
    """One step of the pipeline: ``command()`` is built when the stage starts (so it may read what the stages
    in ``after`` wrote) and returns None when there is nothing left to do; ``threads``: torch threads (None:
    one core's share)."""

    name: str
    command: Callable[[], list[str] | None]
    after: tuple[str, ...] = ()
    threads: int | None = None


@dataclass
class Timing:
    name: str
    start: float
    seconds: float
    skipped: bool = False


def run_stage(stage: Stage, log_dir: Path, threads: int, t0: float) -> Timing:
    """Run one stage with its output in LOG_DIR/NAME.log; raise with the log's tail if it fails."""
    start = time.perf_counter()
    cmd = stage.command()
    if cmd is None:
        print(f"[make_all] {stage.name}: nothing to do", flush=True)
        return Timing(stage.name, start - t0, 0.0, skipped=True)
    log = log_dir / f"{stage.name}.log"
    print(f"[make_all] {stage.name}: {' '.join(cmd[2:])}", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(stage.threads or threads))
    with open(log, "w") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    dt = time.perf_counter() - start
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"[make_all] {stage.name} failed (exit {code}) after {dt:.0f}s; log: {log}\n{tail}")
    print(f"[make_all] {stage.name}: done in {dt:.0f}s (log: {log})", flush=True)
    return Timing(stage.name, start - t0, dt)


def run_stages(stages: list[Stage], log_dir: Path, jobs: int, t0: float) -> list[Timing]:
    """Run every stage once the stages in its ``after`` are done, ``jobs`` at a time, in list order among
    the ready ones."""
    names = {s.name for s in stages}
    unknown = sorted({a for s in stages for a in s.after if a not in names})
    if unknown:
        raise ValueError(f"stages wait on unknown stages: {unknown}")
    per_job = max(1, (os.cpu_count() or 1) // jobs)
    pending, running, done, timings = list(stages), {}, set(), []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            for stage in [s for s in pending if set(s.after) <= done][: jobs - len(running)]:
                pending.remove(stage)
                running[pool.submit(run_stage, stage, log_dir, per_job, t0)] = stage
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                timings.append(future.result())
                done.add(running.pop(future).name)
    return timings


def checkpoint_steps(run_dir: Path) -> list[int]:
    from entropy_lens.checkpoints import discover

    return [c.step for c in discover(run_dir)]


def plateau_branch_step(baseline: Path) -> int:
    """The saved checkpoint nearest the baseline's stage boundary, at or before it (the POSITION branch point)."""
    from entropy_lens.analysis.context import RunView
    from entropy_lens.errors import UserError

    view = RunView.open(baseline)
    if view.boundary is None:
        raise UserError(f"{baseline}: no stage boundary to branch the POSITION runs at ({view.boundary_reason})")
    steps = checkpoint_steps(baseline)
    return max([s for s in steps if s <= view.boundary_step] or steps[:1])


#: The method runs feed findings I, L and M, which read their training logs only; the per-token entropy account
#: (N, O) is measured on the baseline seeds.  So the method runs skip the realized-change scoring after each
#: update, which costs ~15% of a step (train/config.py).
METHOD_FLAGS = ("--no-score-after-update",)


def training_stages(run_dir: Path, n_seeds: int, sched: list[str]) -> list[Stage]:
    """Stages 1–2: the warm-up, the baseline seeds and the four method runs (see the module docstring)."""
    base = run_dir / "baseline"
    step0 = str(base / "checkpoints" / "step_0")
    stages = [Stage("sft", lambda: cli("train", "--out", str(base), *sched, "--steps", "0"), threads=os.cpu_count()),
              Stage("baseline", lambda: cli("train", "--out", str(base), *sched), ("sft",))]
    for s, name in enumerate(seed_runs(n_seeds)[1:], start=1):
        stages.append(Stage(name, lambda name=name, s=s: cli("train", "--out", str(run_dir / name), "--from", step0,
                                                             "--seed", str(s), *sched), ("sft",)))
    for shaping in ("ppl", "ppl-high"):
        stages.append(Stage(shaping, lambda shaping=shaping: cli(
            "train", "--out", str(run_dir / shaping), "--shaping", shaping, "--from", step0, *sched, *METHOD_FLAGS),
            ("sft",)))

    def branched(shaping: str) -> list[str]:
        step = plateau_branch_step(base)
        rl_steps = int(sched[sched.index("--steps") + 1])
        print(f"[make_all] {shaping}: branches at step {step}, seed 0's stage boundary", flush=True)
        return cli("train", "--out", str(run_dir / shaping), "--shaping", shaping, "--from",
                   str(base / "checkpoints" / f"step_{step}"), *sched, "--steps", str(max(1, rl_steps - step)),
                   *METHOD_FLAGS)

    stages += [Stage(shaping, lambda shaping=shaping: branched(shaping), ("baseline",))
               for shaping in ("position", "position-begin")]
    return stages


def collect_stages(run_dir: Path, n_seeds: int, methods: list[str]) -> list[Stage]:
    """Stages 3–4: per seed its sweep and interventions; the bench collects of Table 1."""
    table1 = importlib.import_module("figures.table1")
    stages = []
    for name in seed_runs(n_seeds):
        run = run_dir / name
        stages.append(Stage(f"sweep-{name}", lambda run=run: cli("collect", str(run), "--dataset", "arith", "--out",
                                                                 str(run / "sweep")), (name,)))
        stages.append(Stage(f"intervene-{name}", lambda run=run: cli(
            "intervene", str(run / "sweep"), "--out", str(run / "interventions.parquet")), (f"sweep-{name}",)))

    def bench(run: str, dataset: str) -> list[str] | None:
        need = [steps for r, ds, steps in table1.collects_needed(run_dir) if (r, ds) == (run, dataset)]
        if not need:
            return None
        return cli("collect", str(run_dir / run), "--dataset", dataset, "--out",
                   str(table1.bench_dir(run_dir, run, dataset)), "--steps", table1.steps_spec(need[0]), "--no-updates")

    for run in ["baseline", *methods]:
        after = (run, "sweep-baseline") if run == "baseline" else (run,)
        stages += [Stage(f"bench-{run}-{ds}", lambda run=run, ds=ds: bench(run, ds), after)
                   for ds in table1.BENCHMARKS]
    return stages


def drawing_stages(run_dir: Path, out: Path, findings: Path, after: list[str]) -> list[Stage]:
    """Stage 5, once every stage in ``after`` is done: every figure script (Table 1 included) into ``out``
    (figures/draw_all.py) and FINDINGS.md at ``findings``, side by side."""
    return [Stage("figures", lambda: [sys.executable, "-m", "figures.draw_all", "--run", str(run_dir), "--out", str(out)],
                  tuple(after)),
            Stage("findings", lambda: [sys.executable, "-m", "figures.findings", "--run", str(run_dir), "--out",
                                       str(findings)], tuple(after))]


def print_timings(timings: list[Timing], total: float) -> None:
    print("\n[make_all] stage times (start and duration, seconds from the start of make_all):", flush=True)
    print(f"  {'stage':<32} {'start':>7} {'seconds':>8}")
    for t in sorted(timings, key=lambda t: t.start):
        print(f"  {t.name:<32} {t.start:7.0f} {'skipped' if t.skipped else f'{t.seconds:8.0f}':>8}")
    print(f"  {'total':<32} {'':>7} {total:8.0f}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="data/runs/demo", help="Experiment folder (created).")
    ap.add_argument("--out", default=str(HERE / "out"), help="Where figures and FINDINGS.md go.")
    ap.add_argument("--jobs", type=int, default=2, help="Stages run at once (one per core).")
    ap.add_argument("--seeds", type=int, default=3, help="Baseline seeds (0 … N − 1).")
    ap.add_argument("--scale", type=float, default=1.0, help="Multiply RL/SFT step counts (quick looks, tests).")
    ap.add_argument("--findings", default=str(HERE / "FINDINGS.md"), help="Where FINDINGS.md is written.")
    args = ap.parse_args()

    from entropy_lens.train.config import TrainConfig

    t0 = time.perf_counter()
    run_dir, out = Path(args.run), Path(args.out)
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    defaults = TrainConfig()
    scaled = lambda n, least=1: max(least, round(n * args.scale)) if args.scale < 1 else n  # noqa: E731
    sched = ["--steps", str(scaled(defaults.steps, 2)), "--sft-steps", str(scaled(defaults.sft_steps, 2)),
             "--save-every", str(scaled(defaults.save_every)), "--eval-every", str(scaled(defaults.eval_every))]
    methods = ["ppl", "ppl-high", "position", "position-begin"]
    stages = training_stages(run_dir, args.seeds, sched) + collect_stages(run_dir, args.seeds, methods)
    stages += drawing_stages(run_dir, out, Path(args.findings), [s.name for s in stages])
    timings = run_stages(stages, logs, args.jobs, t0)
    print_timings(timings, time.perf_counter() - t0)
    print(f"[make_all] figures in {out}; findings in {args.findings}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
