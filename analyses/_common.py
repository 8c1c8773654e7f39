"""Shared argument parsing for the analyses/ scripts: which store, which training run, which boundary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from entropy_lens.analysis.context import RunView
from entropy_lens.errors import UserError

pl.Config.set_tbl_rows(30)
pl.Config.set_tbl_cols(14)
pl.Config.set_fmt_str_lengths(40)
pl.Config.set_tbl_width_chars(220)


def setup(doc: str) -> tuple[argparse.Namespace, RunView]:
    """Parse ``STORE [--train-run RUN] [--boundary N] [--detector knee] [--top-frac 0.01]``; open the run, print
    its settings and stage boundary; return ``(args, view)``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", help="Store (a collect sweep with updates, or a training run).")
    ap.add_argument("--train-run", help="Training run store: its steps.parquet gives the curves and the boundary.")
    ap.add_argument("--boundary", type=int, help="Manual stage boundary (first plateau step).")
    ap.add_argument("--detector", default="segmented", help="Stage detector when --boundary is not given.")
    ap.add_argument("--top-frac", type=float, default=0.01, help="Per-step top |Δp| fraction = significant update.")
    args = ap.parse_args()
    try:
        view = RunView.open(args.store, args.train_run, boundary=args.boundary, detector=args.detector)
        b = view.boundary
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"store {Path(args.store)} ({view.kind}), steps {view.store.completed_steps}"
          + (f"; training log from {args.train_run}" if view.train is not None else ""))
    print("stage boundary: " + (f"step {b.step} ({b.detector})" if b is not None else f"none ({view.boundary_reason})"))
    return args, view


def show(title: str, table: pl.DataFrame, note: str = "") -> None:
    print(f"\n== {title}" + (f"  [{note}]" if note else ""))
    print(table)
