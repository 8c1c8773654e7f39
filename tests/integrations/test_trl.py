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
from entropy_lens.integrations.trl import LIGER_REFUSAL, LensGRPOTrainer  # noqa: E402
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
