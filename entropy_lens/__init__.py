"""entropy-lens: where a reinforcement-learning run's policy entropy went, and what it bought.

The import of this package is light (no torch): analysis code imports it freely.  ``entropy_lens.open(path)``
returns a :class:`~entropy_lens.store.Store` whose tables are polars LazyFrames.
"""

from __future__ import annotations

from entropy_lens.version import __version__

__all__ = ["__version__", "open"]


def open(path):  # noqa: A001 - the public name mirrors builtins.open on purpose
    """Open a store directory for reading: ``.tokens``, ``.samples``, ``.updates``, ``.steps``, ``.vocab``
    (polars LazyFrames) and ``.manifest`` (dict)."""
    from entropy_lens.store import Store

    return Store(path)
