"""``LensGRPOTrainer``: TRL's ``GRPOTrainer`` that writes every training rollout into an entropy-lens store, live,
and applies a registered advantage shaper.

    from entropy_lens.integrations.trl import LensGRPOTrainer
    trainer = LensGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...), train_dataset=...,
                              processing_class=tok, lens_store="out/lens", shaping="position")

**Where it hooks into TRL** (``trl>=1.16``; all private methods, so pinned by the tests against the real
library): ``_generate`` hands back the prompt and completion token ids TRL sampled (stashed, not changed);
``_calculate_rewards`` the rewards of every reward function (gathered over processes); and
``_generate_and_score_completions``, after TRL computed its (B,) advantages, is where this trainer

1. runs one no-grad forward of the policy on TRL's own ``prompt + completion`` ids (no re-tokenisation: the
   stored ``token_id`` are the ids TRL trains on), through :func:`entropy_lens.capture.scoring.score`, i.e. the
   vocabulary-chunked kernel on the final hidden states and the lm_head at TRL's sampling ``temperature``:
   per token the exact full-vocabulary log-prob, entropy, Σp², Σp² log p and varentropy.  The weights are
   those that just sampled the batch (no update happens between TRL's generation and this hook), so they are
   the policy that sampled each token — with TRL's own generation; with vLLM they are the trainer's weights,
   not vLLM's sampler, whose own per-token log-prob is stored beside them (**Sampler log-probs** below).
   Entropy is of ``softmax(logits / temperature)``, the whole vocabulary (``top_p`` / ``top_k`` cuts are not
   applied to it), as everywhere in entropy-lens;
2. shapes the advantages and hands TRL the (B, T) tensor in place of its (B,) one (TRL's ``_compute_loss``
   accepts both; the shuffle and split into mini-batches that follow act on rows, so every mini-batch, every
   ``num_iterations`` pass and every ``loss_type`` sees the shaped values);
3. writes the step's ``tokens`` and ``samples`` partitions (``source`` = "trl").

``log`` records TRL's logged scalars (the same dict TRL sends to its loggers) into ``steps.parquet``.

**Sampler log-probs.**  When TRL's generation reports the sampler's per-token log-probs (``_generate``'s fifth
value, which TRL pads into ``sampling_per_token_logps``: vLLM's log-prob of each sampled token, or the
``logprobs`` a ``rollout_func`` returns), they are stored as ``tokens.sampler_logprob``, so
``logprob − sampler_logprob`` is the mismatch between this exact recompute and the sampler (:func:`sampler_logprobs`:
null where vLLM gave no value and for tokens the model did not sample, ``tool_mask`` / ``env_mask`` 0).  Without
them (TRL's own generation) the column is null.  The step's row in ``steps.parquet`` then carries
``sampler_logprob_mismatch``: mean over the step's tokens on every process of |logprob − sampler_logprob|
(TRL's own ``sampling/sampling_logp_difference/mean``, logged with ``vllm_importance_sampling_correction``,
compares the sampler with TRL's training-precision recompute instead, and averages per process).

**Steps.**  Rollouts sampled after k optimizer updates (``state.global_step`` = k at generation) are stored as
step k, so TRL's ``checkpoint-k`` is the policy of step k and ``entropy-lens collect OUTPUT_DIR`` lines up.  With
``steps_per_generation = m`` the stored steps are 0, m, 2m, ...  A second generation batch at the same k (when
``gradient_accumulation_steps`` exceeds ``steps_per_generation × num_iterations``) is appended to step k with
prompt ids after the first's.  ``steps.parquet`` has one row per rollout step: the scalars TRL logged while that
step was the latest rollout (averaged when it logged several times, e.g. ``logging_steps=1`` with m > 1), TRL's
names as they are (``reward``, ``entropy``, ``rewards/NAME/mean``, ``completions/mean_length``, ``loss``, ...),
and ``global_step``, TRL's update count at the last of those logs (the update that trained on step k is k+1).

**Samples.**  ``prompt``: the prompt ids decoded with their special tokens (the text the model read, chat template
included); ``text``: TRL's completion text (decoded without special tokens; for conversational prompts the
assistant content).  ``reward``: the weighted sum of the reward functions as TRL sums them (``reward_weights``,
NaN-skipping); ``correct`` is ``reward > 0`` (TRL has no notion of a reference answer); ``answer`` /
``format_ok`` are the last ``\\boxed{}`` and "exactly one box", as ``entropy-lens score`` grades a TRL dump;
``gold`` is empty.  Each reward function's own value is *not* in ``samples`` (the schema has no per-function
columns); their per-step means are in ``steps.parquet`` (``rewards/NAME/mean``).  ``prompt_id`` is the GRPO group
(``index // num_generations`` over the whole generation batch), ``sample_id`` the member of the group.
``tokens.advantage`` is TRL's advantage, ``shaped_advantage`` the value the loss used (= ``advantage`` without
shaping).  Tool-call completions are stored whole, tool-response tokens included (no mask column).

**Shaping** (``shaping=`` any name of :data:`entropy_lens.train.config.SHAPERS`; ``None`` / "none" = TRL's
advantages untouched).  Shapers get ``advantages`` = TRL's A broadcast over each completion's tokens [B, T],
``mask`` = the completion's tokens (its length, not TRL's loss mask: tokens outside the loss mask get a shaped
value the loss ignores), ``rel_pos`` = position / length, ``entropy`` = the captured token entropy,
``logppl`` = −mean captured log-prob, ``group_ids`` = the GRPO group.  POSITION-style shapers act on the local
(B, T) tensor.  PPL-style shapers (``ppl``, ``ppl-high``: :data:`GROUP_SHAPERS`) need the whole group's log-PPL,
and a group may span processes, so each process gathers every process's (B,) log-PPL and A
(``accelerator.gather``: every process has the same B), applies the shaper to the whole generation batch as
[N·B, 1] (its weight depends only on the sample, so this equals the shaper on [N·B, T]), and keeps its own
rows: a group split over ranks is shaped exactly as on one process.  With one process the gather is the
identity and the group lies within the batch.  ``entropy-top`` ranks the tokens of the local generation batch.
Shapers act on every step (no window).  The capture forward runs whenever a store is written or the shaper
reads log-PPL or entropy (not for ``position``-style shapers without a store).

**Multi-process.**  Every rank scores and lays out its own rows, with global prompt ids (:func:`rank_jobs`:
TRL's ``index // num_generations`` over the whole generation batch, so ranks never collide), and writes them
as ``tokens/step=K/part-{rank:05d}.parquet`` (and samples) with the store's atomic temp-then-rename writes
(:func:`entropy_lens.store.write_parts`).  Rank 0 opens the store first (lock, manifest, settings check, vocab)
and the others start writing only after a barrier, once they see its ``lens.json``; after a step's files,
``accelerator.wait_for_everyone()``, then rank 0 alone lists step K in ``lens.json`` with its part count
(``StoreWriter.complete_step``, which checks every part file is there) and writes ``steps.parquet``.  A step is
thus listed only when every rank has written it, readers read every listed part of it, and a killed run resumes
as a one-process one does (a step rewritten by fewer processes lists fewer parts; leftover part files of higher
ranks are never read).  With one process the store is exactly the one-process layout (``part-00000`` only, no
``parts`` in the manifest).  Tested with one process, and with the two ranks' writes made one after the other
in one process; not run on several processes here.  Still refused, in one line (:func:`sharding_refusal`): the
capture forward under FSDP or DeepSpeed ZeRO-3 (it reads the whole lm_head weight, which those shard), i.e.
``lens_store`` or a statistics-reading shaper with sharded weights; DDP and ZeRO-1/2 are fine.  Shaping alone
with N processes works as described above (it needs no store).

``use_liger_kernel=True`` is refused: Liger's fused loss replaces the ``_compute_loss`` path whose advantages
this trainer shapes (and never materialises the logits), so the shaper would silently do nothing.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import torch
from trl import GRPOTrainer

from entropy_lens.capture.backends import Response
from entropy_lens.capture.config import SamplingRecord
from entropy_lens.capture.scoring import STAT_FIELDS, Scores, score
from entropy_lens.capture.tables import grade_columns, layout_tables, vocab_table
from entropy_lens.errors import UserError
from entropy_lens.store import MANIFEST, StoreWriter, write_parts
from entropy_lens.tasks import Verdict
from entropy_lens.tasks.math import count_boxed, extract_boxed
from entropy_lens.train.config import SHAPERS, ShapingConfig
from entropy_lens.train.core import relative_position

__all__ = ["LensGRPOTrainer", "GROUP_SHAPERS", "LIGER_REFUSAL", "sampler_logprobs", "sharding_refusal"]

SOURCE = "trl"
#: Shapers whose value for a sample depends on its whole GRPO group (log-PPL standardised per group): applied to
#: the generation batch gathered over processes.
GROUP_SHAPERS = ("ppl", "ppl-high")
#: Shapers that read neither log-PPL nor entropy: without a store they need no capture forward.
STAT_FREE_SHAPERS = ("none", "position", "position-begin", "positive-only", "negative-only")
LIGER_REFUSAL = ("LensGRPOTrainer: use_liger_kernel=True is not supported (Liger's fused loss bypasses the loss "
                 "whose advantages this trainer shapes and never forms the logits it captures); set "
                 "use_liger_kernel=False")


class LensGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` plus live capture into an entropy-lens store and a registered advantage shaper.

    Every argument of ``GRPOTrainer`` is accepted unchanged; the additions (module docstring for what they do):

    * ``lens_store``: folder of the entropy-lens store to write (kind "train", source "trl"); None = no capture.
    * ``shaping``: a registered shaper name (``entropy-lens ls`` lists them); None or "none" = no shaping.
    * ``shaping_config``: the shapers' hyper-parameters (:class:`ShapingConfig`, paper defaults when None).
    * ``lens_batch_size``: sequences per no-grad capture forward (memory, not results).
    """

    def __init__(self, *args: Any, lens_store: str | Path | None = None, shaping: str | None = None,
                 shaping_config: ShapingConfig | None = None, lens_batch_size: int = 64, **kwargs: Any):
        targs = inspect.signature(GRPOTrainer.__init__).bind_partial(None, *args, **kwargs).arguments.get("args")
        if targs is not None and getattr(targs, "use_liger_kernel", False):
            raise UserError(LIGER_REFUSAL)
        self.lens_shaping = "none" if shaping is None else str(shaping)
        self.lens_shaper = SHAPERS.get(self.lens_shaping)  # an unknown name: one "did you mean" line
        self.lens_shaping_config = shaping_config or ShapingConfig()
        self.lens_root = None if lens_store is None else Path(lens_store)
        self.lens_batch_size = int(lens_batch_size)
        self._lens_writer: StoreWriter | None = None
        self._lens_rollout: tuple | None = None  # the last generation's ids, completions, sampler log-probs, mask
        self._lens_rewards: torch.Tensor | None = None  # [N·B, F] rewards of the last generation
        self._lens_pending: tuple[int, list[tuple[dict, dict]]] | None = None  # (step, its batches)
        self._lens_last_step: int | None = None
        self._lens_steps: dict[int, dict[str, Any]] = {}
        self._lens_counts: dict[int, dict[str, int]] = {}
        self._lens_opened = False  # every rank: the store was opened (by rank 0) before any rank writes to it
        self._lens_mismatch: dict[int, list[float]] = {}  # step -> [Σ |logprob - sampler_logprob|, tokens]
        super().__init__(*args, **kwargs)
        stage = getattr(getattr(self.accelerator.state, "deepspeed_plugin", None), "zero_stage", None)
        refusal = sharding_refusal(bool(getattr(self, "is_fsdp_enabled", False)), stage, self._lens_captures)
        if refusal:
            raise UserError(refusal)

    # ------------------------------------------------------------------------------------------ TRL's hooks
    @property
    def _lens_active(self) -> bool:
        return self.lens_root is not None or self.lens_shaping != "none"

    @property
    def _lens_captures(self) -> bool:
        """Whether steps run the capture forward (a store is written, or the shaper reads the statistics)."""
        return self.lens_root is not None or self.lens_shaping not in STAT_FREE_SHAPERS

    def _generate(self, prompts: list):
        result = super()._generate(prompts)
        if self.model.training:
            # prompt ids, completion ids, completions, the sampler's per-token log-probs (None without vLLM or a
            # rollout_func that returns them) and the tool mask (a rollout_func's env_mask; None without either)
            self._lens_rollout = (result[0], result[1], result[3], result[4], result[2])
        return result

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.model.training:
            self._lens_rewards = rewards
        return rewards

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training and self._lens_active:
            with torch.no_grad():
                out["advantages"] = self._lens_step(out)
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        training = self.model.training
        super().log(logs, start_time)  # TRL adds its averaged metrics to ``logs`` in place
        if self.lens_root is not None and training and self.accelerator.is_main_process:
            self._lens_log(logs)

    def train(self, *args: Any, **kwargs: Any):
        try:
            return super().train(*args, **kwargs)
        finally:
            self._lens_close()

    # ------------------------------------------------------------------------------------------ one step
    def _lens_step(self, out: dict) -> torch.Tensor:
        """Capture, shape and write the generation batch in ``out``; returns the advantages the loss uses:
        TRL's (B,) when nothing is shaped, else the shaped (B, T), T = ``out["completion_ids"].shape[1]``."""
        step = int(self.state.global_step)
        self._lens_last_step = step
        prompt_ids, completion_ids, completions, sampler_logps, tool_mask = self._lens_rollout
        adv = out["advantages"]
        lengths = [len(c) for c in completion_ids]
        stats = self._lens_score(prompt_ids, completion_ids) if self._lens_captures else None
        shaped = self._lens_shape(adv, lengths, out["completion_ids"].shape[1], stats)
        if self.lens_root is not None:
            sampler = sampler_logprobs(sampler_logps, lengths, tool_mask)
            self._lens_write(step, prompt_ids, completion_ids, completions, stats, adv, shaped, lengths, sampler)
            self._lens_add_mismatch(step, stats.logprob, sampler)
        return adv if shaped is None else shaped

    def _lens_score(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]) -> Scores:
        """Per-token statistics of each completion under the current (sampling) weights, TRL's ids as they are."""
        model = self.accelerator.unwrap_model(self.model)
        # Batched by total length, so that a forward pads little (20-30% of the capture on mixed lengths).
        order = sorted(range(len(completion_ids)), key=lambda i: len(prompt_ids[i]) + len(completion_ids[i]))
        got = score(model, [list(prompt_ids[i]) for i in order], [list(completion_ids[i]) for i in order],
                    temperature=float(self.temperature), batch_size=self.lens_batch_size)
        lengths = [len(c) for c in completion_ids]
        starts = np.concatenate([[0], np.cumsum([lengths[i] for i in order])])
        start_of = {i: int(starts[k]) for k, i in enumerate(order)}
        rows = np.concatenate([np.arange(start_of[i], start_of[i] + lengths[i]) for i in range(len(lengths))]
                              + [np.zeros(0, np.int64)]).astype(np.int64)
        return Scores(*(getattr(got, k)[rows] for k in STAT_FIELDS), lengths=lengths)

    def _lens_shape(self, adv: torch.Tensor, lengths: list[int], width: int, stats: Scores | None):
        """The shaped advantages [B, width] (None without a shaper), from TRL's A [B] (module docstring)."""
        if self.lens_shaping == "none":
            return None
        device, b, g = adv.device, len(lengths), self.num_generations
        lens = torch.tensor(lengths, device=device)
        mask = (torch.arange(width, device=device)[None, :] < lens[:, None]).to(torch.float32)
        logppl = torch.zeros(b, dtype=torch.float32, device=device)
        entropy = torch.zeros(b, width, dtype=torch.float32, device=device)
        if stats is not None:
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            logppl = torch.tensor([-float(stats.logprob[lo:hi].mean()) if hi > lo else 0.0
                                   for lo, hi in zip(offsets[:-1], offsets[1:])], dtype=torch.float32, device=device)
            entropy[mask.bool()] = torch.from_numpy(stats.entropy).to(device)
        rank = self.accelerator.process_index
        cfg, a = self.lens_shaping_config, adv.detach().to(torch.float32)
        if self.lens_shaping in GROUP_SHAPERS:
            all_a, all_logppl = self.accelerator.gather(a), self.accelerator.gather(logppl)
            n = all_a.shape[0]
            shaped = self.lens_shaper(all_a[:, None], torch.ones(n, 1, device=device), logppl=all_logppl,
                                      group_ids=torch.arange(n, device=device) // g,
                                      rel_pos=torch.zeros(n, 1, device=device),
                                      entropy=torch.zeros(n, 1, device=device), cfg=cfg)
            return (shaped[rank * b:(rank + 1) * b] * mask).to(torch.float32)
        group_ids = (rank * b + torch.arange(b, device=device)) // g
        shaped = self.lens_shaper(a[:, None] * mask, mask, logppl=logppl, group_ids=group_ids,
                                  rel_pos=relative_position(mask), entropy=entropy, cfg=cfg)
        return shaped.detach().to(torch.float32)

    def _lens_write(self, step: int, prompt_ids, completion_ids, completions, stats: Scores, adv: torch.Tensor,
                    shaped: torch.Tensor | None, lengths: list[int], sampler: np.ndarray) -> None:
        """Lay out one generation batch as ``tokens`` / ``samples`` rows and (re)write this rank's part of step
        ``step``; ``sampler`` [sum(lengths)] is the sampler's log-prob per token (NaN = none)."""
        tok, b, g = self._tokenizer, len(completion_ids), self.num_generations
        if self._lens_pending is None or self._lens_pending[0] != step:
            self._lens_pending = (step, [])
        batches = self._lens_pending[1]
        jobs = rank_jobs(len(batches), b, self.accelerator.num_processes, self.accelerator.process_index, g)
        stop = {*self.eos_token_ids, tok.pad_token_id}
        responses = [Response(list(c), truncated=bool(len(c)) and c[-1] not in stop) for c in completion_ids]
        prompts = {p: tok.decode(prompt_ids[i], skip_special_tokens=False) for i, (p, _) in enumerate(jobs)}
        texts = [c if isinstance(c, str) else tok.decode(ids, skip_special_tokens=True)
                 for c, ids in zip(completions, completion_ids)]
        tokens, samples = layout_tables(step, jobs, responses, stats, prompts, texts, source=SOURCE)
        a = adv.detach().float().cpu().numpy()
        tokens["advantage"] = np.repeat(a, lengths).astype(np.float32)
        if shaped is None:
            tokens["shaped_advantage"] = tokens["advantage"]
        else:
            valid = torch.arange(shaped.shape[1], device=shaped.device)[None, :] < torch.tensor(
                lengths, device=shaped.device)[:, None]
            tokens["shaped_advantage"] = shaped[valid].float().cpu().numpy()
        tokens["sampler_logprob"] = sampler
        samples.update(grade_columns(self._lens_verdicts(texts, b), [""] * b))
        batches.append((tokens, samples))
        self._lens_open(conversational=not isinstance(completions[0], str))
        self._lens_put(step, _with_nulls(_concat([t for t, _ in batches])), _concat([s for _, s in batches]))

    def _lens_put(self, step: int, tokens: dict, samples: dict) -> None:
        """This rank writes its part files of step ``step``; once every rank has (a barrier), rank 0 lists the
        step in the manifest with one part per process."""
        acc = self.accelerator
        write_parts(self.lens_root, step, acc.process_index, tokens=tokens, samples=samples)
        acc.wait_for_everyone()
        if acc.is_main_process:
            self._lens_writer.complete_step(step, ("tokens", "samples"), parts=acc.num_processes)

    def _lens_add_mismatch(self, step: int, logprob: np.ndarray, sampler: np.ndarray) -> None:
        """Add this batch's Σ|logprob − sampler_logprob| and token count, over every process, to step ``step``'s
        ``sampler_logprob_mismatch`` (their mean) in the steps row; nothing when no sampler reported log-probs.
        The gather runs on every rank whenever a sampler may report them (vLLM or a rollout_func), so that all
        ranks take part in it."""
        if not (self.use_vllm or self.rollout_func is not None):
            return
        got = ~np.isnan(sampler)
        local = torch.tensor([float(np.abs(logprob[got].astype(np.float64) - sampler[got]).sum()), float(got.sum())],
                             dtype=torch.float64, device=self.accelerator.device)
        total, count = self.accelerator.gather(local[None, :]).sum(dim=0).tolist()
        sums = self._lens_mismatch.setdefault(step, [0.0, 0.0])  # a step's generation batches together
        sums[0], sums[1] = sums[0] + total, sums[1] + count
        if sums[1] > 0 and self.accelerator.is_main_process:
            self._lens_steps.setdefault(step, {"step": step})["sampler_logprob_mismatch"] = sums[0] / sums[1]

    def _lens_verdicts(self, texts: list[str], b: int) -> list[Verdict]:
        """Reward = TRL's weighted, NaN-skipping sum of this process's rows; correct = reward > 0."""
        rank = self.accelerator.process_index
        r = self._lens_rewards[rank * b:(rank + 1) * b].float().cpu()
        w = self.reward_weights.float().cpu()[None, :]
        total = torch.where(torch.isnan(r).all(dim=1), torch.nan, (r * w).nansum(dim=1)).tolist()
        return [Verdict(extract_boxed(t), count_boxed(t) == 1, bool(x > 0), float(x)) for t, x in zip(texts, total)]

    # ------------------------------------------------------------------------------------------ the store
    def _lens_settings(self, conversational: bool) -> dict:
        """The manifest settings: what must match for a resumed run to append to the store."""
        a = self.args
        temperature = float(self.temperature)
        top_p = 1.0 if a.top_p is None else float(a.top_p)
        return {
            "source": SOURCE, "model": str(getattr(self.accelerator.unwrap_model(self.model).config,
                                                  "_name_or_path", "")),
            "reward_funcs": list(self.reward_func_names), "reward_weights": self.reward_weights.tolist(),
            "num_generations": int(self.num_generations), "temperature": temperature,
            "entropy_temperature": temperature, "top_p": top_p, "top_k": a.top_k, "min_p": a.min_p,
            "max_new_tokens": a.max_completion_length, "loss_type": a.loss_type, "beta": a.beta,
            "learning_rate": a.learning_rate, "seed": a.seed, "use_vllm": bool(a.use_vllm),
            "shaping": self.lens_shaping, "shaping_config": asdict(self.lens_shaping_config),
            "sampling": SamplingRecord(temperature, top_p, a.max_completion_length, conversational).to_settings(),
        }

    def _lens_open(self, conversational: bool) -> None:
        """Rank 0 opens the store (lock, manifest, settings check, vocab); then, after a barrier, the other ranks
        check they see it, so that no rank writes a part file into a store rank 0 did not open."""
        if self._lens_opened:
            return
        acc = self.accelerator
        if acc.is_main_process:
            writer = StoreWriter(self.lens_root, kind="train", settings=self._lens_settings(conversational))
            self._lens_writer = writer.__enter__()
            if not (writer.root / "vocab.parquet").exists():
                writer.write_table("vocab", vocab_table(self._tokenizer, acc.unwrap_model(self.model)))
        acc.wait_for_everyone()
        if not (self.lens_root / MANIFEST).is_file():
            raise UserError(f"LensGRPOTrainer: rank {acc.process_index} does not see the store {self.lens_root} "
                            f"that rank 0 opened (no {MANIFEST}); lens_store must be a folder every process sees "
                            "(on several nodes, a shared filesystem)")
        self._lens_opened = True

    def _lens_log(self, logs: dict[str, Any]) -> None:
        """Fold one TRL log into the row of the latest rollout step and rewrite ``steps.parquet``."""
        step = self._lens_last_step if self._lens_last_step is not None else int(self.state.global_step)
        row = self._lens_steps.setdefault(step, {"step": step})
        counts = self._lens_counts.setdefault(step, {})
        for k, v in logs.items():
            if k in ("step", "global_step") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            n = counts.get(k, 0)
            row[k] = (row.get(k, 0.0) * n + float(v)) / (n + 1)  # the mean of this step's logs
            counts[k] = n + 1
        row["global_step"] = int(self.state.global_step)
        if self._lens_writer is not None:
            rows = [self._lens_steps[s] for s in sorted(self._lens_steps)]
            frame = pl.from_dicts(rows, infer_schema_length=None).with_columns(
                pl.col("step").cast(pl.Int32), pl.col("global_step").cast(pl.Int64))
            self._lens_writer.write_table("steps", frame)

    def _lens_close(self) -> None:
        if self._lens_writer is not None:
            self._lens_writer.close()
            self._lens_writer = None
        self._lens_opened = False


def rank_jobs(batch: int, b: int, num_processes: int, rank: int, g: int) -> list[tuple[int, int]]:
    """(prompt_id, sample_id) of the ``b`` rows process ``rank`` holds of generation batch ``batch`` of a step.

    TRL splits each generation batch of ``num_processes × b`` rows over the processes in order (rank r holds
    global rows ``r·b … (r+1)·b − 1``) and groups it by ``index // g``; batch k of a step follows the k before it.
    So global row ``j = k·N·b + r·b + i`` is sample ``j % g`` of prompt ``j // g``: ids are global, every rank's
    rows are distinct from every other's, and a group split over two ranks keeps one prompt id."""
    first = batch * b * num_processes + rank * b
    return [((first + i) // g, (first + i) % g) for i in range(b)]


def sharding_refusal(fsdp: bool, zero_stage: int | None, captures: bool) -> str | None:
    """The one-line refusal when the capture forward would run on sharded weights (FSDP, DeepSpeed ZeRO-3),
    else None.  ``captures``: whether the run does the capture forward at all (a store, or a shaper reading the
    statistics); ``zero_stage``: DeepSpeed's ZeRO stage (None without DeepSpeed)."""
    if not captures or not (fsdp or zero_stage == 3):
        return None
    what = "FSDP" if fsdp else "DeepSpeed ZeRO-3"
    return (f"LensGRPOTrainer: the capture forward (lens_store, or a shaper that reads log-PPL or entropy) does not "
            f"support {what}: it reads the full lm_head weight, which {what} shards; use DDP or DeepSpeed ZeRO-1/2, "
            "or drop lens_store and use a statistics-free shaper")


def sampler_logprobs(logprobs: Sequence[Sequence[float | None]] | None, lengths: Sequence[int],
                     tool_mask: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """The sampler's log-prob of every completion token, flat: float32 [sum(lengths)], completion after
    completion, NaN where there is none: no sampler log-probs at all (``logprobs`` None: TRL's own generation),
    a token vLLM gave no value for (None), or a token the model did not sample (``tool_mask`` 0: a tool's
    response, which TRL pads with log-prob 0.0).  ``logprobs[i]`` must have ``lengths[i]`` entries."""
    n = int(sum(lengths))
    if logprobs is None:
        return np.full(n, np.nan, np.float32)
    if len(logprobs) != len(lengths):
        raise UserError(f"LensGRPOTrainer: the sampler returned log-probs for {len(logprobs)} completions, not "
                        f"{len(lengths)}; a rollout_func must return one log-prob list per completion")
    out = []
    for i, (lp, n_i) in enumerate(zip(logprobs, lengths)):
        if len(lp) != n_i:
            raise UserError(f"LensGRPOTrainer: the sampler returned {len(lp)} log-probs for completion {i} of "
                            f"{n_i} tokens; a rollout_func must return one log-prob per completion token")
        row = np.array([np.nan if x is None else float(x) for x in lp], np.float32)
        if tool_mask is not None:
            row[~np.asarray(tool_mask[i], dtype=bool)] = np.nan
        out.append(row)
    return np.concatenate(out + [np.zeros(0, np.float32)]).astype(np.float32)


def _with_nulls(tokens: dict) -> dict:
    """``tokens`` with ``sampler_logprob``'s NaN (no sampler value) as nulls, so the store holds null, not NaN."""
    a = np.asarray(tokens["sampler_logprob"], np.float32)
    return {**tokens, "sampler_logprob": pa.array(a, type=pa.float32(), mask=np.isnan(a))}


def _concat(parts: list[dict]) -> dict:
    """Columns of several batches' tables, one after the other (numpy arrays or lists)."""
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) if isinstance(parts[0][k], np.ndarray)
            else [x for p in parts for x in p[k]] for k in parts[0]}
