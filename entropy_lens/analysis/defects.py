"""Defective responses (paper-notes §1.8, §2.1 C; Fig. 2d): format violation, irrelevant content, language mixing.

Each defect is a registered detector ``fn(**params) -> pl.Expr`` (a boolean expression over the ``samples``
table), so new ones plug in by name::

    @register_defect_detector("no_units")
    def no_units(**_): return ~pl.col("text").str.contains("cm")

The detectors are heuristics [I] from the released code's commented-out reward checks [C]: CJK characters
``[\\u4e00-\\u9fff]``, ≥500 repeated characters, a 3-gram repetition ratio > 0.35.
"""

from __future__ import annotations

import re

import polars as pl

from entropy_lens.analysis.frames import SAMPLE_KEY, collect_streaming, lazy, require
from entropy_lens.analysis.stats import wilson_exprs
from entropy_lens.registry import Registry

DEFECT_DETECTORS: Registry = Registry("defect detector")
DEFAULT_DEFECTS = ("format", "irrelevant", "language_mixing")
CJK = "[\u4e00-\u9fff]"


def register_defect_detector(name: str):
    """Register ``fn(**params) -> pl.Expr`` (boolean over ``samples`` columns) under ``name``."""
    return DEFECT_DETECTORS.register(name)


def longest_repeat_run(text: str | None, max_unit: int = 10) -> int:
    """Length in characters of the longest stretch made of one unit (1..``max_unit`` chars) repeated
    back to back, e.g. ``"abababab"`` → 8, ``"aaaa"`` → 4; 0 for text without any immediate repetition."""
    if not text:
        return 0
    best = 0
    for m in re.finditer(r"(.{1,%d}?)\1+" % int(max_unit), text, flags=re.DOTALL):
        best = max(best, m.end() - m.start())
    return best


def ngram_repetition_ratio(text: str | None, n: int = 3) -> float:
    """``1 − (#distinct word n-grams)/(#word n-grams)`` over whitespace-split words; 0 with fewer than n words."""
    if not text:
        return 0.0
    words = text.split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    grams = {tuple(words[i : i + n]) for i in range(total)}
    return 1.0 - len(grams) / total


@register_defect_detector("format")
def format_violation(**_) -> pl.Expr:
    """Format violation: not ``format_ok`` (zero or ≥2 parsable final answers) or ``truncated`` (paper-notes §1.8)."""
    return (~pl.col("format_ok").fill_null(False)) | pl.col("truncated").fill_null(False)


@register_defect_detector("irrelevant")
def irrelevant_content(
    min_repeat_chars: int = 500, max_unit: int = 10, ngram: int = 3, max_ngram_ratio: float = 0.35, **_
) -> pl.Expr:
    """Irrelevant content: a repeated-unit run of ≥ ``min_repeat_chars`` characters (see
    :func:`longest_repeat_run`) or a word ``ngram``-repetition ratio > ``max_ngram_ratio`` (paper-notes §1.8)."""

    def _flag(s: pl.Series) -> pl.Series:
        return pl.Series(
            [
                (longest_repeat_run(x, max_unit) >= min_repeat_chars) or (ngram_repetition_ratio(x, ngram) > max_ngram_ratio)
                for x in s.to_list()
            ],
            dtype=pl.Boolean,
        )

    return pl.col("text").map_batches(_flag, return_dtype=pl.Boolean, is_elementwise=True)


@register_defect_detector("language_mixing")
def language_mixing(allowed: str | None = None, **_) -> pl.Expr:
    """Language mixing: any CJK character ``[\\u4e00-\\u9fff]`` (paper-notes §1.8, the repo's check); or, with
    ``allowed`` (a regex character-class body, e.g. ``r"\\x00-\\x7F"``), any character outside it."""
    if allowed is not None:
        return pl.col("text").fill_null("").str.contains(f"[^{allowed}]")
    return pl.col("text").fill_null("").str.contains(CJK)


def defect_flags(
    *, samples: pl.LazyFrame, detectors=DEFAULT_DEFECTS, params: dict | None = None
) -> pl.DataFrame:
    """Per-response defect flags (paper-notes §7.2).

    ``params`` maps detector name → keyword arguments (e.g. ``{"irrelevant": {"min_repeat_chars": 50}}``).
    Columns: ``step``, ``prompt_id``, ``sample_id``, ``correct``, one Boolean column per detector,
    ``defect`` (the first detector, in the given order, that fires; "ok" if none) and ``any_defect``.
    """
    params = params or {}
    s = require(lazy(samples, "samples"), [*SAMPLE_KEY, "correct"], "samples")
    exprs = [DEFECT_DETECTORS.get(d)(**params.get(d, {})).alias(d) for d in detectors]
    label = pl.lit("ok")
    for d in reversed(list(detectors)):
        label = pl.when(pl.col(d)).then(pl.lit(d)).otherwise(label)
    out = (
        s.with_columns(exprs)
        .select(*SAMPLE_KEY, "correct", *detectors)
        .with_columns(label.alias("defect"), pl.any_horizontal(list(detectors)).alias("any_defect") if detectors else pl.lit(False).alias("any_defect"))
        .sort(SAMPLE_KEY)
    )
    return collect_streaming(out)


def defect_proportions(
    *, samples: pl.LazyFrame, detectors=DEFAULT_DEFECTS, params: dict | None = None, level: float = 0.95
) -> pl.DataFrame:
    """Per step, the share of responses each detector flags (flags may overlap), plus ``any`` (paper-notes §2.1 C).

    Columns: ``step``, ``defect``, ``proportion``, ``count``, ``n`` (responses in the step), ``ci_low``,
    ``ci_high`` (Wilson interval at ``level``).
    """
    flags = defect_flags(samples=samples, detectors=detectors, params=params)
    cols = [*detectors, "any_defect"]
    long = (
        flags.group_by("step")
        .agg(pl.len().cast(pl.Int64).alias("n"), *[pl.col(c).sum().cast(pl.Int64).alias(c) for c in cols])
        .unpivot(index=["step", "n"], on=cols, variable_name="defect", value_name="count")
        .with_columns(pl.col("defect").replace({"any_defect": "any"}), (pl.col("count") / pl.col("n")).alias("proportion"))
        .with_columns(wilson_exprs("count", "n", level))
    )
    order = {d: i for i, d in enumerate([*detectors, "any"])}
    return (
        long.with_columns(pl.col("defect").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
        .sort("step", "_o")
        .select(pl.col("step").cast(pl.Int64), "defect", "proportion", "count", "n", "ci_low", "ci_high")
    )
