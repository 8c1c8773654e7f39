"""Instance-level analysis (paper-notes §2.2): G. where the large probability updates come from, by PPL bucket
(group-standardised log-PPL w_ppl, paper-notes §1.4), and accuracy per bucket.  The intervention (H) and the
reweighting runs (I) are read by figures/fig4_instance.py and figures/findings.py.
Usage: python analyses/instance_level.py STORE [--train-run RUN] [--boundary N]
"""

from __future__ import annotations

import polars as pl
from _common import setup, show

from entropy_lens.analysis import instance
from entropy_lens.analysis.findings import finding_G


def main() -> None:
    args, view = setup(__doc__)
    w = instance.ppl_weights(samples=view.samples)
    show("ppl_weights (first rows)", w.head(8))
    for bucketing, params in (("group_z", {}), ("quantile", {"n_bins": 3})):
        pb = instance.ppl_buckets(samples=view.samples, bucketing=bucketing, **params)
        acc = (pb.join(view.samples.select("step", "prompt_id", "sample_id", "correct").collect(),
                       on=["step", "prompt_id", "sample_id"])
               .group_by("ppl_bucket").agg(pl.len().alias("n"), pl.col("correct").mean().alias("accuracy")).sort("ppl_bucket"))
        show(f"accuracy by PPL bucket ({bucketing})", acc)
    if not view.has_updates:
        print("\n== G skipped: the store has no `updates`")
        return
    scope = view.delta_p_scope
    for bucketing, params in (("group_z", {}), ("quantile", {"n_bins": 3})):
        t = instance.ppl_bucket_updates(tokens=view.tokens_by_step, updates=view.updates_by_step, samples=view.samples,
                                        bucketing=bucketing, bucketing_params=params, top_frac=args.top_frac,
                                        **scope.kwargs)
        show(f"G. ppl_bucket_updates ({bucketing})", t, scope.note)
        if bucketing == "group_z":
            print(finding_G(t, scope.stage).markdown())


if __name__ == "__main__":
    main()
