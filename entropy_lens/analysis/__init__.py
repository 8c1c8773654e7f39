"""Pure-polars analyses of a store (PAPER §2, §7.3).  Never imports torch or transformers.

Each function takes the store's tables as keyword LazyFrames (``tokens``, ``samples``, ``updates``,
``steps``, ``vocab``; schema in docs/store-schema.md), builds one lazy query, and returns a tidy
``pl.DataFrame``.  Modules, one per concern: :mod:`.stages`, :mod:`.polarity`, :mod:`.vocab`,
:mod:`.defects`, :mod:`.updates`, :mod:`.categories`, :mod:`.instance`, :mod:`.position`, :mod:`.stats`,
:mod:`.benchmarks` (Acc@k / Maj@k / Pass@k per eval set, Table 1), :mod:`.advantages` (how much a shaper
changed a run's advantages).
"""
