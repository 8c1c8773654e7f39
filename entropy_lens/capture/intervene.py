"""``entropy-lens intervene``: token-replacement interventions (paper-notes §2.2 H, §2.3 K; Figs. 4b, 5b).

    entropy-lens intervene RUN/baseline/sweep --out RUN/interventions.parquet
    entropy-lens intervene STORE --checkpoint CKPT --step 40 --positions-per-sample 1 --continuations 4

The paper gives no protocol (paper-notes §8 item 4).  This is our operationalisation, following the suggestion in
§2.2 H:

1. **Responses.**  All responses of one step of a store (``--step``; default: the last completed step that
   has a known checkpoint), with the checkpoint that sampled them (``--checkpoint``: a model folder or a
   folder of checkpoints; default: the store manifest's ``info.checkpoints`` (a ``collect`` sweep) or the
   store's own ``checkpoints/step_N`` (a ``train`` run)).  Prompts and gold answers are the store's
   ``samples.prompt`` / ``samples.gold``; the verifier is the eval set's (``--dataset``; default the store's).
2. **Positions.**  In each response, the top-k (``--positions-per-sample``) positions by the *stored*
   entropy within a region (ties: earlier position first):

   * ``kind = "ppl"``: responses bucketed by PPL (group-z ``w_ppl < −0.5`` → ``low-ppl``, ``> 0.5`` →
     ``high-ppl``, mid dropped); region = the whole response;
   * ``kind = "position"``: every response; region ``begin`` = ``position/length < edge``, ``end`` =
     ``position/length ≥ 1 − edge`` (``--edge``, default 0.1, paper-notes §1.5 relative position).

   EOS tokens are never intervened on, in any region: the final EOS sits in the last 10 % of every response
   that finished, and replacing it only extends a finished answer — not a change of reasoning.
3. **Replacement.**  The sampled token is replaced by the most likely *other* token under the checkpoint
   (the 2nd most likely token when the sampled one was the mode), from a teacher-forced forward pass over
   ``prompt + response`` at that prefix.
4. **Regeneration, two arms.**  From the shared prefix ``prompt + response[:t]``, ``m`` (``--continuations``)
   continuations are sampled with the same policy at the store's sampling temperature and top-p (its
   manifest's :class:`~entropy_lens.capture.config.SamplingRecord`):

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

Outputs (written atomically): ``--out`` (default ``STORE/interventions.parquet``) and
``<out stem>_detail.parquet``, one row per (kind, group, intervention).  A position picked by two kinds (e.g.
the top-entropy token of a low-PPL response lying in its first 10 %) is regenerated once and appears in both
kinds' rows with the same numbers.  Every random draw comes from ``(seed, step, batch index)``, so
the same inputs and seed give the same tables.

Steps 2 and 5 are pure table work; :func:`intervene` takes them as arguments (``select_sites``,
``summarize``: the analysis layer's :func:`entropy_lens.analysis.interventions.select_positions` and
:func:`~entropy_lens.analysis.interventions.summarize`, which the CLI passes), so this module only does the
model work of steps 3 and 4.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from entropy_lens.capture.backends import SAMPLERS, EngineOptions, Sampler, batch_sampler_name
from entropy_lens.capture.config import InterveneConfig, SamplingRecord
from entropy_lens.capture.sampling import SamplingParams, batch_seed, encode_prompt, eos_token_ids
from entropy_lens.capture.scoring import forward_at
from entropy_lens.checkpoints import discover, is_model_dir
from entropy_lens.errors import UserError
from entropy_lens.models import default_dtype, load_checkpoint, resolve_device
from entropy_lens.store import Store, atomic_write_parquet, open_store

RESPONSE = ["prompt_id", "sample_id"]
LOGPROB_WARN = 0.05  # median |recomputed − stored| log-prob above this: probably not the sampling checkpoint

SelectSites = Callable[..., pl.DataFrame]  # (tokens, samples, *, kinds, k, edge, ppl_threshold, eos_ids) -> sites
Summarize = Callable[..., pl.DataFrame]  # (detail, *, n_boot, seed) -> summary


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
    chat = SamplingRecord.from_settings(store.manifest.get("settings", {})).chat_template
    return [encode_prompt(tokenizer, p, chat_template=chat) for p in prompts]


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

def regenerate(model, tokenizer, contexts: Sequence[Sequence[int]], budgets: Sequence[int], *, sampler: Sampler,
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
        res = sampler(model, tokenizer, [contexts[i] for i in chunk], params,
                      batch_seeds=[batch_seed(seed, step, b)], batch_size=len(chunk))
        for i, r in zip(chunk, res):
            out[i] = list(r.token_ids[: budgets[i]])
    return out


# --------------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------------

def _check(cfg: InterveneConfig, kinds_known: Sequence[str]) -> list[str]:
    kinds = [k.strip() for k in cfg.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in kinds_known]
    if bad or not kinds:
        raise UserError(f"--kinds {cfg.kinds!r}: expected a comma-separated subset of {', '.join(kinds_known)}")
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


@dataclass(frozen=True)
class Plan:
    """The checked inputs of one run: what to intervene on, with which checkpoint, graded how."""

    store: Store
    step: int
    checkpoint: Path
    verify: Callable
    kinds: list[str]
    sampling: SamplingRecord  # how the store's responses were sampled
    temperature: float  # of the regenerations
    sampler: Sampler
    out: Path
    detail_out: Path


def prepare(cfg: InterveneConfig, groups: Mapping[str, Sequence[str]]) -> Plan:
    """Every input check, before any model is loaded or file written; bad input is a UserError."""
    kinds = _check(cfg, list(groups))
    out, detail_out = _out_paths(cfg)
    store = open_store(cfg.store)
    step, ckpt = choose_step(store, known_checkpoints(store, cfg.checkpoint), cfg.step)
    verify = verifier_for(store, cfg.dataset)
    sampling = SamplingRecord.from_settings(store.manifest.get("settings", {}))
    temperature = cfg.temperature if cfg.temperature is not None else sampling.temperature
    sampler = SAMPLERS.get(batch_sampler_name(cfg.backend))(EngineOptions(seed=cfg.seed))
    return Plan(store, step, ckpt, verify, kinds, sampling, temperature, sampler, out, detail_out)


def intervene(cfg: InterveneConfig, *, select_sites: SelectSites, summarize: Summarize,
              groups: Mapping[str, Sequence[str]]) -> InterveneResult:
    """Run ``entropy-lens intervene``; see the module docstring.

    ``select_sites`` picks the intervention sites of the step's tokens and samples, ``summarize`` turns the
    per-intervention table into the summary, and ``groups`` maps each kind (``--kinds``) to the groups
    ``select_sites`` puts its sites in.
    """
    t0 = time.perf_counter()
    plan = prepare(cfg, groups)
    device = resolve_device(cfg.device)
    samples = plan.store.samples.filter(pl.col("step") == plan.step).sort(RESPONSE).collect()
    tokens = plan.store.tokens.filter(pl.col("step") == plan.step)
    max_new = cfg.max_new_tokens or plan.sampling.max_new_tokens
    if max_new is None:
        max_new = int(samples["length"].max())
    model, tokenizer = load_checkpoint(plan.checkpoint, device=device, dtype=default_dtype(device))
    eos = eos_token_ids(model, tokenizer)
    sites = select_sites(tokens, samples, kinds=plan.kinds, k=cfg.positions_per_sample, edge=cfg.edge,
                         ppl_threshold=cfg.ppl_threshold, eos_ids=sorted(eos))
    if cfg.max_samples is not None:
        keep = samples.select(RESPONSE).head(cfg.max_samples)
        sites = sites.join(keep, on=RESPONSE, how="semi", maintain_order="left")
    if sites.height == 0:
        raise UserError(f"{plan.store.root}: step {plan.step} has no eligible positions for --kinds {cfg.kinds} "
                        "(too few responses, or none outside the mid-PPL bucket)")
    resp = site_responses(plan.store, tokenizer, tokens, samples, sites)
    # At the store's temperature, so that the original token's log-prob checks against the stored one.
    reps = replacement_tokens(model, resp.prompt_ids, resp.token_ids, resp.positions,
                              temperature=plan.sampling.temperature, batch_size=cfg.batch_size)
    arms = build_arms(resp, reps, cfg.continuations, int(max_new))
    conts = regenerate(model, tokenizer, arms.contexts, arms.budgets, sampler=plan.sampler,
                       temperature=plan.temperature, top_p=plan.sampling.top_p, seed=cfg.seed, step=plan.step,
                       batch_size=cfg.batch_size, eos_ids=eos,
                       desc=f"step {plan.step}: regenerate {len(arms.contexts)}")
    graded = grade_arms(arms, conts, resp, tokenizer, plan.verify)
    per = intervention_rows(arms, graded, resp, sites)
    detail = detail_table(sites, per, tokenizer, cfg.continuations, plan.checkpoint)
    summary = summarize(detail, n_boot=cfg.n_boot, seed=cfg.seed)
    gap = float(per["logprob_gap"].median())
    if gap > LOGPROB_WARN:
        print(f"entropy-lens intervene: warning: the stored log-probs of step {plan.step} differ from "
              f"{plan.checkpoint}'s by {gap:.3f} nats (median); is it the checkpoint that sampled this step?",
              file=sys.stderr)
    atomic_write_parquet(detail.to_arrow(), plan.detail_out)
    atomic_write_parquet(summary.to_arrow(), plan.out)
    empty = [f"{k}/{g}" for k in plan.kinds for g in groups[k]
             if summary.filter((pl.col("kind") == k) & (pl.col("group") == g)).height == 0]
    return InterveneResult(plan.out, plan.detail_out, summary, detail, plan.step, plan.checkpoint,
                           time.perf_counter() - t0, gap, empty)


# --------------------------------------------------------------------------------------------------------
# The steps between site selection and summary
# --------------------------------------------------------------------------------------------------------

@dataclass
class SiteResponses:
    """The responses that hold a site, in (prompt_id, sample_id) order: ``frame`` (their keys, ``prompt``,
    ``gold``, ``correct``), and per response its prompt ids, its token ids and its distinct site positions."""

    frame: pl.DataFrame
    prompt_ids: list[list[int]]
    token_ids: list[list[int]]
    positions: list[list[int]]


def site_responses(store, tokenizer, tokens: pl.LazyFrame, samples: pl.DataFrame,
                   sites: pl.DataFrame) -> SiteResponses:
    """One regeneration per distinct (response, position): the sites' responses, shared by the kinds that
    picked them."""
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
    return SiteResponses(resp, [encoded[p] for p in resp["prompt"].to_list()], resp["token_id"].to_list(),
                         resp["position"].to_list())


@dataclass
class Arms:
    """Every regeneration context: ``interventions[u] = (response row, position, replacement id,
    replacement prob, original logprob)``; context ``j`` is arm ``meta[j] = (u, "before" | "after")``."""

    interventions: list[tuple[int, int, int, float, float]]
    contexts: list[list[int]]
    budgets: list[int]
    meta: list[tuple[int, str]]


def build_arms(resp: SiteResponses, reps, m: int, max_new: int) -> Arms:
    """``m`` contexts per arm: ``prompt + response[:t] + token``, token the original (``before``) or the
    replacement (``after``), with a budget of ``max_new − (t + 1)`` new tokens."""
    arms = Arms([], [], [], [])
    for ri, (pids, ids, poss, rr) in enumerate(zip(resp.prompt_ids, resp.token_ids, resp.positions, reps)):
        for t, (rep, rep_p, olp) in zip(poss, rr):
            u = len(arms.interventions)
            arms.interventions.append((ri, t, rep, rep_p, olp))
            for arm, tok in (("before", ids[t]), ("after", rep)):
                for _ in range(m):
                    arms.contexts.append(list(pids) + list(ids[:t]) + [tok])
                    arms.budgets.append(max_new - (t + 1))
                    arms.meta.append((u, arm))
    return arms


def grade_arms(arms: Arms, conts: list[list[int]], resp: SiteResponses, tokenizer,
               verify: Callable) -> tuple[dict, dict]:
    """Each full response ``response[:t] + token + continuation`` graded: ``(correct, example)``, keyed by
    ``(u, arm)``: the list of its verdicts, and the text of its first continuation."""
    golds = resp.frame["gold"].to_list()
    correct = {(u, arm): [] for u in range(len(arms.interventions)) for arm in ("before", "after")}
    example = {}
    for (u, arm), ctx, cont in zip(arms.meta, arms.contexts, conts):
        ri, t = arms.interventions[u][:2]
        full = list(resp.token_ids[ri][:t]) + [ctx[-1]] + cont
        text = tokenizer.decode(full, skip_special_tokens=True)
        correct[(u, arm)].append(bool(verify(text, golds[ri]).correct))
        example.setdefault((u, arm), text)
    return correct, example


def intervention_rows(arms: Arms, graded: tuple[dict, dict], resp: SiteResponses,
                      sites: pl.DataFrame) -> pl.DataFrame:
    """One row per intervention: its replacement, the original token's recomputed log-prob and its gap to
    the stored one, and the accuracy of each arm (the fraction of its continuations that are correct)."""
    correct, example = graded
    stored_lp = {(int(a), int(b), int(c)): float(d) for a, b, c, d in
                 sites.select(*RESPONSE, "position", "logprob").unique().iter_rows()}
    keys = resp.frame.select(RESPONSE).rows()
    rows = []
    for u, (ri, t, rep, rep_p, olp) in enumerate(arms.interventions):
        pid, sid = keys[ri]
        rows.append({"prompt_id": pid, "sample_id": sid, "position": t, "replacement_id": rep,
                     "replacement_prob": rep_p, "original_logprob": olp,
                     "logprob_gap": abs(olp - stored_lp[(pid, sid, t)]),
                     "acc_before": float(np.mean(correct[(u, "before")])),
                     "acc_after": float(np.mean(correct[(u, "after")])),
                     "original_correct": bool(resp.frame["correct"][ri]),
                     "text_before": example[(u, "before")], "text_after": example[(u, "after")]})
    return pl.DataFrame(rows, schema_overrides={"prompt_id": pl.Int32, "sample_id": pl.Int32, "position": pl.Int32,
                                                "replacement_id": pl.Int32})


def detail_table(sites: pl.DataFrame, per: pl.DataFrame, tokenizer, m: int, checkpoint: Path) -> pl.DataFrame:
    """The ``_detail`` table: one row per (kind, group, intervention), the sites joined with their results."""
    detail = sites.join(per, on=[*RESPONSE, "position"], how="left").rename({"token_id": "original_id"})
    detail = detail.with_columns(
        pl.Series("original_token", [tokenizer.decode([i]) for i in detail["original_id"].to_list()], pl.Utf8),
        pl.Series("replacement_token", [tokenizer.decode([i]) for i in detail["replacement_id"].to_list()], pl.Utf8),
        pl.lit(m, pl.Int32).alias("continuations"), pl.lit(str(checkpoint)).alias("checkpoint"))
    return detail.select("kind", "group", "step", *RESPONSE, "position", "rel_position", "length", "entropy",
                         "w_ppl", "original_id", "original_token", "replacement_id", "replacement_token",
                         "replacement_prob", "original_logprob", "logprob_gap", "continuations", "acc_before",
                         "acc_after", (pl.col("acc_after") - pl.col("acc_before")).alias("delta"),
                         "original_correct", "text_before", "text_after", "checkpoint")
