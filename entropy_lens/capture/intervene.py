"""``entropy-lens intervene``: token-replacement interventions (PAPER §2.2 H, §2.3 K; Figs. 4b, 5b).

    entropy-lens intervene RUN/baseline/sweep --out RUN/interventions.parquet
    entropy-lens intervene STORE --checkpoint CKPT --step 40 --positions-per-sample 1 --continuations 4

The paper gives no protocol (PAPER §8 item 4).  This is our operationalisation, following the suggestion in
§2.2 H:

1. **Responses.**  All responses of one step of a store (``--step``; default: the last completed step that
   has a known checkpoint), with the checkpoint that sampled them (``--checkpoint``: a model folder or a
   folder of checkpoints; default: the store manifest's ``info.checkpoints`` (a ``collect`` sweep) or the
   store's own ``checkpoints/step_N`` (a ``train`` run)).  Prompts and gold answers are the store's
   ``samples.prompt`` / ``samples.gold``; the verifier is the eval set's (``--dataset``; default the store's).
2. **Positions.**  In each response, the top-k (``--positions-per-sample``) positions by the *stored*
   entropy within a region (ties: earlier position first):

   * ``kind = "ppl"``: responses bucketed by :func:`entropy_lens.analysis.instance.ppl_buckets` (group-z,
     ``w_ppl < −0.5`` → ``low-ppl``, ``> 0.5`` → ``high-ppl``, mid dropped); region = the whole response;
   * ``kind = "position"``: every response; region ``begin`` = ``position/length < edge``, ``end`` =
     ``position/length ≥ 1 − edge`` (``--edge``, default 0.1, PAPER §1.5 relative position).

   EOS tokens are never intervened on, in any region: the final EOS sits in the last 10 % of every response
   that finished, and replacing it only extends a finished answer — not a change of reasoning.
3. **Replacement.**  The sampled token is replaced by the most likely *other* token under the checkpoint
   (the 2nd most likely token when the sampled one was the mode), from a teacher-forced forward pass over
   ``prompt + response`` at that prefix.
4. **Regeneration, two arms.**  From the shared prefix ``prompt + response[:t]``, ``m`` (``--continuations``)
   continuations are sampled with the same policy at the store's sampling temperature and top-p:

   * ``after``:  ``prefix + replacement`` → continuation;
   * ``before``: ``prefix + original token`` → continuation.

   Both arms share the prefix and differ only in the swapped token, and both are resampled, so their
   accuracies differ only through the swap, not through the luck of the one stored sample (comparing
   against the single original response would mix in the selection effect of that sample's own
   correctness).  The response budget is the store's ``max_new_tokens`` minus ``t + 1``, so a regenerated
   response is never longer than a sampled one could be; a context that ends in EOS (a replacement that is
   EOS) or has no budget left is graded as it is.  Each full response ``response[:t] + token +
   continuation`` is graded by the verifier.
5. **Summary.**  Per (kind, group): ``n`` interventions, mean ``accuracy_before`` / ``accuracy_after`` over
   interventions (each the fraction of its ``m`` continuations that are correct), ``delta_accuracy`` =
   after − before, and a seeded percentile bootstrap CI of the mean paired difference, resampling
   interventions (resampling whole responses when k > 1, since positions of one response are not
   independent).  Groups with no intervention are left out (and named on the console).

Outputs (written atomically): ``--out`` (default ``STORE/interventions.parquet``; the table that
``figures/fig4_instance.py``, ``fig5_position.py`` and ``findings.py`` read as ``RUN/interventions.parquet``)
and ``<out stem>_detail.parquet``, one row per (kind, group, intervention).  A position picked by two kinds
(e.g. the top-entropy token of a low-PPL response lying in its first 10 %) is regenerated once and appears
in both kinds' rows with the same numbers.  Every random draw comes from ``(seed, step, batch index)``, so
the same inputs and seed give the same tables.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from entropy_lens.capture.sampling import BACKENDS, SamplingParams, encode_prompt, eos_token_ids
from entropy_lens.capture.scoring import forward_at
from entropy_lens.capture.sweep import batch_seed, resolve_device
from entropy_lens.checkpoints import discover, is_model_dir
from entropy_lens.errors import UserError
from entropy_lens.models import load_checkpoint
from entropy_lens.store import atomic_write_parquet

KINDS = ("ppl", "position")
GROUPS = {"ppl": ("low-ppl", "high-ppl"), "position": ("begin", "end")}
SUMMARY_COLUMNS = ["kind", "group", "n", "accuracy_before", "accuracy_after", "delta_accuracy", "ci_low", "ci_high"]
RESPONSE = ["prompt_id", "sample_id"]
LOGPROB_WARN = 0.05  # median |recomputed − stored| log-prob above this: probably not the sampling checkpoint


@dataclass
class InterveneConfig:
    """``entropy-lens intervene STORE``: replace high-entropy tokens by the checkpoint's next-best token,
    regenerate, and measure the change in accuracy, by PPL bucket (PAPER §2.2 H) and by position (§2.3 K).
    See entropy_lens/capture/intervene.py for the protocol."""

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
    temperature: float | None = field(default=None, metadata={"help": "Regeneration temperature (default: the "
                                                                      "store's sampling temperature)."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Response budget, prefix included "
                                                                       "(default: the store's max_new_tokens)."})
    edge: float = field(default=0.1, metadata={"help": "Relative-position width of the begin and end regions."})
    ppl_threshold: float = field(default=0.5, metadata={"help": "|w_ppl| beyond which a response is low/high "
                                                                "PPL (group-z bucketing)."})
    seed: int = field(default=0, metadata={"help": "Random seed (regeneration and bootstrap)."})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap resamples for the CIs."})
    batch_size: int = field(default=256, metadata={"help": "Sequences per forward / generation batch."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, or auto (cuda when available)."})
    backend: str = field(default="hf", metadata={"help": "Sampling backend for the regenerations."})


@dataclass
class InterveneResult:
    out: Path
    detail_out: Path
    summary: pl.DataFrame
    detail: pl.DataFrame
    step: int
    checkpoint: Path
    seconds: float
    logprob_gap: float  # median |recomputed − stored| log-prob of the original tokens
    empty_groups: list[str]

    def __str__(self) -> str:
        lines = [f"intervened at step {self.step} with {self.checkpoint}: {self.detail.height} rows "
                 f"({self.seconds:.1f} s); median |Δlogprob| vs the store {self.logprob_gap:.2g}"]
        if self.empty_groups:
            lines.append("no interventions (left out): " + ", ".join(self.empty_groups))
        with pl.Config(tbl_rows=20, tbl_cols=20, float_precision=3, tbl_hide_dataframe_shape=True):
            lines.append(str(self.summary))
        lines.append(f"wrote {self.out} and {self.detail_out}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# Inputs: store, step, checkpoint, verifier
# --------------------------------------------------------------------------------------------------------

def _open_store(path: str):
    import entropy_lens

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: no such store directory; point at a folder written by `entropy-lens collect` or "
                        "`train`")
    return entropy_lens.open(p)


def known_checkpoints(store, checkpoint: str | None) -> dict[int | None, Path]:
    """Checkpoints by step; key ``None`` = one model folder given for whichever step is chosen."""
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.exists():
            raise UserError(f"--checkpoint {p}: no such folder")
        if is_model_dir(p):
            return {None: p}
        return {c.step: c.path for c in discover(p)}
    info = store.manifest.get("info", {}).get("checkpoints")
    if info:
        return {int(s): Path(p) for s, p in info.items()}
    try:
        return {c.step: c.path for c in discover(store.root)}
    except UserError:
        return {}


def choose_step(store, ckpts: dict[int | None, Path], step: int | None) -> tuple[int, Path]:
    done = sorted(set(store.completed_steps) & set(store.manifest["completed"].get("tokens", [])))
    if not done:
        raise UserError(f"{store.root}: the store has no completed steps; run `entropy-lens collect` (or train) first")
    if not ckpts:
        raise UserError(f"{store.root}: no checkpoint is recorded for this store; pass --checkpoint (the model "
                        "that sampled the step)")
    if step is not None and step not in done:
        raise UserError(f"--step {step}: not a completed step of {store.root} (steps: {done})")
    if None in ckpts:
        s = step if step is not None else done[-1]
        return s, ckpts[None]
    if step is None:
        usable = [s for s in done if s in ckpts]
        if not usable:
            raise UserError(f"{store.root}: none of its steps {done} has a checkpoint (checkpoints: "
                            f"{sorted(ckpts)}); pass --checkpoint and --step")
        step = usable[-1]
    if step not in ckpts:
        raise UserError(f"--step {step}: no checkpoint for this step (checkpoints: {sorted(ckpts)}); pass "
                        "--checkpoint with the model that sampled it")
    path = ckpts[step]
    if not path.exists():
        raise UserError(f"{path}: the checkpoint recorded for step {step} is gone; pass --checkpoint")
    return step, path


def verifier_for(store, dataset: str | None) -> Callable:
    from entropy_lens.tasks import load_eval_set

    if dataset is None:
        if store.manifest.get("kind") == "score":
            from entropy_lens.tasks.math import math_verify_answer

            return math_verify_answer
        dataset = store.manifest.get("settings", {}).get("dataset")
        if dataset is None:
            raise UserError(f"{store.root}: the store records no dataset; pass --dataset (a task name or the eval "
                            "file) for its verifier")
        try:
            return load_eval_set(dataset).verify
        except UserError as e:
            raise UserError(f"{store.root}: its dataset {dataset!r} cannot be loaded here ({e}); "
                            "pass --dataset") from None
    return load_eval_set(dataset).verify


def encode_prompts(store, tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """The prompt ids the sampler read: ``score`` stores keep the rendered text (encoded as is); ``collect``
    and ``train`` stores keep the raw prompt (through the chat template, as they encoded it)."""
    if store.manifest.get("kind") == "score":
        return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    chat = store.manifest.get("settings", {}).get("chat_template", True)
    return [encode_prompt(tokenizer, p, chat_template=chat) for p in prompts]


# --------------------------------------------------------------------------------------------------------
# Which positions (pure polars)
# --------------------------------------------------------------------------------------------------------

def select_positions(tokens: pl.DataFrame | pl.LazyFrame, samples: pl.DataFrame | pl.LazyFrame, *,
                     kinds: Sequence[str] = KINDS, k: int = 1, edge: float = 0.1, ppl_threshold: float = 0.5,
                     eos_ids: Sequence[int] = ()) -> pl.DataFrame:
    """The intervention sites of one step: one row per (kind, group, response, position).

    ``tokens``/``samples`` are the step's store rows.  Within each (kind, group, response) the ``k`` highest
    stored-entropy positions of the region are kept (ties: the earlier position); EOS tokens are never
    eligible.  Columns: ``kind``, ``group``, ``step``, ``prompt_id``, ``sample_id``, ``position``,
    ``rel_position``, ``entropy``, ``token_id``, ``logprob``, ``length``, ``w_ppl`` (null for position).
    """
    from entropy_lens.analysis.instance import ppl_buckets

    t = tokens.lazy() if isinstance(tokens, pl.DataFrame) else tokens
    s = samples.lazy() if isinstance(samples, pl.DataFrame) else samples
    key = ["step", *RESPONSE]
    base = (t.select(*key, "position", "token_id", "entropy", "logprob")
            .join(s.select(*key, "length"), on=key, how="inner")
            .filter(~pl.col("token_id").is_in(list(eos_ids)))
            .with_columns((pl.col("position").cast(pl.Float64) / pl.col("length").cast(pl.Float64))
                          .alias("rel_position")))
    parts = []
    if "ppl" in kinds:
        b = ppl_buckets(samples=s, bucketing="group_z", threshold=ppl_threshold)
        b = (b.filter(pl.col("ppl_bucket").is_in(["low", "high"]))
             .select(*key, "w_ppl", (pl.col("ppl_bucket") + "-ppl").alias("group")))
        parts.append(base.join(b.lazy(), on=key, how="inner").with_columns(pl.lit("ppl").alias("kind")))
    if "position" in kinds:
        r = pl.col("rel_position")
        for group, cond in (("begin", r < edge), ("end", r >= 1.0 - edge)):
            parts.append(base.filter(cond).with_columns(pl.lit(None, pl.Float64).alias("w_ppl"),
                                                        pl.lit(group).alias("group"), pl.lit("position").alias("kind")))
    cols = ["kind", "group", *key, "position", "rel_position", "entropy", "token_id", "logprob", "length", "w_ppl"]
    out = pl.concat([p.select(cols) for p in parts], how="vertical_relaxed")
    order = {g: i for i, g in enumerate(g for kind in KINDS for g in GROUPS[kind])}
    by = ["kind", "group", *key, "entropy", "position"]
    return (out.sort(by, descending=[c == "entropy" for c in by])
            .with_columns(pl.int_range(pl.len()).over(["kind", "group", *key]).alias("_rank"))
            .filter(pl.col("_rank") < k).drop("_rank")
            .with_columns(pl.col("group").replace_strict(order, default=len(order)).alias("_g"))
            .sort(["_g", *key, "position"]).drop("_g")
            .collect())


# --------------------------------------------------------------------------------------------------------
# Replacement tokens (teacher-forced)
# --------------------------------------------------------------------------------------------------------

@torch.no_grad()
def replacement_tokens(model, prompt_ids: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                       positions: Sequence[Sequence[int]], *, temperature: float = 1.0,
                       batch_size: int = 64) -> list[list[tuple[int, float, float]]]:
    """For each response and each of its ``positions``: ``(replacement id, replacement prob, original
    logprob)`` — the most likely token other than the sampled one, from one forward over prompt + response.

    Probabilities are of ``softmax(logits / temperature)`` (the argmax does not depend on the temperature).
    """
    device = next(model.parameters()).device
    out: list[list[tuple[int, float, float]]] = []
    for lo in range(0, len(responses), batch_size):
        P, R, T = prompt_ids[lo:lo + batch_size], responses[lo:lo + batch_size], positions[lo:lo + batch_size]
        orig = torch.tensor([r[t] for r, ts in zip(R, T) for t in ts], dtype=torch.long, device=device)
        x, is_hidden = forward_at(model, P, R, T)
        if is_hidden:  # only the chosen rows: a [rows × vocab] tile, never the whole sequence's logits
            head = model.get_output_embeddings()
            logits = x @ head.weight.T if head.bias is None else x @ head.weight.T + head.bias
        else:
            logits = x
        z = logits.float() / temperature
        lse = torch.logsumexp(z, dim=-1)
        orig_lp = z.gather(1, orig[:, None])[:, 0] - lse
        z.scatter_(1, orig[:, None], float("-inf"))  # the argmax of the rest: the best other token
        rep = z.argmax(dim=-1)
        rep_p = (z.gather(1, rep[:, None])[:, 0] - lse).exp()
        del z
        flat = list(zip(rep.tolist(), rep_p.tolist(), orig_lp.tolist()))
        i = 0
        for ts in T:
            out.append(flat[i:i + len(ts)])
            i += len(ts)
    return out


# --------------------------------------------------------------------------------------------------------
# Regeneration
# --------------------------------------------------------------------------------------------------------

def regenerate(model, tokenizer, contexts: Sequence[Sequence[int]], budgets: Sequence[int], *, sampler,
               temperature: float, top_p: float, seed: int, step: int, batch_size: int,
               eos_ids: set[int], desc: str = "regenerate") -> list[list[int]]:
    """One sampled continuation per context (its tokens after the context, at most ``budget``, EOS included).

    Contexts are batched in order of length (fewer pads); batch ``b`` draws from ``batch_seed(seed, step, b)``.
    A context whose last token is EOS, or with no budget, gets an empty continuation without sampling.
    """
    out: list[list[int]] = [[] for _ in contexts]
    todo = [i for i, (c, b) in enumerate(zip(contexts, budgets)) if b > 0 and not (c and c[-1] in eos_ids)]
    todo.sort(key=lambda i: (len(contexts[i]), i))
    batches = range(0, len(todo), batch_size)
    for b, lo in enumerate(tqdm(batches, desc=desc, unit="batch", file=sys.stderr, disable=None, leave=False)):
        chunk = todo[lo:lo + batch_size]
        params = SamplingParams(max(budgets[i] for i in chunk), temperature, top_p)
        res = sampler(model, tokenizer, [contexts[i] for i in chunk], params, seed=batch_seed(seed, step, b))
        for i, r in zip(chunk, res):
            out[i] = list(r.token_ids[: budgets[i]])
    return out


# --------------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------------

def _cluster_ci(diff: np.ndarray, cluster: np.ndarray, n_boot: int, seed: int):
    """Bootstrap CI of the mean of ``diff``, resampling clusters (responses); with singleton clusters this is
    exactly :func:`~entropy_lens.analysis.stats.bootstrap_ci` over the values."""
    from entropy_lens.analysis.stats import bootstrap_ci

    _, inv = np.unique(cluster, return_inverse=True)
    if inv.max(initial=-1) + 1 == len(diff):
        return bootstrap_ci(diff, n_boot=n_boot, seed=seed)
    sums = np.bincount(inv, weights=diff)
    counts = np.bincount(inv).astype(float)

    def ratio(idx, axis=None):
        idx = np.asarray(idx).astype(np.int64)
        return sums[idx].sum(axis=axis) / counts[idx].sum(axis=axis)

    return bootstrap_ci(np.arange(len(sums), dtype=float), stat=ratio, n_boot=n_boot, seed=seed)


def summarize(detail: pl.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pl.DataFrame:
    """One row per (kind, group) present in ``detail``: the :data:`SUMMARY_COLUMNS`."""
    rows = []
    for kind in KINDS:
        for group in GROUPS[kind]:
            d = detail.filter((pl.col("kind") == kind) & (pl.col("group") == group))
            if d.height == 0:
                continue
            before, after = d["acc_before"].to_numpy(), d["acc_after"].to_numpy()
            cluster = (d["prompt_id"].cast(pl.Int64) * 1_000_003 + d["sample_id"].cast(pl.Int64)).to_numpy()
            est = _cluster_ci(after - before, cluster, n_boot, seed)
            rows.append({"kind": kind, "group": group, "n": d.height, "accuracy_before": float(before.mean()),
                         "accuracy_after": float(after.mean()), "delta_accuracy": est.estimate,
                         "ci_low": est.ci_low, "ci_high": est.ci_high})
    schema = {"kind": pl.Utf8, "group": pl.Utf8, "n": pl.Int64, **{c: pl.Float64 for c in SUMMARY_COLUMNS[3:]}}
    return pl.DataFrame(rows, schema=schema)


# --------------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------------

def _check(cfg: InterveneConfig) -> list[str]:
    kinds = [k.strip() for k in cfg.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise UserError(f"--kinds {cfg.kinds!r}: expected a comma-separated subset of {', '.join(KINDS)}")
    for name in ("positions_per_sample", "continuations", "batch_size", "n_boot"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be at least 1")
    if cfg.max_samples is not None and cfg.max_samples < 1:
        raise UserError(f"--max-samples {cfg.max_samples}: must be at least 1")
    if cfg.max_new_tokens is not None and cfg.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {cfg.max_new_tokens}: must be at least 1")
    if not 0 < cfg.edge <= 0.5:
        raise UserError(f"--edge {cfg.edge}: must be in (0, 0.5]")
    if cfg.ppl_threshold < 0:
        raise UserError(f"--ppl-threshold {cfg.ppl_threshold}: must be ≥ 0")
    if cfg.temperature is not None and cfg.temperature <= 0:
        raise UserError(f"--temperature {cfg.temperature}: must be > 0")
    return kinds


def _out_paths(cfg: InterveneConfig) -> tuple[Path, Path]:
    out = Path(cfg.out) if cfg.out is not None else Path(cfg.store) / "interventions.parquet"
    if out.suffix != ".parquet":
        raise UserError(f"--out {out}: expected a .parquet file path")
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory; give a .parquet file path")
    return out, out.with_name(out.stem + "_detail.parquet")


def intervene(cfg: InterveneConfig) -> InterveneResult:
    """Run ``entropy-lens intervene``; see the module docstring.  Every input check runs before any model
    is loaded or file written."""
    t0 = time.perf_counter()
    kinds = _check(cfg)
    out, detail_out = _out_paths(cfg)
    store = _open_store(cfg.store)
    step, ckpt = choose_step(store, known_checkpoints(store, cfg.checkpoint), cfg.step)
    verify = verifier_for(store, cfg.dataset)
    settings = store.manifest.get("settings", {})
    store_temp = float(settings.get("temperature", 1.0))
    temperature = cfg.temperature if cfg.temperature is not None else store_temp
    top_p = float(settings.get("top_p", 1.0))
    max_new = cfg.max_new_tokens or settings.get("max_new_tokens") or settings.get("max_response_tokens")
    sampler = BACKENDS.get(cfg.backend)
    device = resolve_device(cfg.device)

    samples = store.samples.filter(pl.col("step") == step).sort(RESPONSE).collect()
    tokens = store.tokens.filter(pl.col("step") == step)
    if max_new is None:
        max_new = int(samples["length"].max())
    model, tokenizer = load_checkpoint(ckpt, device=device, dtype=torch.bfloat16 if device.startswith("cuda") else None)
    eos = eos_token_ids(model, tokenizer)
    sites = select_positions(tokens, samples, kinds=kinds, k=cfg.positions_per_sample, edge=cfg.edge,
                             ppl_threshold=cfg.ppl_threshold, eos_ids=sorted(eos))
    if cfg.max_samples is not None:
        keep = samples.select(RESPONSE).head(cfg.max_samples)
        sites = sites.join(keep, on=RESPONSE, how="semi", maintain_order="left")
    if sites.height == 0:
        raise UserError(f"{store.root}: step {step} has no eligible positions for --kinds {cfg.kinds} "
                        "(too few responses, or none outside the mid-PPL bucket)")

    # One regeneration per distinct (response, position), shared by the kinds that picked it.
    uniq = sites.select(*RESPONSE, "position", "token_id").unique(maintain_order=True).sort(*RESPONSE, "position")
    resp = (tokens.select(*RESPONSE, "position", "token_id").sort(*RESPONSE, "position")
            .group_by(RESPONSE, maintain_order=True).agg("token_id").collect()
            .join(uniq.select(RESPONSE).unique(), on=RESPONSE, how="semi").sort(RESPONSE))
    info = samples.select(*RESPONSE, "prompt", "gold", "correct")
    resp = resp.join(info, on=RESPONSE, how="left").sort(RESPONSE)
    pos_by = uniq.group_by(RESPONSE, maintain_order=True).agg("position").sort(RESPONSE)
    resp = resp.join(pos_by, on=RESPONSE, how="left").sort(RESPONSE)
    texts = resp["prompt"].unique(maintain_order=True).to_list()
    encoded = dict(zip(texts, encode_prompts(store, tokenizer, texts)))
    r_prompt = [encoded[p] for p in resp["prompt"].to_list()]
    r_ids = resp["token_id"].to_list()
    r_pos = resp["position"].to_list()
    # At the store's temperature, so that the original token's log-prob checks against the stored one.
    reps = replacement_tokens(model, r_prompt, r_ids, r_pos, temperature=store_temp, batch_size=cfg.batch_size)

    m = cfg.continuations
    contexts, budgets, meta = [], [], []  # meta: (intervention index, arm)
    ivs = []  # per intervention: (resp row, position, replacement, rep prob, orig logprob)
    for ri, (pids, ids, poss, rr) in enumerate(zip(r_prompt, r_ids, r_pos, reps)):
        for t, (rep, rep_p, olp) in zip(poss, rr):
            u = len(ivs)
            ivs.append((ri, t, rep, rep_p, olp))
            for arm, tok in (("before", ids[t]), ("after", rep)):
                for _ in range(m):
                    contexts.append(list(pids) + list(ids[:t]) + [tok])
                    budgets.append(int(max_new) - (t + 1))
                    meta.append((u, arm))
    conts = regenerate(model, tokenizer, contexts, budgets, sampler=sampler, temperature=temperature, top_p=top_p,
                       seed=cfg.seed, step=step, batch_size=cfg.batch_size, eos_ids=eos,
                       desc=f"step {step}: regenerate {len(contexts)}")

    golds = resp["gold"].to_list()
    correct = {(u, arm): [] for u in range(len(ivs)) for arm in ("before", "after")}
    example = {}
    for (u, arm), ctx, cont in zip(meta, contexts, conts):
        ri, t = ivs[u][:2]
        full = list(r_ids[ri][:t]) + [ctx[-1]] + cont
        text = tokenizer.decode(full, skip_special_tokens=True)
        correct[(u, arm)].append(bool(verify(text, golds[ri]).correct))
        example.setdefault((u, arm), text)
    stored_lp = {(int(a), int(b), int(c)): float(d) for a, b, c, d in
                 sites.select(*RESPONSE, "position", "logprob").unique().iter_rows()}
    keys = resp.select(RESPONSE).rows()
    rows = []
    for u, (ri, t, rep, rep_p, olp) in enumerate(ivs):
        pid, sid = keys[ri]
        rows.append({"prompt_id": pid, "sample_id": sid, "position": t, "replacement_id": rep,
                     "replacement_prob": rep_p, "original_logprob": olp,
                     "logprob_gap": abs(olp - stored_lp[(pid, sid, t)]),
                     "acc_before": float(np.mean(correct[(u, "before")])),
                     "acc_after": float(np.mean(correct[(u, "after")])),
                     "original_correct": bool(resp["correct"][ri]),
                     "text_before": example[(u, "before")], "text_after": example[(u, "after")]})
    per = pl.DataFrame(rows, schema_overrides={"prompt_id": pl.Int32, "sample_id": pl.Int32, "position": pl.Int32,
                                               "replacement_id": pl.Int32})
    detail = sites.join(per, on=[*RESPONSE, "position"], how="left").rename({"token_id": "original_id"})
    detail = detail.with_columns(
        pl.Series("original_token", [tokenizer.decode([i]) for i in detail["original_id"].to_list()], pl.Utf8),
        pl.Series("replacement_token", [tokenizer.decode([i]) for i in detail["replacement_id"].to_list()], pl.Utf8),
        pl.lit(m, pl.Int32).alias("continuations"), pl.lit(str(ckpt)).alias("checkpoint"))
    detail = detail.select("kind", "group", "step", *RESPONSE, "position", "rel_position", "length", "entropy",
                           "w_ppl", "original_id", "original_token", "replacement_id", "replacement_token",
                           "replacement_prob", "original_logprob", "logprob_gap", "continuations", "acc_before",
                           "acc_after", (pl.col("acc_after") - pl.col("acc_before")).alias("delta"),
                           "original_correct", "text_before", "text_after", "checkpoint")
    summary = summarize(detail, n_boot=cfg.n_boot, seed=cfg.seed)
    gap = float(per["logprob_gap"].median())
    if gap > LOGPROB_WARN:
        print(f"entropy-lens intervene: warning: the stored log-probs of step {step} differ from {ckpt}'s by "
              f"{gap:.3f} nats (median); is it the checkpoint that sampled this step?", file=sys.stderr)
    atomic_write_parquet(detail.to_arrow(), detail_out)
    atomic_write_parquet(summary.to_arrow(), out)
    empty = [f"{k}/{g}" for k in kinds for g in GROUPS[k]
             if summary.filter((pl.col("kind") == k) & (pl.col("group") == g)).height == 0]
    return InterveneResult(out, detail_out, summary, detail, step, ckpt, time.perf_counter() - t0, gap, empty)
