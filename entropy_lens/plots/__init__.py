"""Figure functions: analysis tables (polars DataFrames) in, matplotlib Figures out (paper-notes §3, §7.5).

Never computes statistics and never imports torch: every function takes the output of an
:mod:`entropy_lens.analysis` function.  One style (:mod:`.style`), the stage boundary drawn as a red vertical
line, axes labelled with units; :func:`~entropy_lens.plots.style.save_figure` writes PNG and PDF.
"""
