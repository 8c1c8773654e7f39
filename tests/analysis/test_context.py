"""The run context: which data each analysis reads."""

from __future__ import annotations

import polars as pl

from entropy_lens.analysis.context import RunView
from tests.view.stores import write_store


def steps_of(lf: pl.LazyFrame) -> list[int]:
    return sorted(lf.select(pl.col("step").unique()).collect()["step"].to_list())


def test_rising_findings_read_the_training_rollouts_when_they_record_more_steps(tmp_path):
    sweep = write_store(tmp_path / "sweep", steps=[0, 4])
    train = write_store(tmp_path / "train", n_steps=6, kind="train")
    src = RunView.open(sweep, train_run=train).rising_rollouts
    assert steps_of(src.samples) == steps_of(src.tokens) == [0, 1, 2, 3, 4, 5]
    assert "training run" in src.where


def test_rising_findings_keep_the_store_when_it_is_as_dense(tmp_path):
    sweep = write_store(tmp_path / "sweep", n_steps=6)
    train = write_store(tmp_path / "train", steps=[0, 5], kind="train")
    src = RunView.open(sweep, train_run=train).rising_rollouts
    assert steps_of(src.samples) == list(range(6)) and src.where == "this store's samples"
    alone = RunView.open(sweep).rising_rollouts  # no training run: the store's own
    assert steps_of(alone.samples) == list(range(6))
