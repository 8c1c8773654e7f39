"""``LensGRPOTrainer`` against the real TRL: a few GRPO steps of a tiny Qwen2 on CPU, with capture and shaping.

Each run records, at every generation, the policy's weights (the policy that samples the batch) and what TRL
hands its loss (token ids, masks, advantages), and TRL's own advantages; the store is then checked against an
fp64 recompute under the recorded weights and against the registered shaper applied to TRL's advantages.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

import polars as pl  # noqa: E402
import torch  # noqa: E402
from trl import GRPOConfig  # noqa: E402

import entropy_lens  # noqa: E402
from entropy_lens.errors import UserError  # noqa: E402
from entropy_lens.integrations.trl import (LIGER_REFUSAL, LensGRPOTrainer, rank_jobs,  # noqa: E402
                                           sampler_logprobs, sharding_refusal)
from entropy_lens.train.config import SHAPERS, ShapingConfig  # noqa: E402
from entropy_lens.train.core import relative_position  # noqa: E402
from tests.conftest import make_tiny  # noqa: E402

G, PER_DEVICE, STEPS_PER_GEN, MAX_STEPS, MAX_LEN, TEMPERATURE = 4, 8, 2, 4, 10, 0.9


def digits_reward(completions, **_):
    """Mixed signs on a random policy: more digits is better."""
    return [(sum(ch.isdigit() for ch in c) - 3) / 3 for c in completions]


def length_reward(completion_ids, **_):
    return [0.05 * len(c) for c in completion_ids]


class Recording(LensGRPOTrainer):
    """Records, per generation (keyed by the step it is stored as), the weights that sampled it, the batch as
    TRL's loss receives it (before TRL's shuffle) and TRL's advantages."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.record: dict[int, dict] = {}

    def _generate_and_score_completions(self, inputs):
        step = int(self.state.global_step)
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        out = super()._generate_and_score_completions(inputs)
        b = out["completion_ids"].shape[0]
        self.record[step] = {"weights": weights, "trl_advantages": list(self._logs["advantages"])[-b:],
                             **{k: out[k].detach().clone() for k in ("prompt_ids", "prompt_mask", "completion_ids",
                                                                       "completion_mask", "advantages")}}
        return out


def grpo_args(tmp_path, **over) -> GRPOConfig:
    kw = dict(output_dir=str(tmp_path / "trl"), use_cpu=True, bf16=False, fp16=False, learning_rate=5e-3,
              lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=PER_DEVICE,
              steps_per_generation=STEPS_PER_GEN, gradient_accumulation_steps=1, num_generations=G,
              max_completion_length=MAX_LEN, temperature=TEMPERATURE, top_p=1.0, top_k=0, beta=0.0,
              loss_type="dapo", max_steps=MAX_STEPS, logging_steps=1, report_to="none", save_strategy="no",
              disable_tqdm=True, shuffle_dataset=False, dataloader_num_workers=0, seed=0)
    kw.update(over)
    return GRPOConfig(**kw)


def build(tmp_path, tokenizer, trainer_cls=Recording, **kw):
    model = make_tiny(tokenizer, seed=0)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    prompts = [f"Q:{a}+{b}=" for a in range(3, 9) for b in range(2, 5)]
    data = datasets.Dataset.from_dict({"prompt": prompts})
    return trainer_cls(model=model, reward_funcs=[digits_reward, length_reward], args=kw.pop("args"),
                       train_dataset=data, processing_class=tokenizer, **kw)


@pytest.fixture(scope="module", params=["position", "ppl"])
def run(request, tmp_path_factory, tiny_tokenizer):
    tmp = tmp_path_factory.mktemp(f"trl-{request.param}")
    torch.manual_seed(0)
    trainer = build(tmp, tiny_tokenizer, args=grpo_args(tmp), lens_store=tmp / "lens", shaping=request.param)
    trainer.train()
    return request.param, trainer, entropy_lens.open(tmp / "lens"), tmp


def fp64_stats(weights, tokenizer, prompt, completion) -> tuple[np.ndarray, np.ndarray]:
    """(log p, H) of each completion token under ``weights`` in fp64 at the sampling temperature, unpadded."""
    model = make_tiny(tokenizer, seed=0).double()
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in weights.items()})
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:len(prompt) + len(completion) - 1].double()
    logp = torch.log_softmax(logits / TEMPERATURE, dim=-1)
    ent = -(logp.exp() * logp).sum(-1)
    return logp[torch.arange(len(completion)), torch.tensor(completion)].numpy(), ent.numpy()


def batch_of(rec: dict) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of each row of a recorded generation batch, padding removed."""
    out = []
    for p, pm, c, cm in zip(rec["prompt_ids"], rec["prompt_mask"], rec["completion_ids"], rec["completion_mask"]):
        n = int(cm.sum())  # mask_truncated_completions is off (TRL's default): the mask is the length
        out.append((p[pm.bool()].tolist(), c[:n].tolist()))
    return out


def test_steps_are_update_counts_and_every_rollout_is_stored(run):
    _, trainer, store, _ = run
    gen_batch = PER_DEVICE * STEPS_PER_GEN
    assert store.manifest["kind"] == "train" and store.completed_steps == [0, 2] == sorted(trainer.record)
    samples = store.samples.sort("step", "prompt_id", "sample_id").collect()
    assert samples.height == 2 * gen_batch and set(samples["source"]) == {"trl"}
    assert samples.group_by("step", "prompt_id").len()["len"].to_list() == [G] * (2 * gen_batch // G)
    steps = store.steps.collect()
    assert steps["step"].to_list() == [0, 2] and steps["global_step"].to_list() == [2, 4]
    assert {"reward", "loss", "entropy", "rewards/digits_reward/mean"} <= set(steps.columns)
    assert store.vocab.collect().height >= len(trainer.processing_class)


def test_stored_ids_are_trls_and_stats_match_fp64_under_the_sampling_policy(run):
    _, trainer, store, _ = run
    tok = trainer.processing_class
    tokens = store.tokens.sort("step", "prompt_id", "sample_id", "position").collect()
    for step, rec in trainer.record.items():
        rows = tokens.filter(pl.col("step") == step)
        ids = [c for _, c in batch_of(rec)]
        assert rows["token_id"].to_list() == [t for c in ids for t in c]  # TRL's ids, no re-tokenisation
        lp, ent = map(np.concatenate, zip(*(fp64_stats(rec["weights"], tok, p, c) for p, c in batch_of(rec))))
        np.testing.assert_allclose(rows["logprob"].to_numpy(), lp, atol=1e-5, rtol=0)
        np.testing.assert_allclose(rows["entropy"].to_numpy(), ent, atol=1e-5, rtol=0)
    # the check tells policies apart: step 2's tokens under step 0's weights are off by far more than 1e-5
    p, c = batch_of(trainer.record[2])[0]
    lp0, _ = fp64_stats(trainer.record[0]["weights"], tok, p, c)
    first = tokens.filter((pl.col("step") == 2) & (pl.col("prompt_id") == 0) & (pl.col("sample_id") == 0))
    assert np.abs(first["logprob"].to_numpy() - lp0).max() > 1e-3


def padded(frame: pl.DataFrame, column: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``column`` of one step's token rows as [B, T] (rows by prompt_id, sample_id) and the mask."""
    per = frame.group_by("prompt_id", "sample_id", maintain_order=True).agg(column)[column].to_list()
    t = max(len(x) for x in per)
    values = torch.zeros(len(per), t, dtype=torch.float32)
    mask = torch.zeros(len(per), t, dtype=torch.float32)
    for i, x in enumerate(per):
        values[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
    return values, mask


def test_shaped_advantages_are_the_registered_shaper_on_trls_advantages(run):
    name, trainer, store, _ = run
    tokens = store.tokens.sort("step", "prompt_id", "sample_id", "position").collect()
    samples = store.samples.sort("step", "prompt_id", "sample_id").collect()
    moved = 0.0
    for step, rec in trainer.record.items():
        rows, srows = tokens.filter(pl.col("step") == step), samples.filter(pl.col("step") == step)
        adv, mask = padded(rows, "advantage")
        np.testing.assert_allclose(adv[:, 0].numpy(), rec["trl_advantages"], atol=1e-6)  # TRL's own A
        # the shaper on the whole step (every group whole), from the store alone
        want = SHAPERS.get(name)(adv, mask, logppl=torch.tensor(srows["logppl"].to_numpy()),
                                 group_ids=torch.tensor(srows["prompt_id"].to_numpy()),
                                 rel_pos=relative_position(mask), entropy=padded(rows, "entropy")[0],
                                 cfg=ShapingConfig())
        got = rows["shaped_advantage"].to_numpy()
        np.testing.assert_allclose(got, want[mask.bool()].numpy(), atol=1e-6, rtol=0)
        # and these are what TRL's loss received (its (B, T) advantages, before its shuffle)
        valid = torch.arange(rec["advantages"].shape[1])[None, :] < torch.tensor(
            [len(c) for _, c in batch_of(rec)])[:, None]
        np.testing.assert_allclose(rec["advantages"][valid].numpy(), got, atol=1e-7, rtol=0)
        moved += float(np.abs(got - rows["advantage"].to_numpy()).sum())
    assert moved > 0  # the shaper did something


def test_report_runs_on_the_store(run, tmp_path):
    from entropy_lens.report.build import build_report

    _, _, store, _ = run
    report = build_report(store.root, tmp_path / "report", n_boot=20, draw_figures=False)
    assert (tmp_path / "report" / "REPORT.md").is_file() and report is not None


def test_liger_is_refused_in_one_line(tmp_path, tiny_tokenizer):
    with pytest.raises(UserError) as e:
        build(tmp_path, tiny_tokenizer, args=grpo_args(tmp_path, use_liger_kernel=True), lens_store=tmp_path / "s")
    assert str(e.value) == LIGER_REFUSAL and "\n" not in str(e.value)


def test_unknown_shaper_is_one_line(tmp_path, tiny_tokenizer):
    with pytest.raises(UserError, match="did you mean"):
        build(tmp_path, tiny_tokenizer, args=grpo_args(tmp_path), shaping="positon")


def test_one_process_writes_one_part_a_step_and_no_sampler_logprobs(run):
    _, _, store, _ = run
    assert "parts" not in store.manifest and store.multi_part_steps("tokens") == {}
    parts = {p.name for p in store.root.rglob("*.parquet") if p.parent.name.startswith("step=")}
    assert parts == {"part-00000.parquet"}
    tokens = store.tokens.collect()
    assert tokens["sampler_logprob"].null_count() == tokens.height > 0  # TRL's own generation reports none
    assert "sampler_logprob_mismatch" not in store.steps.collect().columns


# ------------------------------------------------------------------------------------ a sampler's log-probs
def planted(i: int, t: int) -> float | None:
    """The log-prob the fake sampler reports for token t of its i-th completion (None: vLLM had no value)."""
    return None if (i, t) == (0, 1) else -(0.5 + 0.01 * i + 0.001 * t)


def env_mask(i: int, n: int) -> list[int]:
    """Completion 2's tokens 1 and 2 are not the model's (as a tool's response): mask 0."""
    return [0 if i == 2 and t in (1, 2) else 1 for t in range(n)]


def fake_sampler(prompts, trainer):
    """A rollout_func: fixed completions (lengths 3..MAX_LEN, last token EOS for even i) with planted log-probs,
    as vLLM's generation hands them to TRL; every call is recorded on the trainer."""
    tok = trainer.processing_class
    prompt_ids = [tok(p)["input_ids"] for p in prompts]
    completion_ids, logprobs, masks = [], [], []
    for i in range(len(prompts)):
        n = 3 + i % (MAX_LEN - 2)
        ids = [5 + (7 * i + 3 * t) % 40 for t in range(n)]  # within the tiny vocabulary (52)
        if i % 2 == 0:
            ids[-1] = tok.eos_token_id
        completion_ids.append(ids)
        logprobs.append([planted(i, t) for t in range(n)])
        masks.append(env_mask(i, n))
    trainer.sampled.append((completion_ids, logprobs, masks))
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs, "env_mask": masks}


class Sampled(LensGRPOTrainer):
    def __init__(self, *a, **kw):
        self.sampled = []
        super().__init__(*a, **kw)


def test_the_samplers_logprobs_are_stored_per_token_with_the_steps_mismatch(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.manual_seed(0)
    trainer = build(tmp_path, tiny_tokenizer, trainer_cls=Sampled, args=grpo_args(tmp_path, max_steps=STEPS_PER_GEN),
                    lens_store=tmp_path / "lens", rollout_func=fake_sampler)
    trainer.train()
    store = entropy_lens.open(tmp_path / "lens")
    assert store.completed_steps == [0] and len(trainer.sampled) == 1
    ids, logprobs, masks = trainer.sampled[0]
    rows = store.tokens.sort("prompt_id", "sample_id", "position").collect()
    assert rows["token_id"].to_list() == [t for c in ids for t in c]
    want = [None if lp is None or m == 0 else lp for lps, ms in zip(logprobs, masks) for lp, m in zip(lps, ms)]
    got = rows["sampler_logprob"].to_list()
    assert [x is None for x in got] == [x is None for x in want] and sum(x is None for x in got) == 3
    np.testing.assert_allclose([x for x in got if x is not None], [x for x in want if x is not None], rtol=0, atol=1e-7)
    # the steps row: mean |logprob - sampler_logprob| over the tokens with a sampler value
    lp = rows["logprob"].to_numpy().astype(np.float64)
    valid = np.array([x is not None for x in want])
    mismatch = np.abs(lp[valid] - np.array([x for x in want if x is not None], np.float32).astype(np.float64)).mean()
    steps = store.steps.collect()
    assert steps["step"].to_list() == [0] and mismatch > 0.1
    assert steps["sampler_logprob_mismatch"][0] == pytest.approx(mismatch, rel=1e-9)


def test_sampler_logprobs_are_flat_with_nan_where_there_is_none():
    got = sampler_logprobs([[-1.0, None], [-0.5, -0.25, 0.0]], [2, 3], tool_mask=[[1, 1], [1, 1, 0]])
    assert got.dtype == np.float32 and got.shape == (5,)
    np.testing.assert_array_equal(got, np.array([-1.0, np.nan, -0.5, -0.25, np.nan], np.float32))
    assert np.isnan(sampler_logprobs(None, [2, 1])).all() and sampler_logprobs(None, [2, 1]).shape == (3,)
    with pytest.raises(UserError) as e:
        sampler_logprobs([[-1.0], [-0.5]], [1, 2])
    assert str(e.value) == ("LensGRPOTrainer: the sampler returned 1 log-probs for completion 1 of 2 tokens; a "
                            "rollout_func must return one log-prob per completion token")
    with pytest.raises(UserError, match="for 1 completions, not 2"):
        sampler_logprobs([[-1.0]], [1, 2])


# ------------------------------------------------------------------------------------ several processes
def test_rank_jobs_are_global_and_never_collide():
    """Two ranks × two generation batches of 6 rows, groups of 4: the ids are TRL's global grouping."""
    n, b, g = 2, 6, 4
    got = {(k, r): rank_jobs(k, b, n, r, g) for k in (0, 1) for r in (0, 1)}
    everything = [j for k in (0, 1) for r in (0, 1) for j in got[k, r]]
    assert everything == [(j // g, j % g) for j in range(2 * n * b)] and len(set(everything)) == 2 * n * b
    assert got[0, 0][-2:] == [(1, 0), (1, 1)] and got[0, 1][:2] == [(1, 2), (1, 3)]  # a group split over ranks


class FakeAccelerator:
    def __init__(self, rank: int, n: int, log: list):
        self.process_index, self.num_processes, self.is_main_process, self.log = rank, n, rank == 0, log

    def wait_for_everyone(self):
        self.log.append(("barrier", self.process_index))


def test_each_rank_writes_its_part_and_rank_0_lists_the_step_after_the_barrier(tmp_path):
    """``_lens_put`` as rank 1 and rank 0 of a two-process run would call it, one after the other."""
    from types import SimpleNamespace

    from entropy_lens.store import StoreWriter, part_path

    def rows(prompt_ids):
        k = len(prompt_ids)
        tok = dict(step=[4] * k, prompt_id=prompt_ids, sample_id=[0] * k, position=[0] * k, rel_position=[0.0] * k,
                   token_id=[1] * k, logprob=[-1.0] * k, entropy=[0.5] * k, sum_p2=[0.5] * k)
        smp = dict(step=[4] * k, prompt_id=prompt_ids, sample_id=[0] * k, length=[1] * k, truncated=[False] * k,
                   prompt=["q"] * k, text=["a"] * k, answer=[None] * k, gold=[""] * k, format_ok=[True] * k,
                   correct=[True] * k, reward=[1.0] * k, logppl=[1.0] * k, mean_entropy=[0.5] * k, source=["trl"] * k)
        return tok, smp

    log: list = []
    with StoreWriter(tmp_path, kind="train", settings={}) as writer:
        rank1 = SimpleNamespace(accelerator=FakeAccelerator(1, 2, log), lens_root=tmp_path, _lens_writer=None)
        LensGRPOTrainer._lens_put(rank1, 4, *rows([2, 3]))
        assert part_path(tmp_path, "samples", 4, 1).is_file() and log == [("barrier", 1)]
        assert entropy_lens.open(tmp_path).completed_steps == []  # rank 1 lists nothing
        rank0 = SimpleNamespace(accelerator=FakeAccelerator(0, 2, log), lens_root=tmp_path, _lens_writer=writer)
        LensGRPOTrainer._lens_put(rank0, 4, *rows([0, 1]))
    assert log == [("barrier", 1), ("barrier", 0)]
    store = entropy_lens.open(tmp_path)
    assert store.completed_steps == [4] and store.manifest["parts"] == {"tokens": {"4": 2}, "samples": {"4": 2}}
    assert store.samples.collect()["prompt_id"].to_list() == [0, 1, 2, 3]


def test_a_rank_that_does_not_see_rank_0s_store_stops_in_one_line(tmp_path):
    from types import SimpleNamespace

    rank1 = SimpleNamespace(accelerator=FakeAccelerator(1, 2, []), lens_root=tmp_path / "elsewhere",
                            _lens_opened=False, is_main=False)
    with pytest.raises(UserError) as e:
        LensGRPOTrainer._lens_open(rank1, conversational=False)
    assert str(e.value) == (f"LensGRPOTrainer: rank 1 does not see the store {tmp_path / 'elsewhere'} that rank 0 "
                            "opened (no lens.json); lens_store must be a folder every process sees (on several "
                            "nodes, a shared filesystem)")


def test_sharded_weights_are_refused_for_the_capture_only():
    assert sharding_refusal(False, None, True) is None and sharding_refusal(False, 2, True) is None
    assert sharding_refusal(True, None, False) is None and sharding_refusal(False, 3, False) is None
    assert sharding_refusal(False, 3, True) == (
        "LensGRPOTrainer: the capture forward (lens_store, or a shaper that reads log-PPL or entropy) does not "
        "support DeepSpeed ZeRO-3: it reads the full lm_head weight, which DeepSpeed ZeRO-3 shards; use DDP or "
        "DeepSpeed ZeRO-1/2, or drop lens_store and use a statistics-free shaper")
    assert "support FSDP:" in sharding_refusal(True, None, True)
