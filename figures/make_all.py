"""`make figures`: the whole pipeline on the embedded default, from nothing.

Stages (each a file boundary, each skipped when its output is already complete):
  1. a run of tiny checkpoints (until the embedded trainer lands: random-initialised models built here);
  2. `entropy-lens collect` over them into RUN/sweep.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from entropy_lens.capture.sweep import CollectConfig, collect


def build_placeholder_run(run: Path) -> None:
    from entropy_lens.models import build_char_tokenizer, build_tiny_model, save_checkpoint
    from entropy_lens.tasks.arith import ALPHABET

    tok = build_char_tokenizer(ALPHABET)
    for step in (0, 10, 20):
        if not (run / "checkpoints" / f"step_{step}").exists():
            save_checkpoint(build_tiny_model(tok, seed=step), tok, run / "checkpoints" / f"step_{step}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="data/runs/demo", help="Run folder (created).")
    args = ap.parse_args()
    run = Path(args.run)
    build_placeholder_run(run)
    print(collect(CollectConfig(checkpoints=str(run), dataset="arith", out=str(run / "sweep"),
                                samples_per_prompt=4, max_new_tokens=64, max_prompts=16)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
