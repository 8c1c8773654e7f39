"""Table 1: Acc@8 / Maj@8 / Pass@8 of the base model, GRPO and the shaping methods on each benchmark.

Rows (paper-notes §3 Table 1, plus the two ablations): the base model = the baseline's step 0 (after the SFT
warm-up), GRPO = the baseline's final checkpoint, and the final checkpoints of GRPO+PPL, GRPO+POSITION,
GRPO+high-PPL and GRPO+POSITION-begin.  Columns, per benchmark (:data:`BENCHMARKS`): ``arith``, the held-out
set of the training distribution; ``arith-long``, longer chains than any trained on, and ``arith-wide``,
operands twice training's range (both out of domain).
Scores come from :func:`entropy_lens.analysis.benchmarks.benchmark_table` on collect stores:
``RUN/<run>/bench-<dataset>/`` (written by make_all's bench stage, :func:`collects_needed`) and, for the
baseline on ``arith``, the sweep ``RUN/baseline/sweep`` when it holds the step.  A row or cell whose store
is missing is left out and named under "Skipped"; nothing is made up.

Writes ``OUT/table1.md`` and ``OUT/table1.csv``.
Usage: python -m figures.table1 --run data/runs/demo [--out figures/out]
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl

import entropy_lens
from entropy_lens.analysis.benchmarks import benchmark_table, paired_differences
from entropy_lens.checkpoints import discover
from entropy_lens.errors import UserError
from figures.figlib import RUNS, cli

# eval set (a registered task) → what it stands for in the table
BENCHMARKS = {"arith": "in-domain: 2–3 operations, as trained", "arith-long": "out-of-domain: 4 operations",
              "arith-wide": "out-of-domain: operands up to 40"}
K = 8  # samples per problem: Acc@8, Maj@8, Pass@8
FINAL = "final"  # a row's step: the run's last checkpoint


@dataclass(frozen=True)
class Row:
    label: str
    run: str  # run name in the layout (figures/README.md)
    step: int | str  # a checkpoint step, or FINAL


ROWS = (
    Row("base model (post-SFT)", "baseline", 0),
    Row(RUNS["baseline"], "baseline", FINAL),
    Row(RUNS["ppl"], "ppl", FINAL),
    Row(RUNS["position"], "position", FINAL),
    Row(RUNS["ppl-high"], "ppl-high", FINAL),
    Row(RUNS["position-begin"], "position-begin", FINAL),
)
REFERENCE = RUNS["baseline"]  # differences are against GRPO, as in the paper
# collect settings that change the scores; stores read together must agree on them
SCORE_SETTINGS = ("samples_per_prompt", "max_new_tokens", "temperature", "top_p", "seed", "chat_template")


def bench_dir(run_dir: Path, run: str, dataset: str) -> Path:
    """Where make_all's bench stage writes the collect store of ``run`` on ``dataset``."""
    return Path(run_dir) / run / f"bench-{dataset}"


def checkpoint_steps(run_dir: Path, run: str) -> list[int]:
    """Steps of the run's checkpoints, in order; empty when it has none."""
    try:
        return [c.step for c in discover(Path(run_dir) / run)]
    except UserError:
        return []


def final_step(run_dir: Path, run: str) -> int | None:
    """The step of the run's last checkpoint, None when the run has no checkpoints."""
    steps = checkpoint_steps(run_dir, run)
    return steps[-1] if steps else None


def row_step(run_dir: Path, row: Row) -> int | None:
    return final_step(run_dir, row.run) if row.step == FINAL else int(row.step)


def candidate_stores(run_dir: Path, run: str, dataset: str) -> list[Path]:
    """Collect stores that may hold ``run`` on ``dataset``, in the order they are tried."""
    out = [bench_dir(run_dir, run, dataset)]
    if run == "baseline":
        out += [Path(run_dir) / "baseline" / "sweep", Path(run_dir) / "sweep"]
    return [p for p in out if (p / "lens.json").is_file()]


@functools.cache
def expected_fingerprint(dataset: str) -> str | None:
    """The fingerprint of the registered eval set today: a store of other problems is not read."""
    from entropy_lens.tasks import load_eval_set

    try:
        return load_eval_set(dataset).fingerprint
    except UserError:
        return None


def find_store(run_dir: Path, run: str, dataset: str, step: int):
    """The first candidate store with ``step`` completed on ``dataset`` (its problems unchanged), else None."""
    want = expected_fingerprint(dataset)
    for p in candidate_stores(run_dir, run, dataset):
        store = entropy_lens.open(p)
        settings = store.manifest.get("settings", {})
        if settings.get("dataset") != dataset or (want and settings.get("dataset_fingerprint") != want):
            continue
        if step in store.completed_steps:
            return store
    return None


def collects_needed(run_dir: Path) -> list[tuple[str, str, list[int]]]:
    """``(run, dataset, steps)`` that no store holds yet and a checkpoint of the run can give."""
    need: dict[tuple[str, str], list[int]] = {}
    for row in ROWS:
        step = row_step(run_dir, row)
        if step is None or step not in checkpoint_steps(run_dir, row.run):
            continue
        for dataset in BENCHMARKS:
            if find_store(run_dir, row.run, dataset, step) is None:
                need.setdefault((row.run, dataset), []).append(step)
    return [(run, ds, sorted(set(steps))) for (run, ds), steps in need.items()]


def steps_spec(steps: list[int]) -> str:
    """A ``collect --steps`` filter selecting exactly ``steps`` (one step, or two: START:STOP:STOP−START)."""
    steps = sorted(set(steps))
    if len(steps) == 1:
        return str(steps[0])
    if len(steps) == 2:
        return f"{steps[0]}:{steps[1]}:{steps[1] - steps[0]}"
    raise ValueError(f"no single --steps filter for {steps}")


def gather(run_dir: Path) -> tuple[pl.LazyFrame | None, list[dict], list[str]]:
    """Samples of every table cell (with ``label`` and ``dataset``), where each came from, and what is missing."""
    frames, sources, skipped = [], [], []
    for row in ROWS:
        if not (Path(run_dir) / row.run).is_dir():
            skipped.append(f"{row.label}: no run `RUN/{row.run}`")
            continue
        step = row_step(run_dir, row)
        if step is None:
            skipped.append(f"{row.label}: `RUN/{row.run}` has no checkpoints, so no final step")
            continue
        for dataset in BENCHMARKS:
            store = find_store(run_dir, row.run, dataset, step)
            if store is None:
                skipped.append(f"{row.label} on {dataset}: no collect store with step {step} of `{dataset}` "
                               f"(looked for `{bench_dir(run_dir, row.run, dataset)}`"
                               + (" and the baseline's sweep" if row.run == "baseline" else "")
                               + "; make_all's bench stage writes it)")
                continue
            settings = store.manifest.get("settings", {})
            frames.append(store.samples.filter(pl.col("step") == step)
                          .with_columns(pl.lit(row.label).alias("label"), pl.lit(dataset).alias("dataset")))
            sources.append(dict(label=row.label, dataset=dataset, step=step, store=str(store.root),
                                **{k: settings.get(k) for k in SCORE_SETTINGS}))
    return (pl.concat(frames, how="vertical_relaxed") if frames else None), sources, skipped


def _pct(x) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f}"


def _cell(r: dict | None, score: str, with_ci: bool) -> str:
    if r is None:
        return "—"
    if not with_ci:
        return _pct(r[score])
    return f"{_pct(r[score])} [{_pct(r[f'{score}_ci_low'])}, {_pct(r[f'{score}_ci_high'])}]"


def markdown(run_dir, table: pl.DataFrame, diffs: pl.DataFrame | None, sources: list[dict],
             skipped: list[str]) -> str:
    cells = {(r["label"], r["dataset"]): r for r in table.iter_rows(named=True)}
    steps = {s["label"]: s["step"] for s in sources}
    lines = [f"# Table 1 on `{run_dir}`: Acc@{K} / Maj@{K} / Pass@{K}", ""]
    lines += [f"Percent over the problems of each eval set, {K} samples per problem; Acc@{K} with its 95% "
              "bootstrap CI over problems. Acc@k = mean share of correct samples; Maj@k = majority vote over "
              "the parsed answers (missing answers cast no vote; a tie scores the share of tied answers that "
              "are correct); Pass@k = 1 − C(n−c,k)/C(n,k) (any correct, with n = k). "
              "Definitions: `entropy_lens/analysis/benchmarks.py`.", ""]
    for ds, what in BENCHMARKS.items():
        n = sorted({r["n_problems"] for r in cells.values() if r["dataset"] == ds})
        lines.append(f"- `{ds}` ({what}): {', '.join(map(str, n)) or 'no'} problems.")
    lines.append("")
    head = ["method", "step"] + [f"{ds} {m}@{K}" for ds in BENCHMARKS for m in ("Acc", "Maj", "Pass")]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        if row.label not in steps:
            continue
        vals = []
        for ds in BENCHMARKS:
            r = cells.get((row.label, ds))
            vals += [_cell(r, "acc_at_k", True), _cell(r, "maj_at_k", False), _cell(r, "pass_at_k", False)]
        lines.append("| " + " | ".join([row.label, str(steps[row.label]), *vals]) + " |")
    if diffs is not None and diffs.height:
        lines += ["", f"Difference from {REFERENCE} (percentage points, paired by problem, 95% bootstrap CI, "
                      "n = problems):", "",
                  "| method | benchmark | ΔAcc@8 | ΔMaj@8 | ΔPass@8 | n |", "|---|---|---|---|---|---|"]
        d = {(r["label"], r["dataset"], r["score"]): r for r in diffs.iter_rows(named=True)}
        for row in ROWS:
            for ds in BENCHMARKS:
                got = [d.get((row.label, ds, s)) for s in ("acc_at_k", "maj_at_k", "pass_at_k")]
                if got[0] is None:
                    continue
                fmt = [f"{100 * g['estimate']:+.1f} [{100 * g['ci_low']:+.1f}, {100 * g['ci_high']:+.1f}]"
                       if g['ci_low'] == g['ci_low'] else f"{100 * g['estimate']:+.1f}" for g in got]
                lines.append(f"| {row.label} | {ds} | " + " | ".join(fmt) + f" | {got[0]['n_problems']} |")
    settings = {tuple((k, s[k]) for k in SCORE_SETTINGS) for s in sources}
    lines += ["", "## Sources", ""]
    lines += [f"- {s['label']} on {s['dataset']}: step {s['step']} of `{s['store']}`" for s in sources]
    if len(settings) > 1:
        lines.append("- **Warning: the stores were collected with different settings** "
                     + "; ".join(", ".join(f"{k}={v}" for k, v in st) for st in sorted(settings, key=str)))
    elif settings:
        lines.append("- Collect settings: " + ", ".join(f"{k}={v}" for k, v in next(iter(settings))))
    lines += ["", "## Skipped", ""]
    lines += [f"- {s}" for s in skipped] or ["- nothing"]
    return "\n".join(lines) + "\n"


def main(run_dir, out_dir="figures/out") -> list[Path]:
    run_dir, out = Path(run_dir), Path(out_dir)
    samples, sources, skipped = gather(run_dir)
    for s in skipped:
        print(f"table1: skipped {s}")
    out.mkdir(parents=True, exist_ok=True)
    if samples is None:
        table, diffs = pl.DataFrame(), None
    else:
        table = benchmark_table(samples=samples, k=K)
        labels = table["label"].unique().to_list()
        diffs = paired_differences(samples=samples, reference=REFERENCE, k=K) if REFERENCE in labels else None
        src = pl.DataFrame(sources).select("label", "dataset", "step", "store")
        table = table.join(src, on=["label", "dataset", "step"], how="left")
        order = {r.label: i for i, r in enumerate(ROWS)}
        table = table.sort(pl.col("label").replace_strict(order, return_dtype=pl.Int64), "dataset")
    csv, md = out / "table1.csv", out / "table1.md"
    table.write_csv(csv)
    md.write_text(markdown(run_dir, table, diffs, sources, skipped) if samples is not None else
                  f"# Table 1 on `{run_dir}`\n\nNo scores: every row was skipped.\n\n## Skipped\n\n"
                  + "\n".join(f"- {s}" for s in skipped) + "\n")
    print(f"table1: wrote {md} and {csv} ({table.height} cells, {len(skipped)} skipped)")
    return [md, csv]


if __name__ == "__main__":
    sys.exit(cli(main, __doc__))
