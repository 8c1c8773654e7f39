"""GRPO+PPL at several strengths α: does low-PPL emphasis do anything, and from which α? (paper-notes §4.1)

The paper's α = 0.01 keeps the weight clamp(1 − α·w_ppl, 0.8, 1.2) within about [0.98, 1.02], so the
shaped run can hardly differ from GRPO; the paper's α ablation is not known (paper-notes §4.1 suggests
sweeping α ∈ {0.01, 0.05, 0.1, 0.2}).  This script runs that sweep on the embedded default:

    python -m figures.ppl_alpha --run data/runs/demo [--alphas 0.01 0.05 0.1 0.2] [--jobs 2] [--out figures/out]
    make ppl-alpha                                   # the same, after `make figures`

1. For each α, ``entropy-lens train --shaping ppl --ppl-alpha α --from RUN/baseline/checkpoints/step_0`` as
   long as the baseline, into ``RUN/ppl-alpha/<α>``.  A run that already has those settings is reused
   (``RUN/ppl``, make figures' run at the default α, is one); an unfinished one resumes.
2. ``entropy-lens collect`` of each final checkpoint (and the baseline's) on ``arith``, 8 samples a problem,
   unless Table 1's stores already hold it.
3. ``OUT/ppl_alpha.md``: per α, how much the shaper changed the advantages it trained on
   (:func:`entropy_lens.analysis.advantages.shaping_effect`), Acc@8 with its CI and its paired difference
   from GRPO (:mod:`entropy_lens.analysis.benchmarks`), and the mean batch entropy of the plateau;
   ``OUT/figR_ppl_alpha.png``: held-out accuracy and entropy vs step for GRPO and each α.

Not part of ``make figures`` (each α is one more 100-step run: about 6 minutes on one core).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

import entropy_lens
from entropy_lens.analysis.advantages import shaping_effect
from entropy_lens.analysis.benchmarks import benchmark_table, paired_differences
from entropy_lens.errors import UserError
from entropy_lens.plots import methods as method_plots
from figures import table1
from figures.figlib import RUNS, Figures, Layout
from figures.make_all import Stage, cli, run_stages

HERE = Path(__file__).resolve().parent
DATASET = "arith"
GRPO = RUNS["baseline"]


def label(alpha: float) -> str:
    return f"GRPO+PPL α={alpha:g}"


def run_settings(run_dir: Path, run: str) -> dict:
    p = Path(run_dir) / run
    return entropy_lens.open(p).manifest.get("settings", {}) if (p / "lens.json").is_file() else {}


def run_for(run_dir: Path, alpha: float, step0: Path) -> str:
    """The run (a path under RUN) holding GRPO+PPL at ``alpha`` branched from ``step0``: an existing one
    with those settings, else ``ppl-alpha/<α>``."""
    for name in ("ppl", f"ppl-alpha/{alpha:g}"):
        s = run_settings(run_dir, name)
        if s.get("shaping") == "ppl" and s.get("ppl_alpha") == alpha and s.get("init_from") == str(step0):
            return name
    return f"ppl-alpha/{alpha:g}"


def train_and_collect(run_dir: Path, alphas: list[float], jobs: int) -> dict[str, str]:
    """Steps 1 and 2 of the module docstring; returns label → run."""
    base = run_dir / "baseline"
    final = table1.final_step(run_dir, "baseline")
    step0 = base / "checkpoints" / "step_0"
    if final is None or not step0.is_dir():
        raise UserError(f"{base}: no trained baseline with a step_0 checkpoint; run `make figures` (or "
                        f"`entropy-lens train --out {base}`) first")
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs = {GRPO: "baseline"} | {label(a): run_for(run_dir, a, step0) for a in alphas}
    trains = {f"ppl-alpha-{a:g}": cli("train", "--out", str(run_dir / runs[label(a)]), "--shaping", "ppl",
                                     "--ppl-alpha", str(a), "--from", str(step0), "--steps", str(final),
                                     "--save-every", "10", "--eval-every", "10")
              for a in alphas if table1.final_step(run_dir, runs[label(a)]) != final}
    t0 = time.perf_counter()
    if trains:
        run_stages([Stage(name, lambda cmd=cmd: cmd) for name, cmd in trains.items()], logs, jobs, t0)
    collects = {f"bench-{run.replace('/', '-')}-{DATASET}":
                cli("collect", str(run_dir / run), "--dataset", DATASET, "--out",
                    str(table1.bench_dir(run_dir, run, DATASET)), "--steps", str(final), "--no-updates")
                for run in runs.values() if table1.find_store(run_dir, run, DATASET, final) is None}
    if collects:
        run_stages([Stage(name, lambda cmd=cmd: cmd) for name, cmd in collects.items()], logs, jobs, t0)
    return runs


def summary(run_dir: Path, runs: dict[str, str], boundary=None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(per-run table, paired differences from GRPO, long step curves) from the stores of ``runs``; the
    plateau starts at ``boundary`` (default: the stage boundary of the baseline's curves)."""
    if boundary is None:
        boundary = Layout(run_dir).boundary
    frames, rows, curves = [], [], []
    for lab, run in runs.items():
        store = entropy_lens.open(run_dir / run)
        final = table1.final_step(run_dir, run)
        bench = table1.find_store(run_dir, run, DATASET, final)
        if bench is None:
            raise UserError(f"{run_dir / run}: no collect store with step {final} on {DATASET} (the collect "
                            f"stage writes {table1.bench_dir(run_dir, run, DATASET)}; see {run_dir / 'logs'})")
        frames.append(bench.samples.filter(pl.col("step") == final).with_columns(pl.lit(lab).alias("label")))
        steps = store.steps.collect()
        eff = shaping_effect(tokens=store.tokens).row(0, named=True)
        plateau = steps.filter(pl.col("step") >= (boundary.step if boundary is not None else 0))
        rows.append({"label": lab, "run": run, "alpha": store.manifest["settings"].get("ppl_alpha")
                     if lab != GRPO else None, "final_step": final,
                     "plateau_entropy": plateau["entropy"].mean(), **eff})
        curves.append(steps.select(pl.col("step").cast(pl.Int64), "eval_accuracy", "entropy")
                      .with_columns(pl.lit(lab).alias("run")))
    samples = pl.concat(frames, how="vertical_relaxed")
    scores = benchmark_table(samples=samples, k=table1.K).select(
        "label", "n_problems", "acc_at_k", "acc_at_k_ci_low", "acc_at_k_ci_high")
    diffs = paired_differences(samples=samples, reference=GRPO, k=table1.K).filter(pl.col("score") == "acc_at_k")
    table = pl.DataFrame(rows).join(scores, on="label", how="left")
    return table, diffs, pl.concat(curves, how="diagonal")


def markdown(run_dir: Path, table: pl.DataFrame, diffs: pl.DataFrame, boundary) -> str:
    d = {r["label"]: r for r in diffs.iter_rows(named=True)}
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [f"# GRPO+PPL at several α on `{run_dir}`", "",
             "Ã = A·clamp(1 − α·w_ppl, 0.8, 1.2), every run branched from the baseline's step 0 and trained as "
             f"long as it. Acc@{table1.K} on `{DATASET}` at the final step, 95% bootstrap CI over problems; Δ "
             "paired by problem. *Changed*: share of trained tokens whose advantage moved (|Ã − A| > 1e-6·|A|); "
             "*rel. change*: Σ|Ã − A| / Σ|A|; *Ã/A*: the 5–95% range of the token ratio. Plateau entropy: mean "
             f"batch entropy from the stage boundary (step {getattr(boundary, 'step', '–')}) on.", "",
             f"| run | α | changed | rel. change | Ã/A (5–95%) | Acc@{table1.K} | Δ vs GRPO (pp) | plateau entropy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.iter_rows(named=True):
        g = d.get(r["label"])
        delta = "—" if g is None else f"{100 * g['estimate']:+.1f} [{100 * g['ci_low']:+.1f}, {100 * g['ci_high']:+.1f}]"
        alpha = "—" if r["alpha"] is None else f"{r['alpha']:g}"
        lines.append(f"| {r['label']} (`RUN/{r['run']}`) | {alpha} | "
                     f"{pct(r['share_changed'])}% | {r['rel_abs_change']:.4f} | "
                     f"{r['ratio_q05']:.3f}–{r['ratio_q95']:.3f} | "
                     f"{pct(r['acc_at_k'])} [{pct(r['acc_at_k_ci_low'])}, {pct(r['acc_at_k_ci_high'])}] | "
                     f"{delta} | {r['plateau_entropy']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="data/runs/demo", help="make figures' experiment folder (has baseline/).")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.2], help="PPL α values.")
    ap.add_argument("--jobs", type=int, default=2, help="Runs trained at once (one core each).")
    ap.add_argument("--out", default=str(HERE / "out"), help="Where ppl_alpha.md and the figure go.")
    args = ap.parse_args()
    t0 = time.perf_counter()
    run_dir, out = Path(args.run), Path(args.out)
    try:
        runs = train_and_collect(run_dir, args.alphas, args.jobs)
        boundary = Layout(run_dir).boundary
        table, diffs, curves = summary(run_dir, runs, boundary)
    except UserError as e:
        print(f"ppl_alpha: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    md = out / "ppl_alpha.md"
    md.write_text(markdown(run_dir, table, diffs, boundary))
    figs = Figures("ppl_alpha", out)
    figs.save("figR_ppl_alpha", method_plots.plot_method_curves(curves, metrics=("eval_accuracy", "entropy"),
                                                                boundary=None if boundary is None else boundary.step))
    figs.done()
    print(f"ppl_alpha: wrote {md}; total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
