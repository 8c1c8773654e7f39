"""``TrainConfig``: every setting of ``entropy-lens train`` (the CLI flags are generated from these fields).

Torch-free, so that building the CLI parser imports no torch.  Why the defaults are what they are (batch,
learning rate, threads) is told in the docstring of :mod:`entropy_lens.train.grpo`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from entropy_lens.registry import Registry
from entropy_lens.tasks.arith import Noise

#: Advantage shapers by name.  :mod:`entropy_lens.train.shaping` implements them (torch); they are listed here,
#: lazily, so that the CLI and ``entropy-lens ls`` name them without importing torch.
SHAPERS: Registry = Registry("shaper")
SHAPERS.register_lazy("none", "entropy_lens.train.shaping:no_shaping")
SHAPERS.register_lazy("ppl", "entropy_lens.train.shaping:ppl_shaping")
SHAPERS.register_lazy("ppl-high", "entropy_lens.train.shaping:ppl_high_shaping")
SHAPERS.register_lazy("position", "entropy_lens.train.shaping:position_shaping")
SHAPERS.register_lazy("position-begin", "entropy_lens.train.shaping:position_begin_shaping")
SHAPERS.register_lazy("entropy-top", "entropy_lens.train.shaping:entropy_top_shaping")
SHAPERS.register_lazy("positive-only", "entropy_lens.train.shaping:positive_only_shaping")
SHAPERS.register_lazy("negative-only", "entropy_lens.train.shaping:negative_only_shaping")


@dataclass
class ShapingConfig:
    """Hyper-parameters of the registered shapers (paper-notes §5.2 defaults)."""

    ppl_alpha: float = field(default=0.01, metadata={"help": "α of the ppl / ppl-high shapers (paper: 0.01)."})
    ppl_min: float = field(default=0.8, metadata={"help": "Lower clamp of the ppl weight."})
    ppl_max: float = field(default=1.2, metadata={"help": "Upper clamp of the ppl weight."})
    position_alpha: float = field(default=0.1, metadata={"help": "α of the position bonus (paper: 0.1)."})
    position_k: float = field(default=15.0, metadata={"help": "Sigmoid steepness k of the position bonus."})
    position_cap: float = field(default=0.5, metadata={"help": "The bonus is at most this fraction of |A|."})
    entropy_top_ratio: float = field(default=0.2, metadata={"help": "ρ of entropy-top: share of the batch's "
                                                                     "tokens (highest entropy) that keep a gradient."})


@dataclass
class _RunFields:
    out: str = field(default="data/runs/demo", metadata={"help": "Run folder: a store (steps.parquet, tokens/, "
                                                                  "samples/) plus checkpoints/step_N/. An existing "
                                                                  "run resumes from its latest checkpoint."})
    shaping: str = field(default="none", metadata={"help": "Advantage shaper, a registered name (`entropy-lens ls` "
                                                            "lists them); none is plain GRPO."})
    window: str | None = field(default=None, metadata={
        "help": "Steps START:STOP (STOP exclusive, either may be empty) on which the shaper is active; "
                "default: every step, or, with --from, the branch step onwards for 100 steps.",
        "metavar": "START:STOP"})
    init_from: str | None = field(default=None, metadata={
        "help": "Branch from this checkpoint (an HF model folder, e.g. RUN/checkpoints/step_120): skips the SFT "
                "warm-up and numbers steps on from the checkpoint's step.", "aliases": ["--from"],
        "metavar": "CHECKPOINT"})
    steps: int = field(default=90, metadata={"help": "RL steps to run (from step 0, or from the --from step)."})
    seed: int = field(default=0, metadata={"help": "Random seed: the same command twice gives the same run."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, or auto (cuda when available)."})
    threads: int = field(default=0, metadata={"help": "CPU threads for torch; 0 = $OMP_NUM_THREADS if set, else "
                                                       "every core. Runs side by side should take 1 each."})
    # --- SFT warm-up (the embedded default only)
    sft_steps: int = field(default=1200, metadata={"help": "SFT warm-up steps on noisy targets (arith.sft_target)."})
    sft_batch_size: int = field(default=32, metadata={"help": "Sequences per SFT step."})
    sft_lr: float = field(default=3e-3, metadata={"help": "Peak SFT learning rate (linear warm-up, linear decay)."})
    sft_slip: float = field(default=Noise.slip, metadata={"help": "Per-line chance of an off-by-one slip in SFT "
                                                                   "targets."})
    sft_no_marker: float = field(default=Noise.no_marker, metadata={"help": "Chance an SFT target lacks the "
                                                                             "final-answer marker (a format "
                                                                             "violation)."})
    sft_double_answer: float = field(default=Noise.double_answer, metadata={"help": "Chance an SFT target gives a "
                                                                                     "second, different final "
                                                                                     "answer (a format violation)."})
    # --- rollouts
    prompts_per_step: int = field(default=32, metadata={"help": "Prompt groups per training batch (kept after "
                                                                 "dynamic sampling)."})
    group_size: int = field(default=8, metadata={"help": "Responses sampled per prompt (G)."})
    gen_oversample: float = field(default=2.0, metadata={"help": "Dynamic sampling: the first round samples at most "
                                                                   "this many times prompts_per_step prompts (exactly "
                                                                   "this many on a run's first step)."})
    gen_margin: float = field(default=1.3, metadata={"help": "Dynamic sampling: after the first step, the first round "
                                                               "samples prompts_per_step × gen_margin / (the previous "
                                                               "step's share of mixed groups) prompts, capped by "
                                                               "--gen-oversample (a large margin: always the cap)."})
    max_gen_rounds: int = field(default=3, metadata={"help": "Dynamic sampling: at most this many rounds of "
                                                              "prompts_per_step prompts to fill the batch with mixed "
                                                              "groups; a step trains on what it has after them."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest response (L_max), in tokens."})
    overlong_buffer: int = field(default=16, metadata={"help": "DAPO overlong buffer L_buf: the reward loses up to "
                                                                "--overlong-factor over the last L_buf tokens."})
    overlong_factor: float = field(default=1.0, metadata={"help": "DAPO overlong penalty factor φ."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout temperature (entropy is measured at it)."})
    # --- update
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate (constant after warm-up)."})
    warmup_steps: int = field(default=10, metadata={"help": "Linear learning-rate warm-up, in optimizer steps."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    grad_clip: float = field(default=1.0, metadata={"help": "Gradient-norm clipping."})
    minibatches: int = field(default=4, metadata={"help": "Optimizer steps per RL step (PPO mini-batches, one "
                                                           "epoch). With 1 the update is on-policy: the ratio is 1 "
                                                           "and clipping never acts; with ≥ 2 later mini-batches are "
                                                           "off-policy and clip-higher acts (as in the paper)."})
    eps_low: float = field(default=0.2, metadata={"help": "Lower clip ε_low of the ratio."})
    eps_high: float = field(default=0.28, metadata={"help": "Upper clip ε_high of the ratio (clip-higher)."})
    # --- evaluation, checkpoints, logging
    eval_every: int = field(default=5, metadata={"help": "Evaluate on the held-out arith set every N steps."})
    eval_samples: int = field(default=4, metadata={"help": "Samples per held-out problem at --temperature."})
    save_every: int = field(default=10, metadata={"help": "Checkpoint every N steps (step 0 = after SFT)."})
    save_rollouts: bool = field(default=True, metadata={"help": "Write the training rollouts to the run's "
                                                                 "tokens/samples tables (--no-save-rollouts to skip)."})
    score_after_update: bool = field(default=True, metadata={
        "help": "After each step's update, score its trained tokens under the new weights (the policy of the next "
                "step) and write them as that step's `updates` (logprob_next, entropy_next: the realized Δlog p "
                "and ΔH of every trained token); needs the rollouts saved. Costs one no-grad forward: 0.5 s of a "
                "~3.3 s step on the embedded default, 1 thread (14-15%, measured)."})


@dataclass
class TrainConfig(ShapingConfig, _RunFields):
    """``entropy-lens train``: noisy SFT warm-up of the tiny default model, then GRPO with DAPO's tricks
    (clip-higher, token-level loss, dynamic sampling, overlong penalty, no KL) on the ``arith`` task; writes
    checkpoints and a store (steps.parquet + training rollouts) to --out.  See entropy_lens/train/grpo.py."""

    # Fields: _RunFields first, then ShapingConfig (dataclasses order fields by reversed MRO).

    def settings(self) -> dict:
        """What identifies the experiment in the store's manifest: everything but where/how long/how fast."""
        return {k: v for k, v in asdict(self).items() if k not in ("out", "steps", "device", "threads")}
