"""Stage-level analysis (PAPER §2.1): the rising/plateau boundary, then
A. entropy of positive vs negative samples (and its rate of change per stage),
B. token-type shift across the rising stage, C. defective responses,
D–F. (plateau) Δp distribution, |Δp| and gradient norm by entropy bin, semantic categories.
Usage: python analyses/stage_level.py STORE [--train-run RUN] [--boundary N]
"""

from __future__ import annotations

from _common import has_updates, setup, show

from entropy_lens.analysis import categories, defects, polarity, updates, vocab
from entropy_lens.analysis.report import finding_A, finding_C, finding_D, finding_E, finding_F, update_stage
from entropy_lens.errors import UserError


def main() -> None:
    args, store, curves, b = setup(__doc__)
    bstep = None if b is None else b.step
    show("Fig. 1 curves (step_curves)", curves)
    pol = polarity.polarity_entropy(tokens=store.tokens, samples=store.samples)
    show("A. polarity_entropy", pol)
    show("A. polarity_rates (OLS slope, bootstrap CI)", polarity.polarity_rates(pol, bstep))
    print(finding_A(pol, b).markdown())
    try:
        shift = vocab.token_shift(tokens=store.tokens, vocab=store.vocab, boundary=bstep)
        show("B. top token shifts (start vs end window of the rising stage)", vocab.top_token_shifts(shift, n=10))
    except UserError as e:
        print(f"\n== B. skipped: {e}")
    show("C. defect_proportions", defects.defect_proportions(samples=store.samples))
    print(finding_C(defects.defect_flags(samples=store.samples), bstep).markdown())
    if not has_updates(store):
        print("\n== D–F skipped: the store has no `updates` (collect with ≥ 2 checkpoints)")
        return
    stage, note = update_stage(store.updates, bstep)
    kw = dict(boundary=bstep, stage=stage) if stage else {}
    dist = updates.delta_p_distribution(tokens=store.tokens, updates=store.updates, samples=store.samples, boundary=bstep)
    show("D. delta_p_distribution", dist)
    print(finding_D(dist, stage).markdown())
    bins = updates.update_by_entropy_bin(tokens=store.tokens, updates=store.updates, top_frac=args.top_frac, **kw)
    sig = updates.significant_update_sets(tokens=store.tokens, updates=store.updates, samples=store.samples,
                                          top_frac=args.top_frac, **kw)
    show("E. update_by_entropy_bin", bins, note)
    show("E. significant_update_sets", sig, note)
    print(finding_E(sig, bins, args.top_frac).markdown())
    if store.vocab is not None:
        cat = categories.category_updates(tokens=store.tokens, updates=store.updates, vocab=store.vocab,
                                          top_frac=args.top_frac, **kw)
        show("F. category_updates", cat, note)
        print(finding_F(cat, stage).markdown())
    else:
        print("\n== F skipped: no vocab.parquet")


if __name__ == "__main__":
    main()
