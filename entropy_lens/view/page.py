"""One call from a :class:`~entropy_lens.analysis.context.RunView` to the written page (the CLI and
``report`` both use it)."""

from __future__ import annotations

from pathlib import Path

from entropy_lens.view.data import page_data
from entropy_lens.view.html import SHELL_BYTES, write_page


def write_view(view, out, *, samples_per_step: int = 16, max_mb: float = 20.0, seed: int = 0) -> tuple[Path, dict]:
    """Build the page data of ``view`` within ``max_mb`` (the page around it included) and write the page to
    ``out``; return its path and the data."""
    data = page_data(view, samples_per_step=samples_per_step, max_mb=max_mb, seed=seed, reserve_bytes=SHELL_BYTES)
    return write_page(data, Path(out)), data
