"""The report: where analysis tables meet figures (REPORT.md, ``tables/*.csv``, ``figures/*.png``).

:func:`build_report` (:mod:`.build`) runs the registered sections of :mod:`.sections` on a run
(:class:`~entropy_lens.analysis.context.RunView`) and writes the document of :mod:`.document`; :mod:`.cli`
is the ``entropy-lens report`` command.  Importing the package is light: the analysis and plotting modules
load when a report is built.
"""

from __future__ import annotations

__all__ = ["build_report", "write_report"]


def __getattr__(name: str):
    if name in __all__:
        from entropy_lens.report import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
