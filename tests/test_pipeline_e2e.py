"""The whole pipeline in miniature, through the CLI: train a few steps → collect its checkpoints → report.

Keeps the file boundaries joined up: the trainer's run folder is read by collect with no extra flags, and
the report reads the sweep together with the training run.
"""

from __future__ import annotations

import polars as pl
import pytest

import entropy_lens
from entropy_lens.cli import main
from entropy_lens.models import TinyModelConfig, build_tiny_model
from entropy_lens.tasks import Verdict
from entropy_lens.train import grpo


@pytest.fixture
def minuscule_trainer(monkeypatch):
    """A width-32 model and a verifier that calls even-length responses correct, so that a random model's
    groups are mixed and every step trains (it never gets an arith answer right)."""
    small = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                            max_positions=64)
    monkeypatch.setattr(grpo, "build_tiny_model", lambda tok, seed=0: build_tiny_model(tok, small, seed=seed))
    monkeypatch.setattr(grpo, "verify", lambda response, gold: Verdict(
        answer=None, format_ok=len(response) % 2 == 0, correct=len(response) % 2 == 0,
        reward=1.0 if len(response) % 2 == 0 else -1.0))


def test_train_collect_report(tmp_path, minuscule_trainer, capsys):
    run, sweep, report = tmp_path / "run", tmp_path / "run" / "sweep", tmp_path / "report"
    assert main(["train", "--out", str(run), "--steps", "4", "--sft-steps", "2", "--sft-batch-size", "8",
                 "--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "16",
                 "--overlong-buffer", "4", "--save-every", "2", "--eval-every", "2", "--eval-samples", "1"]) == 0
    assert main(["collect", str(run), "--out", str(sweep), "--max-prompts", "3", "--samples-per-prompt", "2",
                 "--max-new-tokens", "12"]) == 0
    assert main(["report", str(sweep), "--train-run", str(run), "--out", str(report)]) == 0
    out = capsys.readouterr().out
    assert str(report) in out

    store = entropy_lens.open(sweep)
    assert store.completed_steps == [0, 2, 4]
    assert store.manifest["completed"]["updates"] == [0, 2]
    train = entropy_lens.open(run)
    assert train.steps.select(pl.len()).collect().item() == 5
    text = (report / "REPORT.md").read_text()
    body, skipped = text.split("\n## Skipped\n")
    # what ran: the sweep's Δp sections, the training run's curves and advantages ...
    for title in ("## D. Which tokens change probability", "## E. Updates and gradient norm by entropy bin",
                  "## G. Perplexity buckets", "## J. Entropy by relative position", "## Training curves",
                  "## Advantages of the training rollouts"):
        assert title in body, title
    assert "Δp analyses" not in skipped and "training curves" not in skipped and "advantage analyses" not in skipped
    # ... and what did not, with its reason: nobody ran `entropy-lens intervene`
    assert "- **H/K. replacement interventions**: no interventions.parquet next to the store" in skipped
    assert "## H/K." not in body
    assert list(report.rglob("*.csv")), "the report wrote no tables"
    assert list(report.rglob("*.png")), "the report drew no figures"
