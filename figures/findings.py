"""FINDINGS.md: each finding of the paper (PAPER §0, §2, §3), what this run shows, and a verdict.

``write_findings(run_dir, out_path)`` reads the run layout of figures/README.md.  Findings A–H, J, K come
from :func:`entropy_lens.analysis.report.build_report` on the baseline's sweep (with the baseline training
run for curves and the stage boundary, and RUN/interventions.parquet); I, L and M compare the training
logs of the method runs.  Each verdict is "agrees", "does not agree" or "not measured (why)", decided by the
rule printed under it (:data:`entropy_lens.analysis.report.RULES`).  A finding this run does not reproduce
is reported, not hidden.
Usage: python figures/findings.py --run data/runs/demo [--out figures/out/FINDINGS.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _figlib as F  # noqa: E402
from entropy_lens.analysis import report as R  # noqa: E402


def evaluate(run_dir) -> tuple[list[R.Finding], list[str]]:
    """All findings for ``run_dir`` (sorted by letter) and notes on where the inputs came from."""
    lay = F.Layout(Path(run_dir))
    notes: list[str] = []
    found: dict[str, R.Finding] = {}
    sweep, base_dir = lay.sweep(), lay.run_dir("baseline")
    store_dir = sweep.root if sweep is not None else base_dir
    if store_dir is None:
        for k in "ABCDEFGHJK":
            found[k] = R.not_measured(k, f"no baseline store or sweep under {run_dir}")
    else:
        base = lay.run("baseline")
        train = base_dir if base is not None and base_dir != store_dir and base.manifest.get("kind") == "train" else None
        iv = Path(run_dir) / "interventions.parquet"
        with tempfile.TemporaryDirectory() as tmp:
            rep = R.build_report(store_dir, tmp, train_run=train, interventions=iv if iv.is_file() else None,
                                 draw_figures=False)
        found.update({f.key: f for f in rep.findings})
        notes.append(f"Per-token findings from `{store_dir}`" + (f" with the training run `{train}`" if train else "") + ".")
        if rep.boundary is not None:
            how = "manual" if rep.boundary.detector == "manual" else f"detector `{rep.boundary.detector}`"
            notes.append(f"Stage boundary: step {rep.boundary.step} ({how}).")
        else:
            notes.append("Stage boundary: none (too few steps); stage-specific findings pool all steps.")
        notes += [f"Skipped in the report — {n}: {w}." for n, w in rep.skipped]
    runs = {n: lay.steps(n) for n in F.RUNS if lay.steps(n) is not None}
    base = runs.get("baseline")
    start = R.late_start(base, lay.boundary()) if base is not None else None
    notes.append(f"Training logs found: {', '.join(f'RUN/{n}' for n in runs) or 'none'}; late training = "
                 + (f"steps ≥ {start}." if start is not None else "all steps."))
    found["I"] = R.finding_I(runs, start)
    found["L"] = R.finding_L(runs, start)
    found["M"] = R.finding_M(runs, start)
    return [found[k] for k in sorted(found)], notes


def write_findings(run_dir, out_path) -> Path:
    findings, notes = evaluate(run_dir)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# Findings of Deng et al. (2025) on `{run_dir}`", ""]
    lines += [f"- {n}" for n in notes]
    counts = {v: sum(f.verdict == v for f in findings) for v in (R.AGREES, R.DISAGREES, R.NOT_MEASURED)}
    lines += ["", f"{counts[R.AGREES]} agree, {counts[R.DISAGREES]} do not agree, {counts[R.NOT_MEASURED]} not measured. "
              "Intervals are 95% CIs; the rule under each finding decides its verdict.", "",
              "| | finding | verdict |", "|---|---|---|"]
    lines += [f"| {f.key} | {f.claim} | {f.verdict_text} |" for f in findings]
    lines += ["", "## Details", ""]
    lines += [f.markdown() for f in findings]
    out.write_text("\n".join(lines) + "\n")
    print(f"findings: {out} ({counts[R.AGREES]} agree, {counts[R.DISAGREES]} do not agree, "
          f"{counts[R.NOT_MEASURED]} not measured)")
    return out


def main(run_dir, out_dir="figures/out") -> list[Path]:
    return [write_findings(run_dir, Path(out_dir) / "FINDINGS.md")]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="data/runs/demo")
    ap.add_argument("--out", default="figures/out/FINDINGS.md")
    a = ap.parse_args()
    if not Path(a.run).is_dir():
        print(f"{a.run}: no such run folder; run `make figures` first or pass --run")
        sys.exit(2)
    write_findings(a.run, a.out)
