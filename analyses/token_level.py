"""Token-level analysis (paper-notes §2.3): J. entropy vs relative position (the U-curve) overall and by polarity,
with the ends-vs-middle contrasts (bootstrap CI over responses), and |Δp| by position over the run's Δp scope
(the plateau when it has Δp rows, as the report and figures/fig5_position.py).  The position interventions (K)
and the position-bonus runs (L) are read by figures/fig5_position.py and figures/findings.py.
Usage: python analyses/token_level.py STORE [--train-run RUN] [--boundary N]
"""

from __future__ import annotations

from _common import setup, show

from entropy_lens.analysis import position
from entropy_lens.analysis.findings import finding_J


def main() -> None:
    args, view = setup(__doc__)
    show("J. entropy_by_position (10 bins)", position.entropy_by_position(tokens=view.tokens, samples=view.samples, n_bins=10))
    u = position.u_shape_summary(tokens=view.tokens_by_step, samples=view.samples)
    show("J. u_shape_summary (first/last 10% vs middle)", u)
    print(finding_J(u).markdown())
    if view.has_updates:
        scope = view.delta_p_scope
        show("update_by_position (10 bins)", position.update_by_position(
            tokens=view.tokens_by_step, updates=view.updates_by_step, n_bins=10, top_frac=args.top_frac,
            **scope.kwargs), scope.note)
    else:
        print("\n== |Δp| by position skipped: the store has no `updates`")


if __name__ == "__main__":
    main()
