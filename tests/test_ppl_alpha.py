"""figures/ppl_alpha.py on a hand-built run folder: which run holds which α, and the report's numbers.

No model runs: checkpoints are empty folders, the training stores hold hand-written advantages and steps,
and the collect stores hand-written samples, so every number in the report is known.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import polars as pl
import pytest

from entropy_lens.store import StoreWriter
from entropy_lens.tasks import load_eval_set

COLLECT = dict(samples_per_prompt=8, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=0, chat_template=True)


@pytest.fixture(scope="module")
def ppl_alpha():
    return importlib.import_module("figures.ppl_alpha")


def _train_store(path: Path, settings: dict, weight: float, steps=(0, 10, 20)):
    """A training store: one step of tokens (advantages ±1, shaped ×weight) and a falling entropy curve."""
    for s in steps:
        d = path / "checkpoints" / f"step_{s}"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(b"")
    with StoreWriter(path, kind="train", settings=settings) as w:
        n = 4
        w.write_step(0, tokens=dict(step=[0] * n, prompt_id=[0] * n, sample_id=list(range(n)), position=[0] * n,
                                    rel_position=[0.0] * n, token_id=[1] * n, logprob=[-0.1] * n,
                                    entropy=[0.1] * n, sum_p2=[0.9] * n, advantage=[1.0, -1.0, 1.0, -1.0],
                                    shaped_advantage=[weight, -1.0, 1.0, -weight]))
        w.write_table("steps", pl.DataFrame({"step": list(range(21)),
                                             "entropy": [0.3 - 0.01 * s if s < 10 else 0.2 for s in range(21)],
                                             "eval_accuracy": [0.1 + 0.01 * s for s in range(21)]}))


def _bench(path: Path, step: int, n_correct: int):
    fp = load_eval_set("arith").fingerprint
    with StoreWriter(path, kind="sweep", settings=dict(dataset="arith", dataset_fingerprint=fp, **COLLECT)) as w:
        rows = [dict(step=step, prompt_id=p, sample_id=i, length=3, truncated=False, prompt="Q", text="A: 1",
                     answer="1" if i < n_correct else "2", gold="1", format_ok=True, correct=i < n_correct,
                     reward=1.0, logppl=0.1, mean_entropy=0.1, source="collect")
                for p in range(4) for i in range(8)]
        w.write_step(step, samples=pl.DataFrame(rows).to_dict(as_series=False))


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    step0 = str(run / "baseline" / "checkpoints" / "step_0")
    _train_store(run / "baseline", dict(shaping="none"), 1.0)
    _train_store(run / "ppl", dict(shaping="ppl", ppl_alpha=0.01, init_from=step0), 1.02)
    _train_store(run / "ppl-alpha" / "0.2", dict(shaping="ppl", ppl_alpha=0.2, init_from=step0), 1.2)
    _bench(run / "baseline" / "bench-arith", 20, 4)
    _bench(run / "ppl" / "bench-arith", 20, 4)
    _bench(run / "ppl-alpha" / "0.2" / "bench-arith", 20, 6)
    return run


def test_existing_runs_are_reused_by_settings(ppl_alpha, run_dir):
    step0 = run_dir / "baseline" / "checkpoints" / "step_0"
    assert ppl_alpha.run_for(run_dir, 0.01, step0) == "ppl"
    assert ppl_alpha.run_for(run_dir, 0.2, step0) == "ppl-alpha/0.2"
    assert ppl_alpha.run_for(run_dir, 0.05, step0) == "ppl-alpha/0.05"  # not trained yet: its own folder
    assert ppl_alpha.run_for(run_dir, 0.01, run_dir / "elsewhere") == "ppl-alpha/0.01"


def test_report_numbers(ppl_alpha, run_dir):
    runs = {"GRPO": "baseline", "GRPO+PPL α=0.01": "ppl", "GRPO+PPL α=0.2": "ppl-alpha/0.2"}
    table, diffs, curves = ppl_alpha.summary(run_dir, runs)
    got = {r["label"]: r for r in table.iter_rows(named=True)}
    assert got["GRPO"]["share_changed"] == 0.0 and got["GRPO"]["alpha"] is None
    assert got["GRPO+PPL α=0.2"]["share_changed"] == pytest.approx(0.5)
    assert got["GRPO+PPL α=0.2"]["rel_abs_change"] == pytest.approx(0.4 / 4)
    assert got["GRPO+PPL α=0.2"]["ratio_max"] == pytest.approx(1.2)
    assert got["GRPO+PPL α=0.2"]["acc_at_k"] == pytest.approx(6 / 8)
    assert got["GRPO"]["acc_at_k"] == pytest.approx(4 / 8)
    d = {r["label"]: r["estimate"] for r in diffs.iter_rows(named=True)}
    assert d["GRPO+PPL α=0.2"] == pytest.approx(0.25) and d["GRPO+PPL α=0.01"] == pytest.approx(0.0)
    assert set(curves["run"].unique()) == set(runs)
    md = ppl_alpha.markdown(run_dir, table, diffs, None)
    assert "| GRPO+PPL α=0.2 (`RUN/ppl-alpha/0.2`) | 0.2 | 50.0% | 0.1000 |" in md
    assert "+25.0" in md


def test_no_baseline_is_one_clear_error(ppl_alpha, tmp_path):
    with pytest.raises(ppl_alpha.UserError, match="no trained baseline"):
        ppl_alpha.train_and_collect(tmp_path / "empty", [0.05], jobs=1)
