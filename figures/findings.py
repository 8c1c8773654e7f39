"""FINDINGS.md: each finding of the paper (paper-notes §0, §2, §3), what this run shows, and a verdict.

``write_findings(run_dir, out_path)`` reads the run layout of figures/README.md.  Findings A–H, J, K come
from the report (:func:`entropy_lens.report.build.write_report`) on the run's RunView: the baseline's sweep
with the baseline training run for curves and the stage boundary, and RUN/interventions.parquet; I, L and M
compare the training logs of the method runs from the run's late-training start.  Each verdict is
"agrees", "does not agree" or "not measured (why)", decided by the rule printed under it
(:data:`entropy_lens.analysis.findings.RULES`).  A finding this run does not reproduce is reported, not hidden.
Usage: python -m figures.findings --run data/runs/demo [--out figures/out/FINDINGS.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from entropy_lens.analysis.context import INTERVENTIONS_FILE
from entropy_lens.analysis.findings import (
    AGREES,
    DISAGREES,
    NOT_MEASURED,
    Finding,
    finding_I,
    finding_L,
    finding_M,
    not_measured,
)
from entropy_lens.report.build import write_report
from entropy_lens.report.sections import ReportSettings
from figures.figlib import RUNS, Layout


def evaluate(run_dir) -> tuple[list[Finding], list[str]]:
    """All findings for ``run_dir`` (sorted by letter) and notes on where the inputs came from."""
    lay = Layout(Path(run_dir))
    view = lay.view
    notes: list[str] = []
    found: dict[str, Finding] = {}
    if view is None:
        for k in "ABCDEFGHJK":
            found[k] = not_measured(k, f"no baseline store or sweep under {run_dir}")
    else:
        iv = Path(run_dir) / INTERVENTIONS_FILE
        with tempfile.TemporaryDirectory() as tmp:
            rep = write_report(view, tmp, ReportSettings(interventions=iv if iv.is_file() else None), draw_figures=False)
        found.update({f.key: f for f in rep.findings})
        notes.append(f"Per-token findings from `{view.path}`"
                     + (f" with the training run `{view.train_run}`" if view.train_run else "") + ".")
        if rep.boundary is not None:
            how = "manual" if rep.boundary.detector == "manual" else f"detector `{rep.boundary.detector}`"
            notes.append(f"Stage boundary: step {rep.boundary.step} ({how}).")
        else:
            notes.append("Stage boundary: none (too few steps); stage-specific findings pool all steps.")
        notes += [f"Skipped in the report — {n}: {w}." for n, w in rep.skipped]
    runs = {n: lay.steps(n) for n in RUNS if lay.steps(n) is not None}
    start = view.late_start() if view is not None else None
    notes.append(f"Training logs found: {', '.join(f'RUN/{n}' for n in runs) or 'none'}; late training = "
                 + (f"steps ≥ {start}." if start is not None else "all steps."))
    found["I"] = finding_I(runs, start)
    found["L"] = finding_L(runs, start)
    found["M"] = finding_M(runs, start)
    return [found[k] for k in sorted(found)], notes


def write_findings(run_dir, out_path) -> Path:
    findings, notes = evaluate(run_dir)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# Findings of Deng et al. (2025) on `{run_dir}`", ""]
    lines += [f"- {n}" for n in notes]
    counts = {v: sum(f.verdict == v for f in findings) for v in (AGREES, DISAGREES, NOT_MEASURED)}
    lines += ["", f"{counts[AGREES]} agree, {counts[DISAGREES]} do not agree, {counts[NOT_MEASURED]} not measured. "
              "Intervals are 95% CIs; the rule under each finding decides its verdict.", "",
              "| | finding | verdict |", "|---|---|---|"]
    lines += [f"| {f.key} | {f.claim} | {f.verdict_text} |" for f in findings]
    lines += ["", "## Details", ""]
    lines += [f.markdown() for f in findings]
    out.write_text("\n".join(lines) + "\n")
    print(f"findings: {out} ({counts[AGREES]} agree, {counts[DISAGREES]} do not agree, "
          f"{counts[NOT_MEASURED]} not measured)")
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
