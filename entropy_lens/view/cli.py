"""``entropy-lens view``: the explorer subcommand (flags generated from :class:`ViewConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from entropy_lens.command import Command


@dataclass
class ViewConfig:
    """Settings of ``entropy-lens view``: write one self-contained, offline HTML page of a store — curves, a
    step's prompts, a prompt's group side by side, tokens coloured by a per-token metric, heat maps."""

    store: str = field(metadata={"help": "Store directory (a sweep, a training run, a re-scored dump).",
                                 "positional": True})
    train_run: str | None = field(default=None, metadata={"help": "Training run whose log and rollouts give the "
                                                                   "curves and the stage boundary (as for `report`)."})
    out: str | None = field(default=None, metadata={"help": "Output HTML file (default: STORE/view.html)."})
    samples_per_step: int = field(default=16, metadata={"help": "At most this many responses a step, stratified by "
                                                                "correctness and PPL bucket (fewer if --max-mb needs)."})
    max_mb: float = field(default=20.0, metadata={"help": "Size budget of the page in MB (10^6 bytes)."})
    seed: int = field(default=0, metadata={"help": "Seed of the response sample."})


def run_view(cfg: ViewConfig) -> None:
    from pathlib import Path

    from entropy_lens.analysis.context import RunView
    from entropy_lens.view.page import write_view

    view = RunView.open(cfg.store, train_run=cfg.train_run)
    out, data = write_view(view, Path(cfg.out) if cfg.out is not None else Path(cfg.store) / "view.html",
                           samples_per_step=cfg.samples_per_step, max_mb=cfg.max_mb, seed=cfg.seed)
    print(f"{out}: showing {data['shown']} of {data['total']} responses ({out.stat().st_size / 1e6:.2f} MB)")


VIEW = Command("view", "write one offline HTML page to explore a store token by token", ViewConfig, run_view)
