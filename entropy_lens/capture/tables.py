"""The row layout of a step: the ``tokens``, ``samples``, ``updates`` and ``vocab`` columns that every writer
of a store (``collect``, ``score``, ``train``) builds in the same way.

Layout and grading are separate: :func:`layout_tables` places responses and their teacher-forced scores in
rows; :func:`grade_columns` gives the grading columns (``answer``, ``gold``, ``format_ok``, ``correct``,
``reward``) from whatever grades the writer has: an eval set's verifier (:func:`verifier_columns`),
Math-Verify and a dump's stored rewards (``score``), or the verifier and then the trainer's own rewards.
Columns are dicts of arrays or lists; :func:`entropy_lens.store.to_arrow` casts them to the schema.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl

from entropy_lens.capture.sampling import Response
from entropy_lens.capture.scoring import STAT_FIELDS, Scores, score
from entropy_lens.tasks import Problem, Verdict, Verifier

Job = tuple[int, int]  # (prompt_id, sample_id)


def step_jobs(n_prompts: int, samples_per_prompt: int) -> list[Job]:
    """The (prompt_id, sample_id) pairs of one step, in order; batch ``b`` is ``jobs[b·B:(b+1)·B]``."""
    return [(p, s) for p in range(n_prompts) for s in range(samples_per_prompt)]


def decode_texts(tokenizer, responses: Sequence[Response]) -> list[str]:
    """Each response's text, special tokens (EOS) left out: what a verifier reads."""
    return [tokenizer.decode(r.token_ids, skip_special_tokens=True) for r in responses]


def layout_tables(step: int, jobs: Sequence[Job], responses: Sequence[Response], stats: Scores,
                  prompts: Sequence[str], texts: Sequence[str], *, source: str) -> tuple[dict, dict]:
    """The ``tokens`` columns and the ungraded ``samples`` columns of one step.

    Response ``i`` answers the prompt ``prompts[jobs[i][0]]``, has the text ``texts[i]`` and occupies rows
    ``[o_i, o_i + L_i)`` of ``stats`` (``o`` the running sum of the lengths ``L``).  Per token: the statistics
    of ``scoring.STAT_FIELDS`` (logprob, entropy, sum_p2, sum_p2_logp, varentropy), and
    ``rel_position = position / max(L, 1)``; per response: ``logppl = −mean(logprob)`` and ``mean_entropy``
    (both 0 for an empty response).
    """
    lengths = np.array([len(r.token_ids) for r in responses], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n = int(offsets[-1])
    pid = np.repeat([p for p, _ in jobs], lengths)
    sid = np.repeat([s for _, s in jobs], lengths)
    position = np.arange(n) - np.repeat(offsets[:-1], lengths)
    tokens = {
        "step": np.full(n, step, np.int32), "prompt_id": pid.astype(np.int32), "sample_id": sid.astype(np.int32),
        "position": position.astype(np.int32),
        "rel_position": (position / np.repeat(np.maximum(lengths, 1), lengths)).astype(np.float32),
        "token_id": np.array([t for r in responses for t in r.token_ids], dtype=np.int32),
        **{k: getattr(stats, k) for k in STAT_FIELDS},
    }
    spans = list(zip(offsets[:-1], offsets[1:]))
    samples = {
        "step": np.full(len(jobs), step, np.int32), "prompt_id": [p for p, _ in jobs],
        "sample_id": [s for _, s in jobs], "length": lengths.astype(np.int32),
        "truncated": [r.truncated for r in responses], "prompt": [prompts[p] for p, _ in jobs], "text": list(texts),
        "logppl": [-float(stats.logprob[lo:hi].mean()) if hi > lo else 0.0 for lo, hi in spans],
        "mean_entropy": [float(stats.entropy[lo:hi].mean()) if hi > lo else 0.0 for lo, hi in spans],
        "source": [source] * len(jobs),
    }
    return tokens, samples


def grade_columns(verdicts: Sequence[Verdict], golds: Sequence[str]) -> dict:
    """The ``samples`` grading columns: each response's verdict and the reference answer it was graded
    against."""
    return {"answer": [v.answer for v in verdicts], "gold": list(golds),
            "format_ok": [v.format_ok for v in verdicts], "correct": [v.correct for v in verdicts],
            "reward": [v.reward for v in verdicts]}


def verifier_columns(verify: Verifier, problems: Sequence[Problem], jobs: Sequence[Job],
                     texts: Sequence[str]) -> dict:
    """:func:`grade_columns` of ``verify(texts[i], gold)``, gold the answer of response ``i``'s problem."""
    golds = [problems[p].answer for p, _ in jobs]
    return grade_columns([verify(t, g) for t, g in zip(texts, golds)], golds)


def updates_table(frame: pl.DataFrame, step: int, next_step: int, model, prompt_ids: Sequence[Sequence[int]], *,
                  temperature: float, batch_size: int) -> dict:
    """``updates`` columns for the responses in ``frame`` (``tokens`` rows of ``step``), teacher-forced under
    ``model`` (the checkpoint of ``next_step``) at ``temperature``: per token, ``logprob_next`` and ``entropy_next``
    (the entropy of the same context under ``next_step``), from the same scoring pass."""
    frame = frame.select("prompt_id", "sample_id", "position", "token_id").sort("prompt_id", "sample_id", "position")
    groups = frame.group_by(["prompt_id", "sample_id"], maintain_order=True).agg("token_id")
    keys = list(zip(groups["prompt_id"].to_list(), groups["sample_id"].to_list()))
    responses = groups["token_id"].to_list()
    stats = score(model, [prompt_ids[p] for p, _ in keys], responses, temperature=temperature,
                  batch_size=batch_size)
    return {
        "step": np.full(len(frame), step, np.int32), "next_step": np.full(len(frame), next_step, np.int32),
        "prompt_id": frame["prompt_id"], "sample_id": frame["sample_id"], "position": frame["position"],
        "logprob_next": stats.logprob, "entropy_next": stats.entropy,
    }


def vocab_table(tokenizer, model) -> dict:
    """``vocab`` columns: every token id of the embedding matrix (which may be padded beyond the tokenizer)
    and its decoded string."""
    n = max(len(tokenizer), model.get_input_embeddings().weight.shape[0])
    ids = list(range(n))
    return {"token_id": ids, "token": tokenizer.batch_decode([[i] for i in ids])}
