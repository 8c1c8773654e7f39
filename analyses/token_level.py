"""Token-level analysis (PAPER §2.3): J. entropy vs relative position (the U-curve) overall and by polarity,
with the ends-vs-middle contrasts (bootstrap CI over responses), and |Δp| by position.  The position
interventions (K) and the position-bonus runs (L) are read by figures/fig5_position.py and figures/findings.py.
Usage: python analyses/token_level.py STORE [--train-run RUN] [--boundary N]
"""

from __future__ import annotations

from _common import has_updates, setup, show

from entropy_lens.analysis import position
from entropy_lens.analysis.report import finding_J


def main() -> None:
    args, store, _, b = setup(__doc__)
    show("J. entropy_by_position (10 bins)", position.entropy_by_position(tokens=store.tokens, samples=store.samples, n_bins=10))
    u = position.u_shape_summary(tokens=store.tokens, samples=store.samples)
    show("J. u_shape_summary (first/last 10% vs middle)", u)
    print(finding_J(u).markdown())
    if has_updates(store):
        show("update_by_position (10 bins)", position.update_by_position(tokens=store.tokens, updates=store.updates,
                                                                         n_bins=10, top_frac=args.top_frac))
    else:
        print("\n== |Δp| by position skipped: the store has no `updates`")


if __name__ == "__main__":
    main()
