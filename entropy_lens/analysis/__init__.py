"""Pure-polars analyses of a store (paper-notes §2, §7.3).  Never imports torch, transformers, plots or capture.

Each function takes the store's tables as keyword frames (``tokens``, ``samples``, ``updates``, ``steps``,
``vocab``: polars LazyFrames or DataFrames, or for tokens / updates a store's ``Store.partitions(...)``;
schema in docs/store-schema.md), builds one lazy query, and returns a tidy ``pl.DataFrame``.  Modules, one
per concern: :mod:`.stages`, :mod:`.polarity`, :mod:`.vocab`, :mod:`.defects`, :mod:`.updates`,
:mod:`.categories`, :mod:`.instance`, :mod:`.position`, :mod:`.stats`, :mod:`.benchmarks` (Acc@k / Maj@k /
Pass@k per eval set, Table 1), :mod:`.advantages` (how much a shaper changed a run's advantages).  Around
them: :mod:`.frames` (keys, checks, polarity / stage / Δp columns) and :mod:`.stepwise` (the one-step-at-a-time
fold of the Δp analyses); :mod:`.context` (:class:`~entropy_lens.analysis.context.RunView`, a run's stores,
stage boundary, Δp scope and late-training start); :mod:`.findings` (the paper's claims and the rule behind
each verdict).
"""
