"""Builders for hand-built tiny stores (schema: docs/store-schema.md)."""

from __future__ import annotations

import math

import polars as pl

TOKEN_SCHEMA = dict(step=pl.Int32, prompt_id=pl.Int32, sample_id=pl.Int32, position=pl.Int32, rel_position=pl.Float32,
                    token_id=pl.Int32, logprob=pl.Float32, entropy=pl.Float32, sum_p2=pl.Float32)


def make_tokens(rows: list[dict]) -> pl.LazyFrame:
    """rows: dicts with step, prompt_id, sample_id, entropy (list per token) and optional token_ids, probs."""
    out = []
    for r in rows:
        ents = r["entropy"]
        L = len(ents)
        ids = r.get("token_ids", [0] * L)
        probs = r.get("probs", [0.5] * L)
        for t, h in enumerate(ents):
            out.append(dict(step=r["step"], prompt_id=r["prompt_id"], sample_id=r["sample_id"], position=t,
                            rel_position=t / L, token_id=ids[t], logprob=math.log(probs[t]), entropy=h,
                            sum_p2=r.get("sum_p2", probs[t] ** 2)))
    return pl.DataFrame(out, schema=TOKEN_SCHEMA).lazy()


def make_samples(rows: list[dict]) -> pl.LazyFrame:
    base = dict(length=1, truncated=False, prompt="", text="", answer=None, gold="1", format_ok=True,
                correct=False, reward=-1.0, logppl=1.0, mean_entropy=0.0, source="collect")
    full = [{**base, **r} for r in rows]
    schema = dict(step=pl.Int32, prompt_id=pl.Int32, sample_id=pl.Int32, length=pl.Int32, truncated=pl.Boolean,
                  prompt=pl.Utf8, text=pl.Utf8, answer=pl.Utf8, gold=pl.Utf8, format_ok=pl.Boolean, correct=pl.Boolean,
                  reward=pl.Float32, logppl=pl.Float32, mean_entropy=pl.Float32, source=pl.Utf8)
    return pl.DataFrame(full, schema=schema).lazy()


def make_updates(tokens: pl.LazyFrame, p_next: dict) -> pl.LazyFrame:
    """p_next: {(step, prompt_id, sample_id, position): new prob}; tokens not listed keep their prob."""
    t = tokens.collect()
    rows = []
    for r in t.iter_rows(named=True):
        k = (r["step"], r["prompt_id"], r["sample_id"], r["position"])
        lp = math.log(p_next[k]) if k in p_next else r["logprob"]
        rows.append(dict(step=r["step"], next_step=r["step"] + 1, prompt_id=r["prompt_id"], sample_id=r["sample_id"],
                         position=r["position"], logprob_next=lp))
    schema = dict(step=pl.Int32, next_step=pl.Int32, prompt_id=pl.Int32, sample_id=pl.Int32, position=pl.Int32,
                  logprob_next=pl.Float32)
    return pl.DataFrame(rows, schema=schema).lazy()


