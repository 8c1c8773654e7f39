"""Stage-level analysis (paper-notes §2.1): the rising/plateau boundary, then
A. entropy of positive vs negative samples (and its rate of change per stage),
B. token-type shift across the rising stage, C. defective responses,
D–F. (plateau) Δp distribution, |Δp| and gradient norm by entropy bin, semantic categories.
Usage: python analyses/stage_level.py STORE [--train-run RUN] [--boundary N]
"""

from __future__ import annotations

from _common import setup, show

from entropy_lens.analysis import categories, defects, polarity, updates, vocab
from entropy_lens.analysis.findings import finding_A, finding_C, finding_D, finding_E, finding_F
from entropy_lens.errors import UserError


def main() -> None:
    args, view = setup(__doc__)
    boundary = view.boundary_step
    show("Fig. 1 curves (step_curves)", view.curves)
    pol = polarity.polarity_entropy(tokens=view.tokens, samples=view.samples)
    show("A. polarity_entropy", pol)
    show("A. polarity_rates (OLS slope, bootstrap CI)", polarity.polarity_rates(pol, boundary))
    print(finding_A(pol, view.boundary).markdown())
    try:
        shift = vocab.token_shift(tokens=view.tokens, vocab=view.vocab, boundary=boundary)
        show("B. top token shifts (start vs end window of the rising stage)", vocab.top_token_shifts(shift, n=10))
    except UserError as e:
        print(f"\n== B. skipped: {e}")
    show("C. defect_proportions", defects.defect_proportions(samples=view.samples))
    print(finding_C(defects.defect_flags(samples=view.samples), boundary).markdown())
    if not view.has_updates:
        print("\n== D–F skipped: the store has no `updates` (collect with ≥ 2 checkpoints)")
        return
    scope = view.delta_p_scope
    tables = dict(tokens=view.tokens_by_step, updates=view.updates_by_step)
    dist = updates.delta_p_distribution(**tables, samples=view.samples, boundary=boundary)
    show("D. delta_p_distribution", dist)
    print(finding_D(dist, scope.stage).markdown())
    bins = updates.update_by_entropy_bin(**tables, top_frac=args.top_frac, **scope.kwargs)
    sig = updates.significant_update_sets(**tables, samples=view.samples, top_frac=args.top_frac, **scope.kwargs)
    show("E. update_by_entropy_bin", bins, scope.note)
    show("E. significant_update_sets", sig, scope.note)
    print(finding_E(sig, bins, args.top_frac).markdown())
    if view.vocab is not None:
        cat = categories.category_updates(**tables, vocab=view.vocab, top_frac=args.top_frac, **scope.kwargs)
        show("F. category_updates", cat, scope.note)
        print(finding_F(cat, scope.stage).markdown())
    else:
        print("\n== F skipped: no vocab.parquet")


if __name__ == "__main__":
    main()
