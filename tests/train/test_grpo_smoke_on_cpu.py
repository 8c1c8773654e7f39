"""A few steps of the real trainer on a minuscule model: checkpoints, steps.parquet, rollouts, resume, --from."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch

import entropy_lens
from entropy_lens.capture.scoring import STAT_FIELDS
from entropy_lens.checkpoints import discover
from entropy_lens.cli import main
from entropy_lens.models import TinyModelConfig, build_tiny_model
from entropy_lens.tasks.arith import verify
from entropy_lens.tasks import Verdict
from entropy_lens.train import grpo
from entropy_lens.train.config import TrainConfig

TINY = dict(sft_steps=3, sft_batch_size=8, prompts_per_step=2, group_size=4, max_gen_rounds=2, max_new_tokens=16,
            overlong_buffer=4, eval_every=2, save_every=2, eval_samples=1, lr=1e-3, warmup_steps=1)


@pytest.fixture(autouse=True)
def minuscule(monkeypatch):
    """A 2-layer width-32 model, and a verifier that calls even-length responses correct, so groups are
    mixed and every step updates (a random model never gets an arith answer right)."""
    small = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                            max_positions=64)
    monkeypatch.setattr(grpo, "build_tiny_model", lambda tok, seed=0: build_tiny_model(tok, small, seed=seed))

    def fake_verify(response: str, gold: str) -> Verdict:
        ok = len(response) % 2 == 0
        return Verdict(answer=None, format_ok=ok, correct=ok, reward=1.0 if ok else -1.0)

    monkeypatch.setattr(grpo, "verify", fake_verify)


def frame(run):
    return pl.read_parquet(run / "steps.parquet").drop(pl.selectors.starts_with("seconds_"))


def test_train_writes_a_readable_run(tmp_path):
    run = tmp_path / "run"
    summary = grpo.train(TrainConfig(out=str(run), steps=3, **TINY))
    assert summary.last_step == 3
    assert [c.step for c in discover(run)] == [0, 2, 3]
    assert sorted(p.parent.name for p in run.glob("checkpoints/*/trainer_state.pt")) == ["step_3"]
    steps = pl.read_parquet(run / "steps.parquet")
    assert steps["step"].to_list() == [0, 1, 2, 3]
    assert steps["eval_accuracy"].is_null().to_list() == [False, True, False, False]
    for col in ("reward_mean", "accuracy", "entropy", "entropy_pos", "entropy_neg", "entropy_pos_sample",
                "entropy_neg_sample", "response_length", "clip_frac_low", "clip_frac_high", "cov_logp_adv",
                "seconds_sample", "seconds_score", "seconds_update", "seconds_score_after"):
        assert steps[col][:3].null_count() == 0, col
    store = entropy_lens.open(run)
    assert store.manifest["kind"] == "train" and store.completed_steps == [0, 1, 2]
    samples = store.samples.collect()
    tokens = store.tokens.collect()
    assert set(samples["source"]) == {"train"}
    assert len(tokens) == samples["length"].sum()
    kept = tokens.filter(pl.col("advantage").is_not_null())
    assert len(kept) > 0 and kept["shaped_advantage"].null_count() == 0
    assert (kept["advantage"] == kept["shaped_advantage"]).all()  # --shaping none
    # the stored log-probs are the rollout policy's: re-scoring step 0 under checkpoint 0 gives them back
    from entropy_lens.capture.scoring import score
    from entropy_lens.models import load_checkpoint
    model, tok = load_checkpoint(run / "checkpoints" / "step_0")
    s0 = samples.filter(pl.col("step") == 0).sort("prompt_id", "sample_id")
    t0 = tokens.filter(pl.col("step") == 0).sort("prompt_id", "sample_id", "position")
    resp = t0.group_by(["prompt_id", "sample_id"], maintain_order=True).agg("token_id")["token_id"].to_list()
    prompts = [tok(p)["input_ids"] for p in s0["prompt"]]
    again = score(model, prompts, resp)
    for k in STAT_FIELDS:
        assert torch.allclose(torch.from_numpy(getattr(again, k)), t0[k].to_torch(), atol=1e-5), k


def trained_responses(tokens, samples, step, tok):
    """The trained (non-null advantage) responses of ``step``: their tokens sorted by key, prompt ids, token ids."""
    t = tokens.filter((pl.col("step") == step) & pl.col("advantage").is_not_null()).sort(
        "prompt_id", "sample_id", "position")
    g = t.group_by(["prompt_id", "sample_id"], maintain_order=True).agg("token_id")
    text = {(r["prompt_id"], r["sample_id"]): r["prompt"] for r in samples.filter(pl.col("step") == step).iter_rows(named=True)}
    prompts = [tok(text[k])["input_ids"] for k in zip(g["prompt_id"], g["sample_id"])]
    return t, prompts, g["token_id"].to_list()


def test_updates_are_the_trained_tokens_under_the_next_checkpoint(tmp_path):
    """Score-after-update: step s's trained tokens, scored under the weights right after update s, which are the
    saved checkpoint s + 1 (the policy that samples step s + 1)."""
    from entropy_lens.capture.scoring import score
    from entropy_lens.models import load_checkpoint

    run = tmp_path / "run"
    grpo.train(TrainConfig(out=str(run), steps=2, **{**TINY, "save_every": 1, "temperature": 0.7}))
    store = entropy_lens.open(run)
    assert store.manifest["completed"]["updates"] == [0, 1]
    tokens, samples, updates = store.tokens.collect(), store.samples.collect(), store.updates.collect()
    key = ["prompt_id", "sample_id", "position"]
    for step in (0, 1):
        model, tok = load_checkpoint(run / "checkpoints" / f"step_{step + 1}")
        t, prompts, resp = trained_responses(tokens, samples, step, tok)
        u = updates.filter(pl.col("step") == step)
        assert len(t) > 0 and u.select(key).equals(t.select(key))  # the trained tokens only, every one of them
        assert set(u["next_step"]) == {step + 1}
        again = score(model, prompts, resp, temperature=0.7)
        np.testing.assert_allclose(u["logprob_next"].to_numpy(), again.logprob, rtol=0, atol=1e-5)
        np.testing.assert_allclose(u["entropy_next"].to_numpy(), again.entropy, rtol=0, atol=1e-5)
        assert (u["logprob_next"] - t["logprob"]).abs().max() > 1e-4  # the update moved them: a test that can fail
    assert u["entropy_next"].null_count() == 0 and tokens["varentropy"].null_count() == 0
    view = store.tokens_with_updates().collect()
    assert len(view) == len(updates) and view["advantage"].null_count() == 0
    steps = pl.read_parquet(run / "steps.parquet")
    assert steps["seconds_score_after"].is_null().to_list() == [False, False, True]


def test_resume_repeats_an_uninterrupted_run(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    grpo.train(TrainConfig(out=str(straight), steps=4, **TINY))
    grpo.train(TrainConfig(out=str(stopped), steps=2, **TINY))
    grpo.train(TrainConfig(out=str(stopped), steps=4, **TINY))  # resumes from checkpoints/step_2
    assert frame(straight).equals(frame(stopped))
    for table in ("tokens", "updates"):  # the post-update scoring draws no random numbers
        a = getattr(entropy_lens.open(straight), table).collect()
        b = getattr(entropy_lens.open(stopped), table).collect()
        assert len(a) > 0 and a.equals(b), table
    wa = (straight / "checkpoints" / "step_4" / "model.safetensors").read_bytes()
    wb = (stopped / "checkpoints" / "step_4" / "model.safetensors").read_bytes()
    assert wa == wb


def test_branch_from_checkpoint_with_position_shaping_via_cli(tmp_path, capsys):
    base = tmp_path / "base"
    grpo.train(TrainConfig(out=str(base), steps=2, **TINY))
    branch = tmp_path / "branch"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k != "sft_steps"]
    assert main(["train", "--out", str(branch), "--from", str(base / "checkpoints" / "step_2"),
                 "--shaping", "position", "--steps", "2", "--window", "3:", "--no-score-after-update", *flags]) == 0
    assert str(branch) in capsys.readouterr().out
    steps = pl.read_parquet(branch / "steps.parquet")
    assert steps["step"].to_list() == [2, 3, 4]
    assert steps["shaping_active"].to_list() == [False, True, None]
    tokens = entropy_lens.open(branch).tokens.filter(pl.col("advantage").is_not_null()).collect()
    on = tokens.filter(pl.col("step") == 3)
    off = tokens.filter(pl.col("step") == 2)
    assert (off["advantage"] == off["shaped_advantage"]).all()
    assert ((on["shaped_advantage"] - on["advantage"]).abs() > 0).any()
    assert [c.step for c in discover(branch)] == [2, 4]
    assert entropy_lens.open(branch).manifest["completed"]["updates"] == []  # --no-score-after-update
    assert steps["seconds_score_after"].null_count() == 3


def test_unknown_shaper_is_a_user_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x"), "--shaping", "positon"]) == 2
    assert "did you mean 'position'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_config_settings_exclude_run_length():
    s = TrainConfig().settings()
    assert "steps" not in s and "out" not in s and s["shaping"] == "none"
    assert {f.name for f in dataclasses.fields(TrainConfig)} >= {"ppl_alpha", "position_k", "window", "init_from"}


@pytest.mark.parametrize("flag, env, expected", [(3, None, 3), (3, "1", 3), (0, "1", 1), (0, "4", 4)])
def test_threads_flag_wins_then_omp_num_threads(monkeypatch, flag, env, expected):
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    assert grpo.resolve_threads(flag) == expected


def test_threads_auto_without_env_takes_every_core(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(grpo.os, "cpu_count", lambda: 7)
    assert grpo.resolve_threads(0) == 7


def test_negative_threads_is_a_user_error():
    with pytest.raises(grpo.UserError, match="--threads -1"):
        grpo.resolve_threads(-1)


def test_first_sampling_round_is_sized_by_the_previous_steps_mixed_share():
    cfg = TrainConfig(prompts_per_step=32, gen_oversample=2.0, gen_margin=1.15)
    assert grpo.first_round_prompts(cfg, None) == 64  # a run's first step: the cap
    assert grpo.first_round_prompts(cfg, 1.0) == 37  # ceil(32 × 1.15)
    assert grpo.first_round_prompts(cfg, 0.8) == 46  # ceil(32 × 1.15 / 0.8)
    assert grpo.first_round_prompts(cfg, 0.1) == 64 and grpo.first_round_prompts(cfg, 0.0) == 64  # capped
    assert grpo.first_round_prompts(TrainConfig(prompts_per_step=32, gen_margin=0.5), 1.0) == 32  # never below P


def test_steps_record_what_dynamic_sampling_sampled(tmp_path):
    run = tmp_path / "run"
    cfg = TrainConfig(out=str(run), steps=3, **{**TINY, "prompts_per_step": 3, "max_gen_rounds": 1})
    grpo.train(cfg)
    steps = pl.read_parquet(run / "steps.parquet").filter(pl.col("step") < 3)
    mixed, sampled = steps["mixed_fraction"].to_list(), steps["prompts_sampled"].to_list()
    assert sampled[0] == grpo.first_round_prompts(cfg, None)
    assert sampled[1:] == [grpo.first_round_prompts(cfg, m) for m in mixed[:-1]]
    assert all(0 <= m <= 1 for m in mixed) and steps["kept_groups"].to_list() == [
        min(3, round(m * n)) for m, n in zip(mixed, sampled)]


@pytest.mark.parametrize("field, flag", [("sft_slip", "--sft-slip"), ("sft_no_marker", "--sft-no-marker"),
                                         ("sft_double_answer", "--sft-double-answer")])
def test_sft_noise_outside_0_1_is_refused_before_anything_is_written(tmp_path, field, flag):
    out = tmp_path / "run"
    with pytest.raises(grpo.UserError, match=f"{flag} 1.5: a chance"):
        grpo.train(TrainConfig(out=str(out), steps=1, **{field: 1.5}))
    assert not out.exists()
