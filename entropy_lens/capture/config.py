"""Settings of the capture commands (``collect``, ``score``, ``intervene``) and the sampling record they write.

Each command's config is a dataclass composed from shared *ingredients* by inheritance, as
:class:`~entropy_lens.train.config.TrainConfig` is: a setting that several commands take (the device, the
scoring temperature and batch size, the seed) is defined once.  A dataclass orders fields by reversed MRO,
so the command's own fields are listed last among the bases and come first (its positional argument and
required flags first, then the ingredients, all of which have defaults).  The CLI builds each command's
flags from these fields (:mod:`entropy_lens.command`), so this module imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# --------------------------------------------------------------------------------------------------------
# Ingredients
# --------------------------------------------------------------------------------------------------------


@dataclass
class DeviceFields:
    device: str = field(default="auto", metadata={"help": "cpu, cuda, or auto (cuda when available)."})


@dataclass
class ScoringFields:
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature T; entropy and log-probs "
                                                               "are of softmax(logits / T)."})
    batch_size: int = field(default=64, metadata={"help": "Sequences per sampling / scoring batch."})


@dataclass
class SeedFields:
    seed: int = field(default=0, metadata={"help": "Random seed: the same inputs and seed give the same "
                                                   "Parquet bytes."})


@dataclass
class EngineFields:
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm backend: GPUs per vLLM engine "
                                                                    "(tensor parallelism)."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm backend: share of GPU memory the "
                                                                          "vLLM engine may take."})


# --------------------------------------------------------------------------------------------------------
# collect
# --------------------------------------------------------------------------------------------------------


@dataclass
class _CollectFields:
    checkpoints: str = field(metadata={"help": "Folder of checkpoints (HF folder, checkpoint-N/, "
                                               "global_step_N/actor/huggingface/, step_N/), or a train run.",
                                       "positional": True})
    dataset: str = field(default="arith", metadata={"help": "Eval set: a built-in task name (arith) or a .jsonl/"
                                                            ".parquet file with one problem a row."})
    out: str = field(default="data/runs/sweep", metadata={"help": "Store directory to write (resumed if it exists)."})
    prompt_field: str = field(default="prompt", metadata={"help": "Dataset column holding the prompt."})
    answer_field: str = field(default="answer", metadata={"help": "Dataset column holding the reference answer."})
    samples_per_prompt: int = field(default=8, metadata={"help": "Responses sampled per problem (group size G)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest response, in tokens; longer ones are "
                                                                "cut and flagged truncated."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (entropy is still of the full "
                                                         "temperature-scaled distribution)."})
    steps: str | None = field(default=None, metadata={"help": "Only checkpoints in START:STOP:STEP (STOP "
                                                              "inclusive), e.g. 0:200:20."})
    backend: str = field(default="static", metadata={
        "help": "Sampling backend: static (a decode loop on a pre-allocated KV cache; models it does not fit "
                "sample through generate), hf (transformers generate), vllm and ray (extras). `entropy-lens ls` "
                "lists them."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first N problems."})
    chat_template: bool = field(default=True, metadata={"help": "Apply the tokenizer's chat template when it "
                                                                 "has one (--no-chat-template to turn off)."})
    updates: bool = field(default=True, metadata={"help": "Also score each step's samples under the next "
                                                           "checkpoint, for Δlog-prob (--no-updates to skip)."})
    workers: int = field(default=2, metadata={"help": "ray backend: model-holding actors in the Ray Data pool "
                                                       "(one GPU each on cuda)."})


@dataclass
class CollectConfig(EngineFields, SeedFields, ScoringFields, DeviceFields, _CollectFields):
    """Settings of ``entropy-lens collect``: sample every checkpoint on an eval set and store per-token statistics."""


# --------------------------------------------------------------------------------------------------------
# score
# --------------------------------------------------------------------------------------------------------


@dataclass
class _ScoreFields:
    checkpoints: str = field(metadata={"help": "Folder of checkpoints (checkpoint-N/, global_step_N/actor/"
                                               "huggingface/, step_N/, or one HF folder).", "positional": True})
    rollouts: str = field(metadata={"help": "Rollout dump: a file, or a folder of per-step files (verl "
                                            "rollout_data_dir, TRL output_dir or its completions/)."})
    out: str = field(metadata={"help": "Store directory to write (resumed if it exists)."})
    format: str | None = field(default=None, metadata={"help": "verl, trl or jsonl; detected from the files "
                                                               "when not given."})
    prompt_field: str | None = field(default=None, metadata={"help": "Prompt column (default: verl input, "
                                                                     "trl/jsonl prompt)."})
    response_field: str | None = field(default=None, metadata={"help": "Response column (default: verl output, "
                                                                         "trl completion, jsonl response)."})
    answer_field: str | None = field(default=None, metadata={"help": "Reference-answer column, graded with "
                                                                     "Math-Verify (default: verl gts, else answer; "
                                                                     "optional unless named)."})
    reward_field: str | None = field(default=None, metadata={"help": "Stored-reward column (default: verl score, "
                                                                     "jsonl reward, trl the sum of the reward "
                                                                     "columns)."})
    step_field: str | None = field(default=None, metadata={"help": "Rollout-step column (default: step, else the "
                                                                   "number in the file name)."})
    match: str = field(default="latest-before", metadata={"help": "Which checkpoint scores a step: latest-before "
                                                                  "(latest at or before its policy step), nearest, "
                                                                  "exact."})
    policy_lag: int | None = field(default=None, metadata={"help": "Policy step = rollout step - lag (default: "
                                                                   "1 for verl and trl, whose step s was sampled "
                                                                   "by checkpoint s-1; 0 for jsonl)."})
    max_response_tokens: int | None = field(default=None, metadata={
        "help": "The trainer's response limit (verl data.max_response_length, TRL max_completion_length): "
                "shorter responses ended with EOS, which dumps drop, and get it back; longer are truncated."})
    chat_template: bool = field(default=False, metadata={"help": "Also wrap text prompts in the chat template "
                                                                 "(for dumps that kept the raw question). "
                                                                 "Message-list prompts always are."})
    skip_bad_rows: bool = field(default=False, metadata={"help": "Skip and count malformed rows instead of "
                                                                 "stopping at the first."})


@dataclass
class ScoreConfig(ScoringFields, DeviceFields, _ScoreFields):
    """Settings of ``entropy-lens score``: teacher-force the rollouts a training run saved (verl, TRL, JSONL)
    under the checkpoint that sampled them, and store per-token entropy as ``collect`` does.  --temperature
    is the trainer's sampling temperature."""


# --------------------------------------------------------------------------------------------------------
# intervene
# --------------------------------------------------------------------------------------------------------


@dataclass
class _InterveneFields:
    store: str = field(metadata={"help": "Store (a collect sweep or a train run) whose responses are intervened on.",
                                 "positional": True})
    checkpoint: str | None = field(default=None, metadata={
        "help": "The checkpoint that sampled --step: a model folder, or a folder of checkpoints (step_N/, "
                "checkpoint-N/...). Default: the store's info.checkpoints, else STORE/checkpoints/."})
    out: str | None = field(default=None, metadata={"help": "Summary Parquet to write (default: "
                                                             "STORE/interventions.parquet); details go to "
                                                             "<stem>_detail.parquet beside it."})
    step: int | None = field(default=None, metadata={"help": "Step of the store to use (default: the last "
                                                              "completed step with a checkpoint)."})
    dataset: str | None = field(default=None, metadata={"help": "Eval set whose verifier grades the responses: "
                                                                "a task name (arith) or a .jsonl/.parquet file. "
                                                                "Default: the store's dataset."})
    kinds: str = field(default="ppl,position", metadata={"help": "Comma-separated kinds: ppl (low/high-PPL "
                                                                 "responses), position (begin/end of responses)."})
    positions_per_sample: int = field(default=1, metadata={"help": "Top-k entropy positions per response and "
                                                                   "region."})
    continuations: int = field(default=4, metadata={"help": "Continuations regenerated per arm (m)."})
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first N responses of the step "
                                                                    "(in prompt_id, sample_id order)."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Response budget, prefix included "
                                                                       "(default: the store's max_new_tokens)."})
    edge: float = field(default=0.1, metadata={"help": "Relative-position width of the begin and end regions."})
    ppl_threshold: float = field(default=0.5, metadata={"help": "|w_ppl| beyond which a response is low/high "
                                                                "PPL (group-z bucketing)."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples for the CIs."})
    backend: str = field(default="static", metadata={"help": "Sampling backend for the regenerations (static "
                                                                 "or hf; see collect --help)."})


@dataclass
class InterveneConfig(SeedFields, ScoringFields, DeviceFields, _InterveneFields):
    """``entropy-lens intervene STORE``: replace high-entropy tokens by the checkpoint's next-best token,
    regenerate, and measure the change in accuracy, by PPL bucket (paper-notes §2.2 H) and by position (§2.3 K).
    See entropy_lens/capture/intervene.py for the protocol."""

    # Regeneration, not scoring: the temperature defaults to the one the store was sampled at, and batches
    # of short continuations are cheap, so they are larger.
    temperature: float | None = field(default=None, metadata={"help": "Regeneration temperature (default: the "
                                                                      "store's sampling temperature)."})
    batch_size: int = field(default=256, metadata={"help": "Sequences per forward / generation batch."})


# --------------------------------------------------------------------------------------------------------
# The manifest's sampling record
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingRecord:
    """How a store's responses were sampled: ``settings["sampling"]`` in the manifest, written in this one
    shape by ``collect``, ``score`` and ``train``.

    ``temperature`` is also the temperature of the stored entropies and log-probs.  ``max_new_tokens`` is
    None when unknown (a ``score`` store without ``--max-response-tokens``).  A ``score`` store cannot know
    the trainer's top-p and records 1.0 (no nucleus cut).  ``chat_template`` says whether text prompts went
    through the tokenizer's chat template.
    """

    temperature: float
    top_p: float
    max_new_tokens: int | None
    chat_template: bool

    def to_settings(self) -> dict:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: dict) -> SamplingRecord:
        """The record in a manifest's ``settings``; for a store written before the record existed, the same
        facts from the keys each command wrote then (``score`` called the response limit
        ``max_response_tokens``)."""
        if "sampling" in settings:
            return cls(**settings["sampling"])
        return cls(temperature=float(settings.get("temperature", 1.0)), top_p=float(settings.get("top_p", 1.0)),
                   max_new_tokens=settings.get("max_new_tokens") or settings.get("max_response_tokens"),
                   chat_template=settings.get("chat_template", True))
