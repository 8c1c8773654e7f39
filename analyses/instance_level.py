"""Instance-level analysis (PAPER §2.2): G. where the large probability updates come from, by PPL bucket
(group-standardised log-PPL w_ppl, PAPER §1.4), and accuracy per bucket.  The intervention (H) and the
reweighting runs (I) are read by figures/fig4_instance.py and figures/findings.py.
Usage: python analyses/instance_level.py STORE [--train-run RUN] [--boundary N]
"""

from __future__ import annotations

import polars as pl
from _common import has_updates, setup, show

from entropy_lens.analysis import instance
from entropy_lens.analysis.report import finding_G, update_stage


def main() -> None:
    args, store, _, b = setup(__doc__)
    bstep = None if b is None else b.step
    w = instance.ppl_weights(samples=store.samples)
    show("ppl_weights (first rows)", w.head(8))
    for bucketing, params in (("group_z", {}), ("quantile", {"n_bins": 3})):
        pb = instance.ppl_buckets(samples=store.samples, bucketing=bucketing, **params)
        acc = (pb.join(store.samples.select("step", "prompt_id", "sample_id", "correct").collect(),
                       on=["step", "prompt_id", "sample_id"])
               .group_by("ppl_bucket").agg(pl.len().alias("n"), pl.col("correct").mean().alias("accuracy")).sort("ppl_bucket"))
        show(f"accuracy by PPL bucket ({bucketing})", acc)
    if not has_updates(store):
        print("\n== G skipped: the store has no `updates`")
        return
    stage, note = update_stage(store.updates, bstep)
    kw = dict(boundary=bstep, stage=stage) if stage else {}
    for bucketing, params in (("group_z", {}), ("quantile", {"n_bins": 3})):
        t = instance.ppl_bucket_updates(tokens=store.tokens, updates=store.updates, samples=store.samples,
                                        bucketing=bucketing, bucketing_params=params, top_frac=args.top_frac, **kw)
        show(f"G. ppl_bucket_updates ({bucketing})", t, note)
        if bucketing == "group_z":
            print(finding_G(t, stage).markdown())


if __name__ == "__main__":
    main()
