"""Every figure script of figures/ (Table 1 included) on one run, into one folder.

    python -m figures.draw_all --run data/runs/demo [--out figures/out]

``make figures`` runs this and ``figures.findings`` as two stages side by side once every collect is done.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

FIGURE_SCRIPTS = ("fig1_stages", "fig2_rising", "fig3_plateau", "fig4_instance", "fig5_position",
                  "fig6_attribution", "fig_methods", "fig_response", "table1")


def draw_all(run_dir: Path, out: Path) -> None:
    """Each script's ``main(run_dir, out)``, in :data:`FIGURE_SCRIPTS` order."""
    out.mkdir(parents=True, exist_ok=True)
    for name in FIGURE_SCRIPTS:
        importlib.import_module(f"figures.{name}").main(run_dir, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="data/runs/demo", help="Experiment folder (the layout of figures/README.md).")
    ap.add_argument("--out", default=str(HERE / "out"), help="Where the figures and tables go.")
    args = ap.parse_args()
    if not Path(args.run).is_dir():
        print(f"--run {args.run}: no such run folder; run `make figures` first or pass --run", file=sys.stderr)
        return 2
    draw_all(Path(args.run), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
