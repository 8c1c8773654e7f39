"""Semantic token categories and their update strength (paper-notes §1.8, §2.1 F; Fig. 3 category panel).

Four categories [X], classified from each vocabulary item's decoded string by configurable rules [I]:
``formal`` (digits, LaTeX commands, operators/brackets, LaTeX command names split off by BPE such as
``frac``), ``logical`` (connectives), ``metacognitive`` (reflection words) and ``support`` (everything else).
Precedence: formal > logical > metacognitive > support.  Word rules match the whole token after stripping
whitespace/punctuation and lower-casing, so ``" Therefore,"`` is logical and ``"theory"`` is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from entropy_lens.analysis.frames import collect_streaming, lazy, require
from entropy_lens.analysis.stepwise import check_top_frac, merge_sums, pair_tokens, scan_steps
from entropy_lens.store import Partitions

CATEGORIES = ("formal", "logical", "metacognitive", "support")


@dataclass(frozen=True)
class Lexicon:
    """Rules of the token classifier.  ``formal_regex`` is searched anywhere in the raw token; the word
    lists are matched against the whole normalised token."""

    formal_regex: str = r"[0-9]|\\[A-Za-z]*|[=+\-*/^_<>()\[\]{}|]"
    formal_words: tuple[str, ...] = (
        "frac", "dfrac", "sqrt", "cdot", "times", "div", "pm", "boxed", "pi", "theta", "alpha", "beta",
        "infty", "sum", "prod", "int", "log", "ln", "sin", "cos", "tan", "binom", "leq", "geq", "neq",
        "approx", "equiv", "mod", "text", "mathrm", "left", "right",
    )
    logical_words: tuple[str, ...] = (
        "therefore", "thus", "so", "hence", "because", "since", "but", "however", "then", "if", "otherwise",
        "first", "next", "finally", "consequently", "implies", "although", "whereas",
        "second", "third", "given", "suppose", "assume",
    )
    metacognitive_words: tuple[str, ...] = (
        "wait", "check", "verify", "let", "let's", "recheck", "hmm", "alternatively", "mistake",
        "double-check", "reconsider", "actually", "oops", "confirm", "correct", "wrong", "sure", "maybe",
        "perhaps", "re-evaluate", "revisit",
    )

    def word_regex(self, words) -> str:
        return r"^(?:" + "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True)) + r")$"


def _normalised(col: str = "token") -> pl.Expr:
    # strip whitespace, BPE space markers (Ġ, ▁) and surrounding punctuation, lower-case
    return (
        pl.col(col).fill_null("")
        .str.replace_all(r"^[\sĠ▁]+|[\sĠ▁]+$", "")
        .str.replace_all(r"^[^\w']+|[^\w']+$", "")
        .str.to_lowercase()
    )


def category_expr(lexicon: Lexicon | None = None, col: str = "token") -> pl.Expr:
    """Polars expression mapping a decoded token string column to its category (see module docstring)."""
    lx = lexicon or Lexicon()
    norm = _normalised(col)
    return (
        pl.when(pl.col(col).fill_null("").str.contains(lx.formal_regex) | norm.str.contains(lx.word_regex(lx.formal_words)))
        .then(pl.lit("formal"))
        .when(norm.str.contains(lx.word_regex(lx.logical_words)))
        .then(pl.lit("logical"))
        .when(norm.str.contains(lx.word_regex(lx.metacognitive_words)))
        .then(pl.lit("metacognitive"))
        .otherwise(pl.lit("support"))
        .alias("category")
    )


def classify_vocab(*, vocab: pl.LazyFrame, lexicon: Lexicon | None = None) -> pl.DataFrame:
    """Category of every vocabulary item: columns ``token_id``, ``token``, ``category`` (paper-notes §1.8 [I])."""
    v = require(lazy(vocab, "vocab"), ["token_id", "token"], "vocab")
    return collect_streaming(v.select("token_id", "token", category_expr(lexicon)).sort("token_id"))


def _with_category(lf: pl.LazyFrame, vocab, lexicon) -> pl.LazyFrame:
    cats = classify_vocab(vocab=vocab, lexicon=lexicon).select(pl.col("token_id").cast(pl.Int32), "category")
    return lf.with_columns(pl.col("token_id").cast(pl.Int32)).join(cats.lazy(), on="token_id", how="left").with_columns(
        pl.col("category").fill_null("support")
    )


def category_updates(
    *,
    tokens: pl.LazyFrame | Partitions,
    updates: pl.LazyFrame | Partitions | None = None,
    vocab: pl.LazyFrame,
    lexicon: Lexicon | None = None,
    top_frac: float = 0.01,
    boundary=None,
    stage: str | None = None,
) -> pl.DataFrame:
    """Update strength per semantic category (paper-notes §2.1 F, §7.3).

    Columns: ``stage``, ``category``, ``n`` (tokens), ``share_tokens`` (n / stage total), ``mean_abs_delta_p``,
    ``share_significant`` (share of the category's tokens in the per-step top-``top_frac`` |Δp|),
    ``share_of_significant`` (category's share among all significant tokens), ``share_abs_delta_p_mass``
    (category's share of Σ|Δp|), ``entropy_mean`` (nats).  Finding to reproduce: formal tokens are
    over-represented among the significant updates (``share_of_significant > share_tokens``).
    """
    pairs = pair_tokens(tokens, updates, ["token_id", "entropy"])
    check_top_frac(top_frac)
    # per step and token id, counts and sums; categories joined on the (≤ vocabulary-sized) totals at the end
    # instead of on every token row
    parts = [
        df.group_by(pl.col("token_id").cast(pl.Int32))
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("abs_delta_p").sum().alias("_mass"), pl.col("abs_delta_p").count().cast(pl.Int64).alias("_ca"),
            pl.col("top").sum().cast(pl.Int64).alias("_sig"),
            pl.col("entropy").cast(pl.Float64).sum().alias("_se"), pl.col("entropy").count().cast(pl.Int64).alias("_ce"),
        )
        .with_columns(pl.lit(stage_label).alias("stage"))
        for _, stage_label, df in scan_steps(pairs, ["token_id", "entropy", "logprob"], boundary=boundary, stage=stage,
                                             top_frac=top_frac)
    ]
    schema = {"token_id": pl.Int32, "n": pl.Int64, "_mass": pl.Float64, "_ca": pl.Int64, "_sig": pl.Int64,
              "_se": pl.Float64, "_ce": pl.Int64, "stage": pl.Utf8}
    per_id = merge_sums(parts, ["stage", "token_id"], schema)
    cats = classify_vocab(vocab=vocab, lexicon=lexicon).select(pl.col("token_id").cast(pl.Int32), "category")
    tot = (
        per_id.join(cats, on="token_id", how="left")
        .with_columns(pl.col("category").fill_null("support"))
        .group_by("stage", "category")
        .agg(pl.col("n", "_mass", "_ca", "_sig", "_se", "_ce").sum())
    )
    df = tot.with_columns(
        (pl.col("_mass") / pl.col("_ca")).alias("mean_abs_delta_p"),
        (pl.col("_sig") / pl.col("n")).alias("share_significant"),
        (pl.col("_se") / pl.col("_ce")).alias("entropy_mean"),
    )
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return (
        df.with_columns(
            (pl.col("n") / pl.col("n").sum().over("stage")).alias("share_tokens"),
            (pl.col("_sig") / pl.col("_sig").sum().over("stage")).alias("share_of_significant"),
            (pl.col("_mass") / pl.col("_mass").sum().over("stage")).alias("share_abs_delta_p_mass"),
            pl.col("category").replace_strict(order, return_dtype=pl.Int64).alias("_o"),
        )
        .sort("stage", "_o")
        .select("stage", "category", "n", "share_tokens", "mean_abs_delta_p", "share_significant",
                "share_of_significant", "share_abs_delta_p_mass", "entropy_mean")
    )


def category_proportions(
    *, tokens: pl.LazyFrame, vocab: pl.LazyFrame, lexicon: Lexicon | None = None, by=("step",)
) -> pl.DataFrame:
    """Share of response tokens in each category, grouped by ``by`` (paper-notes §3, response analysis).

    Columns: ``*by``, ``category``, ``n``, ``proportion`` (within the ``by`` group).
    """
    by = list(by)
    lf = _with_category(require(lazy(tokens, "tokens"), ["token_id", *by], "tokens"), vocab, lexicon)
    df = collect_streaming(lf.group_by(*by, "category").agg(pl.len().cast(pl.Int64).alias("n")))
    order = {c: i for i, c in enumerate(CATEGORIES)}
    prop = (pl.col("n") / (pl.col("n").sum().over(by) if by else pl.col("n").sum())).alias("proportion")
    return (
        df.with_columns(prop, pl.col("category").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
        .sort(*by, "_o")
        .select(*by, "category", "n", "proportion")
    )
