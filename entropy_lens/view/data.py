"""The explorer page's data: pure polars over a :class:`~entropy_lens.analysis.context.RunView`, under a size budget.

:func:`page_data` returns one JSON-ready dict:

* ``curves`` — per step, aggregated over every row: ``entropy`` and ``accuracy`` are the analysis' own
  :attr:`RunView.curves <entropy_lens.analysis.context.RunView.curves>`; ``entropy_pos`` / ``entropy_neg``
  (token mean by polarity, :func:`~entropy_lens.analysis.polarity.polarity_entropy`), ``eval_accuracy``
  (held-out, when the training log has it) and ``length`` (mean response length) come from the same source
  as those curves; ``boundary`` is the stage boundary with its CI.
* ``heat`` — step × relative-position bucket mean entropy (and mean |Δp| where the store has updates), and
  step × token category mean entropy (where a vocabulary exists), over every token row of the store.
* ``prompts`` — every prompt of every step: responses, accuracy, mean entropy, mean length, PPL bucket
  (the tercile of the prompt's mean log-PPL within its step).
* ``responses`` — a stratified sample per step (cells: correct × the response's PPL bucket within its group,
  :func:`~entropy_lens.analysis.instance.ppl_buckets`), at most ``samples_per_step`` a step, shrunk until the
  encoded page fits ``max_mb``; ``shown`` / ``total`` say how many of how many.  Their tokens are columnar:
  one flat array per metric (rounded), ``offsets`` into them, and token ids indexing a string table.
* ``groups`` — every response (not only the sampled ones) of each prompt that has a sampled response, with
  reward, correctness, gold and parsed answer, for the group view.

Deterministic given ``seed``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl

from entropy_lens.analysis import categories, instance
from entropy_lens.analysis.attribution import token_entropy_change
from entropy_lens.analysis.frames import SAMPLE_KEY, TOKEN_KEY, grad_norm_expr, has_values
from entropy_lens.analysis.polarity import polarity_entropy
from entropy_lens.errors import UserError
from entropy_lens.store import pair_steps

POSITION_BUCKETS = 10
DIGITS = 3  # decimals kept for every per-token float
TEXT_CHARS = 4000  # a response's text is cut here (the tokens carry the whole response)
#: Per-token metrics: (key on the page, label).  Optional ones are dropped when the store has no values.
METRICS = {"entropy": "entropy H", "logprob": "log p", "sum_p2": "Σp²", "grad_norm": "‖∇ logit‖",
           "delta_logp": "Δlog p", "dH_real": "realized ΔH", "dH_pred": "predicted ΔH", "varentropy": "varentropy"}


def _round(values, digits: int = DIGITS) -> list:
    """Floats rounded for the page; NaN / None become null."""
    out = np.round(np.asarray(values, dtype=np.float64), digits)
    return [None if not math.isfinite(v) else (int(v) if v == int(v) else float(v)) for v in out.tolist()]


def _columns(df: pl.DataFrame, floats: tuple[str, ...] = ()) -> dict:
    """A frame as ``{column: list}``, float columns rounded."""
    return {c: (_round(df[c].to_numpy()) if c in floats or df[c].dtype.is_float() else df[c].to_list())
            for c in df.columns}


# ------------------------------------------------------------------------------------------------ curves
def step_curves(view) -> pl.DataFrame:
    """The page's curves: the analysis' own step curves with polarity entropy, response length, held-out
    accuracy (``eval_accuracy`` where logged) joined on step."""
    src = view.train if view.train is not None else view.store
    curves = view.curves
    pol = polarity_entropy(tokens=src.tokens, samples=src.samples)
    wide = pol.pivot(on="polarity", index="step", values="entropy_token_mean")
    wide = wide.rename({c: f"entropy_{c[:3]}" for c in wide.columns if c in ("positive", "negative")})
    length = src.samples.group_by("step").agg(pl.col("length").cast(pl.Float64).mean().alias("length")).collect()
    out = curves.join(wide, on="step", how="left").join(length.with_columns(pl.col("step").cast(pl.Int64)),
                                                       on="step", how="left")
    for c in ("entropy_pos", "entropy_neg", "eval_accuracy"):
        if c not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=pl.Float64).alias(c))
    return out.select("step", "entropy", "entropy_pos", "entropy_neg", "accuracy", "eval_accuracy", "length",
                      "n_tokens", "n_samples").sort("step")


def boundary_info(view) -> dict | None:
    b = view.boundary
    if b is None:
        return None
    return {"step": int(b.step), "ci": list(b.ci) if b.ci is not None else None, "detector": b.detector}


# ------------------------------------------------------------------------------------------------ heat maps
def _heat_query(frame: pl.LazyFrame, by: str, value: pl.Expr) -> pl.LazyFrame:
    """Mean of ``value`` per (step, ``by``), as a query (collected with the others by :func:`heat_maps`)."""
    return frame.group_by("step", by).agg(value.mean().alias("v"))


def _heat(df: pl.DataFrame, by: str) -> dict:
    """A :func:`_heat_query` result as ``{steps, rows, values[row][step]}`` (null where no rows)."""
    df = df.sort("step", by)
    steps = sorted(df["step"].unique().to_list())
    rows = sorted(df[by].unique().to_list())
    grid = df.pivot(on="step", index=by, values="v").sort(by)
    cols = [str(s) for s in steps]
    return {"steps": steps, "rows": rows,
            "values": [_round([r.get(c) for c in cols]) for r in grid.select(by, *cols).iter_rows(named=True)]}


def heat_maps(view, buckets: int = POSITION_BUCKETS) -> dict:
    """Every heat map the store supports, over all of its token rows."""
    pos = (pl.col("rel_position").cast(pl.Float64) * buckets).floor().clip(0, buckets - 1).cast(pl.Int32)
    t = view.tokens.select("step", *TOKEN_KEY[1:], "token_id", "entropy", "logprob", pos.alias("pos_bucket"))
    queries = {"position_entropy": ("pos_bucket", _heat_query(t, "pos_bucket", pl.col("entropy").cast(pl.Float64)))}
    if view.has_updates:  # paired step by step, row for row where the partitions align (no hash join)
        tu = pair_steps(view.tokens_by_step, view.updates_by_step, ("logprob_next",)).select(
            "step", "logprob", "logprob_next", pos.alias("pos_bucket"))
        dp = (pl.col("logprob_next").cast(pl.Float64).exp() - pl.col("logprob").cast(pl.Float64).exp()).abs()
        queries["position_abs_delta_p"] = ("pos_bucket", _heat_query(tu, "pos_bucket", dp))
    if view.vocab is not None:
        cats = categories.classify_vocab(vocab=view.vocab).select(pl.col("token_id").cast(pl.Int32), "category")
        tc = t.with_columns(pl.col("token_id").cast(pl.Int32)).join(cats.lazy(), on="token_id", how="left")
        tc = tc.with_columns(pl.col("category").fill_null("support"))
        queries["category_entropy"] = ("category", _heat_query(tc, "category", pl.col("entropy").cast(pl.Float64)))
    # one collect_all: the queries run in one call (measured: no faster than one by one at 10⁷ rows)
    frames = pl.collect_all([q for _, q in queries.values()])
    out = {name: _heat(df, by) for (name, (by, _)), df in zip(queries.items(), frames)}
    for name in ("position_entropy", "position_abs_delta_p"):
        if name in out:
            out[name]["buckets"] = buckets
    return out


# ------------------------------------------------------------------------------------------------ prompts
def sample_table(view) -> pl.DataFrame:
    """Every response: its key, correctness, reward, length, mean entropy, log-PPL, PPL bucket (within its
    group) and ``n_tok``, its number of token rows: its ``length``, as every writer lays a response out one
    row per token (``capture.tables.layout_tables``), so the tokens table is not scanned for it."""
    s = view.samples.collect()
    if s.is_empty():
        raise UserError(f"{view.path}: the store has no samples; nothing to view")
    buckets = instance.ppl_buckets(samples=view.samples).select(*SAMPLE_KEY, "ppl_bucket")
    return (s.join(buckets, on=SAMPLE_KEY, how="left")
            .with_columns(pl.col("length").cast(pl.Int64).alias("n_tok"), pl.col("ppl_bucket").fill_null("mid"))
            .sort(SAMPLE_KEY))


def prompt_table(samples: pl.DataFrame) -> pl.DataFrame:
    """Per (step, prompt): responses, accuracy, mean entropy, mean length, mean log-PPL and its tercile
    within the step (``ppl_bucket``: low / mid / high)."""
    p = samples.group_by("step", "prompt_id").agg(
        pl.len().alias("n"), pl.col("correct").cast(pl.Float64).mean().alias("accuracy"),
        pl.col("mean_entropy").cast(pl.Float64).mean().alias("entropy"),
        pl.col("length").cast(pl.Float64).mean().alias("length"),
        pl.col("logppl").cast(pl.Float64).mean().alias("logppl"),
    ).sort("step", "prompt_id")
    rank = (pl.col("logppl").rank("ordinal").over("step") - 1) * 3 // pl.len().over("step")
    labels = {0: "low", 1: "mid", 2: "high"}
    return p.with_columns(rank.cast(pl.Int64).replace_strict(labels, return_dtype=pl.Utf8).alias("ppl_bucket"))


# ------------------------------------------------------------------------------------------------ sampling
def stratified_order(samples: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Each response's place in its step's stratified order (``order``: 0, 1, …): cells correct ×
    ppl_bucket, shuffled within a cell, then taken round-robin across cells, so the first k of a step hold
    every non-empty cell once k reaches their number (both correct and incorrect when both exist)."""
    rng = np.random.default_rng(seed)
    key = samples.select(*SAMPLE_KEY, "correct", "ppl_bucket").with_columns(
        pl.Series("_u", rng.random(samples.height)))
    key = key.with_columns(pl.col("_u").rank("ordinal").over("step", "correct", "ppl_bucket").alias("_within"))
    # round-robin: rank first by place within the cell, then by a random cell order per step
    cell_rank = pl.struct("correct", "ppl_bucket").hash(seed).rank("dense").over("step")
    key = key.with_columns(cell_rank.alias("_cell"))
    key = key.sort("step", "_within", "_cell").with_columns(pl.int_range(pl.len()).over("step").alias("order"))
    return key.select(*SAMPLE_KEY, "order")


def pick(samples: pl.DataFrame, order: pl.DataFrame, per_step: int) -> pl.DataFrame:
    """The first ``per_step`` responses of each step in the stratified order."""
    return samples.join(order, on=SAMPLE_KEY).filter(pl.col("order") < per_step).sort(SAMPLE_KEY)


def token_rows(view, keys: pl.DataFrame) -> pl.DataFrame:
    """The token rows of the responses ``keys``, with every per-token metric the store supports.

    The store's tokens (and updates) are read once each: the semi-join with ``keys`` is collected first, and
    the derived columns are computed on those few rows (checking the advantage columns on the lazy scan
    cost a full scan each; at 10⁸ rows that was most of the stage)."""
    k = keys.select(*[pl.col(c).cast(pl.Int32) for c in SAMPLE_KEY]).lazy()
    names = view.tokens.collect_schema().names()
    t = view.tokens.with_columns(*[pl.col(c).cast(pl.Int32) for c in SAMPLE_KEY]).join(k, on=SAMPLE_KEY, how="semi")
    t = t.collect().with_columns(grad_norm_expr())
    if view.has_updates:
        u = view.updates.with_columns(*[pl.col(c).cast(pl.Int32) for c in TOKEN_KEY]).join(k, on=SAMPLE_KEY, how="semi")
        u = u.select(*TOKEN_KEY, "logprob_next", "entropy_next").collect()
        t = t.join(u, on=TOKEN_KEY, how="left").with_columns(
            (pl.col("logprob_next").cast(pl.Float64) - pl.col("logprob").cast(pl.Float64)).alias("delta_logp"),
            (pl.col("entropy_next").cast(pl.Float64) - pl.col("entropy").cast(pl.Float64)).alias("dH_real"))
    if "sum_p2_logp" in names:
        t = _with_dh_pred(t.lazy(), view.samples).collect()
    return t.sort(TOKEN_KEY)


def _with_dh_pred(t: pl.LazyFrame, samples: pl.LazyFrame) -> pl.LazyFrame:
    """``dH_pred`` per token, as :func:`~entropy_lens.analysis.attribution.token_entropy_change` computes it
    (the stored advantage, else the group-normalised reward over the whole group); ``t`` unchanged for a
    store written before schema 2."""
    if not has_values(t, "sum_p2_logp"):
        return t
    return token_entropy_change(t, samples)


def metrics_present(tokens: pl.DataFrame) -> list[str]:
    return [m for m in METRICS if m in tokens.columns and tokens[m].null_count() < tokens.height]


# ------------------------------------------------------------------------------------------------ encoding
def encode_responses(samples: pl.DataFrame, picked: pl.DataFrame, tokens: pl.DataFrame,
                     vocab: dict[int, str] | None) -> dict:
    """The responses part of the page: every response of each prompt group that has a picked response
    (``responses``, with ``tok`` = its index into the token arrays, or -1 when its tokens are not shown),
    the picked responses' tokens as flat rounded arrays with ``offsets``, and the token string table."""
    groups = picked.select("step", "prompt_id").unique()
    rows = samples.join(groups, on=["step", "prompt_id"], how="semi").sort(SAMPLE_KEY)
    shown = picked.select(*SAMPLE_KEY).with_row_index("tok")
    rows = rows.join(shown, on=SAMPLE_KEY, how="left").with_columns(pl.col("tok").cast(pl.Int64).fill_null(-1))
    tok = tokens.join(shown, on=SAMPLE_KEY, how="inner").sort("tok", "position")
    counts = tok.group_by("tok").agg(pl.len().alias("n")).sort("tok")
    n_by = dict(zip(counts["tok"].to_list(), counts["n"].to_list()))
    offsets = np.concatenate([[0], np.cumsum([n_by.get(i, 0) for i in range(shown.height)])]).astype(int).tolist()
    ids = tok["token_id"].to_list()
    strings = {str(i): (vocab.get(i, f"#{i}") if vocab is not None else f"#{i}") for i in sorted(set(ids))}
    cols = ["step", "prompt_id", "sample_id", "correct", "reward", "length", "mean_entropy", "logppl",
            "ppl_bucket", "answer", "gold", "tok"]
    table = _columns(rows.select(cols))
    table["text"] = [t[:TEXT_CHARS] for t in rows["text"].to_list()]
    prompts = rows.unique(["step", "prompt_id"], keep="first").sort("step", "prompt_id")
    return {"responses": table, "offsets": offsets, "token_ids": ids, "strings": strings,
            "metrics": {m: _round(tok[m].to_numpy()) for m in metrics_present(tok)},
            "prompt_text": {f"{s}:{p}": t[:TEXT_CHARS] for s, p, t in
                            prompts.select("step", "prompt_id", "prompt").iter_rows()}}


def json_size(obj) -> int:
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


def largest_fit(ranked: pl.DataFrame, bytes_per_token: float, bytes_per_response: float, avail: float,
                k_max: int) -> int:
    """The largest k ≤ ``k_max`` whose first-k-per-step responses are estimated to fit ``avail`` bytes."""
    per = ranked.filter(pl.col("order") < k_max).group_by("order").agg(
        pl.col("n_tok").sum().alias("t"), pl.len().alias("r")).sort("order")
    cost = np.cumsum(per["t"].to_numpy() * bytes_per_token + per["r"].to_numpy() * bytes_per_response)
    return int(np.searchsorted(cost, avail, side="right"))


def fit_sample(view, samples: pl.DataFrame, order: pl.DataFrame, per_step: int, budget: int,
               vocab: dict[int, str] | None) -> tuple[dict, int]:
    """The largest stratified sample (≤ ``per_step`` a step) whose encoding fits ``budget`` bytes: estimated
    from a one-per-step probe, then checked on the real encoding and shrunk until it fits."""
    ranked = samples.join(order, on=SAMPLE_KEY)
    # every sample below is a subset of the largest one: its tokens are read from the store once
    tokens = token_rows(view, pick(samples, order, per_step))
    probe_pick = pick(samples, order, 1)
    probe = encode_responses(samples, probe_pick, tokens.join(probe_pick.select(SAMPLE_KEY), on=SAMPLE_KEY,
                                                               how="semi"), vocab)
    size, n_tok = json_size(probe), max(int(probe_pick["n_tok"].sum()), 1)
    if size > budget:
        raise UserError(f"one response per step already takes {size / 1e6:.1f} MB of page data; raise --max-mb")
    bpt = json_size(probe["metrics"]) / n_tok + 8  # metrics plus id and string table, per token
    bpr = max((size - json_size(probe["metrics"]) - 8 * n_tok) / probe_pick.height, 1.0)
    k = max(1, min(per_step, largest_fit(ranked, bpt, bpr, budget, per_step)))
    chosen = pick(samples, order, k)
    tokens = tokens.join(chosen.select(SAMPLE_KEY), on=SAMPLE_KEY, how="semi")
    while True:
        enc = encode_responses(samples, chosen, tokens, vocab)
        size = json_size(enc)
        if size <= budget or k == 1:
            return (enc, k) if size <= budget else (probe, 1)
        k = max(1, min(k - 1, int(k * budget / size * 0.95)))
        chosen = pick(samples, order, k)
        tokens = tokens.join(chosen.select(SAMPLE_KEY), on=SAMPLE_KEY, how="semi")


def vocab_dict(view) -> dict[int, str] | None:
    return None if view.vocab is None else dict(view.vocab.select("token_id", "token").collect().iter_rows())


def page_data(view, *, samples_per_step: int = 16, max_mb: float = 20.0, seed: int = 0,
              reserve_bytes: int = 0) -> dict:
    """Everything the page shows (module docstring), its JSON at most ``max_mb`` MB (10⁶ bytes) including
    ``reserve_bytes`` for the page around it."""
    if samples_per_step < 1:
        raise UserError(f"--samples-per-step must be ≥ 1, got {samples_per_step}")
    if not max_mb > 0:
        raise UserError(f"--max-mb must be > 0, got {max_mb}")
    if view.is_empty:
        raise UserError(f"{view.path}: the store has no completed step; nothing to view")
    samples = sample_table(view)
    curves = step_curves(view)
    page = {"title": str(view.path), "kind": view.kind, "seed": seed, "curves": _columns(curves),
            "boundary": boundary_info(view), "boundary_reason": view.boundary_reason, "heat": heat_maps(view),
            "prompts": _columns(prompt_table(samples)), "metric_labels": METRICS}
    budget = int(max_mb * 1e6) - reserve_bytes - json_size(page) - 200
    if budget <= 0:
        raise UserError(f"--max-mb {max_mb}: the curves, heat maps and prompt table alone take "
                        f"{json_size(page) / 1e6:.2f} MB; raise --max-mb")
    enc, k = fit_sample(view, samples, stratified_order(samples, seed), samples_per_step, budget, vocab_dict(view))
    shown = int((np.asarray(enc["responses"]["tok"]) >= 0).sum())
    page.update(enc, shown=shown, total=samples.height, per_step=k,
                metric_labels={m: METRICS[m] for m in enc["metrics"]})
    return page
