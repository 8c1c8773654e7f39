"""FINDINGS.md: each finding of the paper (paper-notes §0, §2, §3), what each baseline seed shows, and verdicts.

``write_findings(run_dir, out_path)`` reads the run layout of figures/README.md.  For every baseline seed
(``RUN/baseline``, ``RUN/baseline-seed1``, …) findings A–H, J, K, N, O come from the report
(:func:`entropy_lens.report.build.write_report`) on that seed's RunView: its sweep with its training run for
the curves and the stage boundary, and its interventions; each finding reads the densest data the run has (A
the training log's per-step entropies, B and C the training rollouts of every step rather than the sweep's
every 10th checkpoint).  I, L and M compare the training logs of the
method runs (one seed each, branched from seed 0) from seed 0's late-training start.  Each verdict is
"agrees", "does not agree" or "not measured (why)", decided by the rule printed under it
(:data:`entropy_lens.analysis.findings.RULES`); a stage-conditioned verdict also says whether it survives
moving the boundary to either end of its 95% interval.  A finding counts as reproduced only when it agrees
on every seed.  A finding this run does not reproduce is reported, not hidden.
Usage: python -m figures.findings --run data/runs/demo [--out figures/out/FINDINGS.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from entropy_lens.analysis.findings import (
    AGREES,
    CLAIMS,
    RULES,
    Finding,
    finding_I,
    finding_L,
    finding_M,
    not_measured,
)
from entropy_lens.report.build import write_report
from entropy_lens.report.sections import ReportSettings
from figures.figlib import RUNS, Layout

PER_SEED = "ABCDEFGHJKNO"  # from each seed's report; I, L, M compare the method runs (one seed)


@dataclasses.dataclass
class SeedResult:
    name: str
    findings: dict[str, Finding]
    boundary: str  # how the seed's stage boundary reads, for the notes


def seed_findings(lay: Layout) -> SeedResult:
    """Findings A–H, J, K, N, O of one baseline seed, from its report (nothing of the report is kept)."""
    view = lay.view
    if view is None:
        why = f"no `{lay.baseline}` store or sweep under {lay.root}"
        return SeedResult(lay.baseline, {k: not_measured(k, why) for k in PER_SEED}, "none (no stores)")
    with tempfile.TemporaryDirectory() as tmp:
        rep = write_report(view, tmp, ReportSettings(interventions=lay.interventions_path()), draw_figures=False,
                           view_page=False)
    b = rep.boundary
    if b is None:
        text = f"none ({view.boundary_reason}); stage-specific findings pool all steps"
    else:
        ci = f", 95% CI {b.ci[0]}–{b.ci[1]}" if b.ci else ""
        text = f"step {b.step} (detector `{b.detector}`{ci})"
    return SeedResult(lay.baseline, {f.key: f for f in rep.findings}, text)


def method_findings(lay: Layout) -> tuple[dict[str, Finding], str]:
    """I, L, M from the method runs' training logs, late training from seed 0's boundary, with their verdicts
    at both ends of the boundary's interval."""
    view = lay.view
    runs = {n: lay.steps(n) for n in RUNS if lay.steps(n) is not None}
    start = view.late_start() if view is not None else None
    rules = {"I": finding_I, "L": finding_L, "M": finding_M}
    found = {k: rule(runs, start) for k, rule in rules.items()}
    b = view.boundary if view is not None else None
    if b is not None and b.ci is not None:
        lo, hi = b.ci
        found = {k: dataclasses.replace(f, at_ci_ends=((lo, rules[k](runs, lo).verdict), (hi, rules[k](runs, hi).verdict)))
                 for k, f in found.items()}
    note = (f"Training logs found: {', '.join(f'RUN/{n}' for n in runs) or 'none'}; late training = "
            + (f"steps ≥ {start}." if start is not None else "all steps."))
    return found, note


def cell(f: Finding) -> str:
    return f.verdict_text + (f"; {f.sensitivity}" if f.sensitivity else "")


def reproduced(findings: list[Finding]) -> str:
    k = sum(f.verdict == AGREES for f in findings)
    return f"{'yes' if k == len(findings) else 'no'} ({k}/{len(findings)} seed{'s' if len(findings) > 1 else ''})"


def write_findings(run_dir, out_path) -> Path:
    lay = Layout(Path(run_dir))
    seeds = [seed_findings(lay.for_seed(name)) for name in (lay.seeds() or ["baseline"])]
    methods, method_note = method_findings(lay)
    keys = sorted(set(PER_SEED) | set(methods))
    per_key = {k: [s.findings[k] for s in seeds] if k in PER_SEED else [methods[k]] for k in keys}
    n_repro = sum(all(f.verdict == AGREES for f in per_key[k]) for k in keys)
    head = [f"seed {i}" for i in range(len(seeds))]
    lines = [f"# Findings of Deng et al. (2025) on `{run_dir}`", "",
             f"- Baseline seeds: {', '.join(f'`RUN/{s.name}`' for s in seeds)} (they share the SFT warm-up; the RL "
             "steps and held-out evaluations draw from each seed). The method runs (I, L, M) are one seed each, "
             "branched from seed 0.",
             *[f"- Stage boundary, seed {i}: {s.boundary}." for i, s in enumerate(seeds)],
             f"- {method_note}", "",
             f"{n_repro} of {len(keys)} findings reproduced (agree on every seed they were measured on). Intervals "
             "are 95% CIs; the rule under each finding decides its verdict; \"robust\" means the verdict is the same "
             "with the stage boundary at either end of its 95% interval.", "",
             "| | finding | " + " | ".join(head) + " | reproduced |", "|---|---|" + "---|" * (len(seeds) + 1)]
    for k in keys:
        cells = [cell(f) for f in per_key[k]] + ["—"] * (len(seeds) - len(per_key[k]))
        lines.append(f"| {k} | {CLAIMS[k]} | " + " | ".join(cells) + f" | {reproduced(per_key[k])} |")
    lines += ["", "## Details", ""]
    for k in keys:
        lines.append(f"- **{k}. {CLAIMS[k]}.** Rule: {RULES[k]}.")
        for i, f in enumerate(per_key[k]):
            who = f"seed {i}" if k in PER_SEED else "method runs"
            lines.append(f"  - {who}: {f.measured} Verdict: **{cell(f)}**.")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"findings: {out} ({n_repro} of {len(keys)} reproduced on {len(seeds)} seed(s))")
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
