"""figures/table1.py on a hand-built run folder: which store each cell comes from, what it skips, its numbers.

No model runs: checkpoints are empty HF-looking folders (only their step matters) and the collect stores
hold hand-written samples, so every number in the table is known.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import polars as pl
import pytest

from entropy_lens.store import StoreWriter
from entropy_lens.tasks import load_eval_set

SETTINGS = dict(samples_per_prompt=8, max_new_tokens=128, temperature=1.0, top_p=1.0, seed=0, chat_template=True)


@pytest.fixture(scope="module")
def table1():
    return importlib.import_module("figures.table1")


def _checkpoints(run: Path, steps):
    for s in steps:
        d = run / "checkpoints" / f"step_{s}"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(b"")


def _store(path: Path, dataset: str, n_correct: dict[int, int], n_problems: int = 4, fingerprint=None):
    """A collect store whose step s has ``n_correct[s]`` right answers ("1") out of 8 on every problem."""
    fp = fingerprint or load_eval_set(dataset).fingerprint
    with StoreWriter(path, kind="sweep", settings=dict(dataset=dataset, dataset_fingerprint=fp, **SETTINGS)) as w:
        for step, c in n_correct.items():
            rows = [dict(step=step, prompt_id=p, sample_id=i, length=3, truncated=False, prompt="Q", text="A: 1",
                         answer="1" if i < c else "2", gold="1", format_ok=True, correct=i < c,
                         reward=1.0 if i < c else -1.0, logppl=0.1, mean_entropy=0.1, source="collect")
                    for p in range(n_problems) for i in range(8)]
            w.write_step(step, samples=pl.DataFrame(rows).to_dict(as_series=False))


@pytest.fixture
def run_dir(tmp_path):
    """Baseline (steps 0, 20; sweep with step 0 on arith), ppl (0, 20) with arith only, no position runs."""
    run = tmp_path / "run"
    _checkpoints(run / "baseline", [0, 10, 20])
    _checkpoints(run / "ppl", [0, 10, 20])
    _store(run / "baseline" / "sweep", "arith", {0: 2, 10: 3})
    return run


def test_collects_needed_reuses_the_sweep(table1, run_dir):
    need = {(r, ds): steps for r, ds, steps in table1.collects_needed(run_dir)}
    assert need == {("baseline", "arith"): [20], ("baseline", "arith-long"): [0, 20],
                    ("baseline", "arith-wide"): [0, 20],
                    ("ppl", "arith"): [20], ("ppl", "arith-long"): [20], ("ppl", "arith-wide"): [20]}
    assert table1.steps_spec([0, 20]) == "0:20:20" and table1.steps_spec([20]) == "20"


def test_table_numbers_sources_and_skips(table1, run_dir, tmp_path):
    _store(table1.bench_dir(run_dir, "baseline", "arith"), "arith", {20: 4})
    _store(table1.bench_dir(run_dir, "baseline", "arith-long"), "arith-long", {0: 0, 20: 1})
    _store(table1.bench_dir(run_dir, "ppl", "arith"), "arith", {20: 6})
    out = tmp_path / "out"
    table1.main(run_dir, out)
    df = pl.read_csv(out / "table1.csv")
    got = {(r["label"], r["dataset"]): r for r in df.iter_rows(named=True)}
    assert set(got) == {("base model (post-SFT)", "arith"), ("base model (post-SFT)", "arith-long"),
                        ("GRPO", "arith"), ("GRPO", "arith-long"), ("GRPO+PPL", "arith")}
    base = got[("base model (post-SFT)", "arith")]
    assert (base["step"], base["acc_at_k"], base["maj_at_k"], base["pass_at_k"]) == (0, 0.25, 0.0, 1.0)
    assert base["store"].endswith("baseline/sweep")  # step 0 on arith is read from the sweep, not recollected
    grpo = got[("GRPO", "arith")]
    assert (grpo["step"], grpo["acc_at_k"], grpo["maj_at_k"]) == (20, 0.5, 0.5)  # a 4–4 tie scores 0.5
    assert got[("GRPO+PPL", "arith")]["maj_at_k"] == 1.0
    assert got[("GRPO", "arith-long")]["pass_at_k"] == 1.0 and got[("base model (post-SFT)", "arith-long")]["pass_at_k"] == 0.0
    md = (out / "table1.md").read_text()
    assert "| GRPO | 20 | 50.0 [50.0, 50.0] | 50.0 | 100.0 |" in md
    skipped = md.split("## Skipped")[1]
    assert "GRPO+PPL on arith-long: no collect store with step 20" in skipped
    assert "GRPO+POSITION: no run `RUN/position`" in skipped
    assert "| GRPO+PPL | arith | +25.0" in md  # ΔAcc@8 vs GRPO: 6/8 − 4/8


def test_a_store_of_other_problems_is_not_read(table1, run_dir, tmp_path):
    _store(table1.bench_dir(run_dir, "ppl", "arith"), "arith", {20: 6}, fingerprint="0000000000000000")
    assert ("ppl", "arith", [20]) in table1.collects_needed(run_dir)
    table1.main(run_dir, tmp_path / "out")
    assert "GRPO+PPL on arith: no collect store" in (tmp_path / "out" / "table1.md").read_text()


def test_nothing_to_read_writes_only_the_skips(table1, tmp_path):
    table1.main(tmp_path / "empty", tmp_path / "out")
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "every row was skipped" in md and "no run `RUN/baseline`" in md
