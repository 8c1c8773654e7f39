"""`entropy-lens collect` end to end on tiny Qwen2 checkpoints, against an independent plain-torch pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import entropy_lens
from entropy_lens.cli import main
from tests.conftest import save_run

FAST = ["--max-prompts", "3", "--samples-per-prompt", "2", "--max-new-tokens", "12", "--batch-size", "4"]


def collect(ckpts, out, *extra) -> int:
    return main(["collect", str(ckpts), "--dataset", "arith", "--out", str(out), *FAST, *extra])


def reference_stats(ckpt_dir: Path, prompt: str, response_ids: list[int], temperature: float = 1.0):
    """``(logprob, entropy, sum_p2)`` of :func:`reference_all`."""
    ref = reference_all(ckpt_dir, prompt, response_ids, temperature)
    return ref["logprob"], ref["entropy"], ref["sum_p2"]


def reference_all(ckpt_dir: Path, prompt: str, response_ids: list[int], temperature: float = 1.0) -> dict:
    """Independent oracle: full logits from the plain forward, dense fp64 log_softmax, no entropy_lens code.
    Every ``tokens`` statistic, [len(response_ids)] fp64 each.

    The prompt is encoded by the in-memory tokenizer the checkpoints were built with, not the saved copy.
    """
    from transformers import AutoModelForCausalLM

    from entropy_lens.models import build_char_tokenizer
    from entropy_lens.tasks.arith import ALPHABET

    model = AutoModelForCausalLM.from_pretrained(ckpt_dir).eval()
    prompt_ids = build_char_tokenizer(ALPHABET)(prompt)["input_ids"]
    assert len(prompt_ids) == len(prompt)
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].double() / temperature
    logp = torch.log_softmax(logits, -1)[len(prompt_ids) - 1: len(prompt_ids) - 1 + len(response_ids)]
    p = logp.exp()
    entropy = -(p * logp).sum(-1)
    return {"logprob": logp.gather(-1, torch.tensor(response_ids)[:, None])[:, 0].numpy(), "entropy": entropy.numpy(),
            "sum_p2": (p ** 2).sum(-1).numpy(), "sum_p2_logp": (p ** 2 * logp).sum(-1).numpy(),
            "varentropy": (p * logp ** 2).sum(-1).sub(entropy ** 2).numpy()}


STATS = ("logprob", "entropy", "sum_p2", "sum_p2_logp", "varentropy")


@pytest.mark.parametrize("layout", ["hf", "trl", "verl", "step"])
def test_collect_every_layout_matches_plain_torch(tmp_path, tiny_tokenizer, layout):
    ckpts = save_run(tmp_path / "ckpts", tiny_tokenizer, layout, steps=(0, 10))
    out = tmp_path / "store"
    assert collect(ckpts, out) == 0
    store = entropy_lens.open(out)
    expected_steps = [0] if layout == "hf" else [0, 10]
    assert store.completed_steps == expected_steps
    tokens = store.tokens.collect()
    samples = store.samples.collect()
    assert len(samples) == 3 * 2 * len(expected_steps)
    assert tokens.group_by("step", "prompt_id", "sample_id").len()["len"].sort().to_list() == \
        samples.sort("step", "prompt_id", "sample_id")["length"].sort().to_list()
    # Every stored token statistic equals the oracle's, for every response of the last step.
    step = expected_steps[-1]
    ckpt_dir = {"hf": ckpts, "trl": ckpts / f"checkpoint-{step}",
                "verl": ckpts / f"global_step_{step}/actor/huggingface", "step": ckpts / f"step_{step}"}[layout]
    for row in samples.filter(pl.col("step") == step).iter_rows(named=True):
        t = tokens.filter((pl.col("step") == step) & (pl.col("prompt_id") == row["prompt_id"])
                          & (pl.col("sample_id") == row["sample_id"])).sort("position")
        ref = reference_all(ckpt_dir, row["prompt"], t["token_id"].to_list())
        for k in STATS:
            np.testing.assert_allclose(t[k].to_numpy(), ref[k], atol=1e-5, rtol=0, err_msg=k)
        assert row["logppl"] == pytest.approx(-ref["logprob"].mean(), abs=1e-5)
        assert t["position"].to_list() == list(range(row["length"]))
        assert t["rel_position"].to_numpy() == pytest.approx(np.arange(row["length"]) / row["length"])


@pytest.mark.parametrize("temperature, backend", [(1.0, "static"), (0.7, "static"), (0.7, "hf")])
def test_updates_are_logprobs_under_the_next_checkpoint(tmp_path, tiny_run, temperature, backend):
    """static records the statistics while sampling; hf samples, then runs the teacher-forced pass."""
    out = tmp_path / "store"
    assert collect(tiny_run, out, "--temperature", str(temperature), "--backend", backend) == 0
    store = entropy_lens.open(out)
    assert store.manifest["completed"]["updates"] == [0, 10]  # the last step has no next checkpoint
    joined = store.tokens.join(store.updates, on=["step", "prompt_id", "sample_id", "position"]).collect()
    assert len(joined) == store.tokens.filter(pl.col("step") < 20).select(pl.len()).collect().item()
    assert set(zip(joined["step"], joined["next_step"])) == {(0, 10), (10, 20)}
    for row in store.samples.filter(pl.col("step") == 10).collect().iter_rows(named=True):
        t = joined.filter((pl.col("step") == 10) & (pl.col("prompt_id") == row["prompt_id"])
                          & (pl.col("sample_id") == row["sample_id"])).sort("position")
        ids = t["token_id"].to_list()
        now, nxt = (reference_all(tiny_run / f"step_{s}", row["prompt"], ids, temperature) for s in (10, 20))
        for k in STATS:  # the step's own statistics at the sampling temperature, and under the next checkpoint
            np.testing.assert_allclose(t[k].to_numpy(), now[k], atol=1e-5, rtol=0, err_msg=k)
        np.testing.assert_allclose(t["logprob_next"].to_numpy(), nxt["logprob"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(t["entropy_next"].to_numpy(), nxt["entropy"], atol=1e-5, rtol=0)


def test_same_seed_same_bytes_and_rerun_resumes(tmp_path, tiny_run, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert collect(tiny_run, a) == 0 and collect(tiny_run, b) == 0
    for f in sorted(a.rglob("*.parquet")):
        assert f.read_bytes() == (b / f.relative_to(a)).read_bytes(), f
    capsys.readouterr()
    assert collect(tiny_run, a) == 0  # nothing left to do: every step is skipped, nothing duplicated
    assert "collected 0 step(s)" in capsys.readouterr().out
    assert entropy_lens.open(a).samples.select(pl.len()).collect().item() == 3 * 2 * 3


def test_sigkill_midway_then_rerun_gives_the_uninterrupted_rows(tmp_path, tiny_run):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert collect(tiny_run, full) == 0
    cmd = [sys.executable, "-m", "entropy_lens", "collect", str(tiny_run), "--dataset", "arith",
           "--out", str(killed), *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "samples" / "step=000000" / "part-00000.parquet").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = entropy_lens.open(killed).completed_steps
    assert partial != [0, 10, 20], "the sweep finished before it was killed; the test proves nothing"
    assert collect(tiny_run, killed) == 0
    for table in ("tokens", "samples", "updates"):
        got = getattr(entropy_lens.open(killed), table).collect()
        want = getattr(entropy_lens.open(full), table).collect()
        assert got.equals(want), table


def test_second_concurrent_sweep_is_refused(tmp_path, tiny_run, capsys):
    from entropy_lens.store import StoreWriter

    out = tmp_path / "store"
    assert collect(tiny_run, out) == 0
    capsys.readouterr()
    import json
    settings = json.loads((out / "lens.json").read_text())["settings"]
    with StoreWriter(out, kind="sweep", settings=settings):  # another process holds the store
        code = subprocess.run([sys.executable, "-m", "entropy_lens", "collect", str(tiny_run), "--dataset",
                               "arith", "--out", str(out), *FAST], capture_output=True, text=True)
    assert code.returncode == 2
    assert "another entropy-lens process is writing to this store" in code.stderr
    assert len(code.stderr.strip().splitlines()) == 1


def test_different_settings_into_the_same_store_are_refused(tmp_path, tiny_run, capsys):
    out = tmp_path / "store"
    assert collect(tiny_run, out) == 0
    capsys.readouterr()
    assert collect(tiny_run, out, "--temperature", "0.6") == 2
    err = capsys.readouterr().err
    assert "temperature" in err and "choose a new --out" in err
