"""The toolkit's version, recorded in every store's manifest (kept apart so the store needs no package import)."""

__version__ = "0.1.0"
