"""Does each training run show the two stages the embedded default promises?  One line per run and a verdict.

    python benchmarks/check_two_stages.py data/runs/demo/baseline data/runs/demo/baseline-seed1 ...

The rule (issue "Stages you can trust", the embedded default's contract): the ``segmented`` detector finds a
clear rising → plateau break in the batch entropy whose 95% interval spans at most ``--max-ci`` steps (20), and
the held-out accuracy's plateau slope is at most ``--max-ratio`` (1/3) of its rising slope, both slopes fitted
with the knot at the break (what ``entropy-lens stages --json`` prints as ``accuracy.ratio``).  Exits 1 when a
run fails the rule, so a recipe change can be checked in one command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entropy_lens.analysis.context import source_curves  # noqa: E402
from entropy_lens.analysis.stages import boundary_summary, detect_stage_boundary  # noqa: E402


def verdict(summary: dict, max_ci: int, max_ratio: float) -> tuple[bool, str]:
    """(meets the rule, what fails) for one ``boundary_summary``."""
    if summary["boundary"] is None or not summary["clear"]:
        return False, "no clear break"
    lo, hi = summary["ci"]
    acc = summary["accuracy"] or {}
    ratio = acc.get("ratio")
    fails = ([f"CI spans {hi - lo} > {max_ci} steps"] if hi - lo > max_ci else []) + (
        ["no accuracy slopes"] if ratio is None else
        ["held-out accuracy does not rise before the break"] if acc["rising_slope"]["estimate"] <= 0 else
        [f"accuracy ratio {ratio:.2f} > {max_ratio:.2f}"] if ratio > max_ratio else [])
    return not fails, "; ".join(fails) or "meets the rule"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="Training run folders (or stores, or steps.parquet files).")
    ap.add_argument("--max-ci", type=int, default=20, help="Widest allowed 95%% interval of the break, in steps.")
    ap.add_argument("--max-ratio", type=float, default=1 / 3, help="Largest allowed plateau / rising accuracy slope.")
    args = ap.parse_args()
    ok_all = True
    print(f"{'run':<44} {'break':>5} {'95% CI':>9} {'H rising':>10} {'H plateau':>10} {'acc rising':>10} "
          f"{'acc plat.':>10} {'ratio':>6}  verdict")
    for run in args.runs:
        curves, _ = source_curves(run)
        s = boundary_summary(curves, detect_stage_boundary(curves, "segmented", column="entropy"))
        ok, why = verdict(s, args.max_ci, args.max_ratio)
        ok_all &= ok
        acc = s["accuracy"] or {"rising_slope": {"estimate": None}, "plateau_slope": {"estimate": None}, "ratio": None}
        num = lambda v, f="+.5f": "–" if v is None else format(v, f)  # noqa: E731
        ci = "–" if not s["ci"] else f"{s['ci'][0]}–{s['ci'][1]}"
        print(f"{run[-44:]:<44} {num(s['boundary'], 'd'):>5} {ci:>9} {num(s['rising_slope']['estimate']):>10} "
              f"{num(s['plateau_slope']['estimate']):>10} {num(acc['rising_slope']['estimate']):>10} "
              f"{num(acc['plateau_slope']['estimate']):>10} {num(acc['ratio'], '.2f'):>6}  {why}")
    print("every run meets the two-stage rule" if ok_all else "at least one run fails the two-stage rule")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
