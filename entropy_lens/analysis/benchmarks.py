r"""Benchmark scores of a checkpoint: Acc@k, Maj@k and Pass@k per eval set (paper-notes §3 Table 1, §1.9).

For one problem with ``n`` sampled responses of which ``c`` are correct (``samples.correct``):

* **Acc@k** (avg@k) = ``c / n``: the expected share of correct responses among k samples, estimated from
  all ``n`` (unbiased for any ``k ≤ n``; with ``n = k`` it is the plain mean over the k samples).
* **Pass@k** = ``1 − C(n−c, k) / C(n, k)``, the unbiased estimator of the chance that at least one of k
  samples is correct (Chen et al., 2021); with ``n = k`` it is 1 if any sample is correct, else 0.  Computed
  as ``1 − Π_{i=0}^{k−1} (n−c−i)/(n−i)`` (a factor is 0 once ``n−c−i ≤ 0``), which never forms a binomial.
* **Maj@k**: a majority vote over the parsed final answers (``samples.answer``) of the problem's first k
  samples by ``sample_id``:

  - a response with no parsed answer (null) casts no vote, so a missing answer never wins; a problem whose
    k responses have no answer at all scores 0;
  - answers are compared as stored strings (``"7"`` and ``"07"`` are two candidates);
  - a candidate answer is *correct* when a response that gave it is verified correct (``correct`` true), so
    the vote is graded by the task's own verifier; an answer given only by badly formatted responses is not;
  - **ties**: when several answers share the most votes, one is drawn uniformly at random and the problem
    scores the expectation, ``(#top answers that are correct) / (#top answers)``; e.g. 3 votes for the right
    answer and 3 for a wrong one score 0.5.  The score never depends on sample order beyond taking the first
    k samples.

Each score is then averaged over the problems of a (``label``, ``dataset``, ``step``) group; the table
reports ``n_problems`` and a percentile bootstrap CI over problems
(:func:`~entropy_lens.analysis.stats.bootstrap_cis`, the same resampled problems for the three scores).
"""

from __future__ import annotations

import polars as pl

from entropy_lens.analysis.frames import SAMPLE_KEY, collect_streaming, lazy, require
from entropy_lens.analysis.stats import bootstrap_cis
from entropy_lens.errors import UserError

GROUP_KEY = ["label", "dataset", "step"]
PROBLEM_KEY = [*GROUP_KEY, "prompt_id"]
SCORES = ("acc_at_k", "maj_at_k", "pass_at_k")


def pass_at_k_expr(n: str, c: str, k: int) -> pl.Expr:
    """Polars expression for the unbiased pass@k ``1 − C(n−c, k)/C(n, k)`` of integer columns ``n`` and ``c``.

    ``1 − Π_{i=0}^{k−1} max(n−c−i, 0)/(n−i)``; null where ``n < k`` (the estimator needs k of n samples).
    """
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    nn, cc = pl.col(n).cast(pl.Float64), pl.col(c).cast(pl.Float64)
    ratio = pl.lit(1.0)
    for i in range(k):
        ratio = ratio * pl.max_horizontal(nn - cc - i, pl.lit(0.0)) / (nn - i)
    return pl.when(pl.col(n) >= k).then(1.0 - ratio).otherwise(None)


def _with_group_columns(samples: pl.LazyFrame) -> pl.LazyFrame:
    """Add ``label`` and ``dataset`` as empty strings when the frame lacks them (one store, one eval set)."""
    have = set(samples.collect_schema().names())
    return samples.with_columns(*[pl.lit("").alias(c) for c in ("label", "dataset") if c not in have])


def problem_scores(*, samples: pl.LazyFrame, k: int | None = None) -> pl.DataFrame:
    """Per-problem Acc@k, Maj@k and Pass@k (definitions in the module docstring).

    ``samples``: the samples table of one or more collect stores; optional Utf8 columns ``label`` (model or
    run) and ``dataset`` tell stores apart (empty when absent).  ``k``: samples per vote and per pass@k;
    None takes, per (label, dataset, step) group, the fewest samples any of its problems has.  A problem
    with fewer than ``k`` samples is an error.

    Columns: ``label``, ``dataset``, ``step``, ``prompt_id``, ``k``, ``n_samples``, ``n_correct``,
    ``acc_at_k``, ``maj_at_k``, ``pass_at_k`` (Float64).
    """
    s = require(lazy(samples, "samples"), [*SAMPLE_KEY, "answer", "correct"], "samples")
    s = _with_group_columns(s).select(
        *[pl.col(c).cast(pl.Utf8) for c in ("label", "dataset")], pl.col("step").cast(pl.Int64),
        "prompt_id", "sample_id", "answer", pl.col("correct").fill_null(False))
    per_problem = s.group_by(PROBLEM_KEY).agg(pl.len().alias("n_samples"),
                                              pl.col("correct").sum().alias("n_correct"))
    smallest = per_problem.group_by(GROUP_KEY).agg(pl.col("n_samples").min().alias("_fewest"))
    per_problem = collect_streaming(per_problem.join(smallest, on=GROUP_KEY, how="left"))
    if per_problem.height == 0:
        return pl.DataFrame(schema={**{c: pl.Utf8 for c in ("label", "dataset")}, "step": pl.Int64,
                                    "prompt_id": pl.Int32, "k": pl.Int64, "n_samples": pl.Int64,
                                    "n_correct": pl.Int64, **{c: pl.Float64 for c in SCORES}})
    if k is None:
        per_problem = per_problem.with_columns(pl.col("_fewest").cast(pl.Int64).alias("k"))
    else:
        short = per_problem.filter(pl.col("n_samples") < k)
        if short.height:
            r = short.row(0, named=True)
            raise UserError(f"k = {k} but {short.height} problem(s) have fewer samples (e.g. label "
                            f"{r['label']!r}, dataset {r['dataset']!r}, step {r['step']}, prompt "
                            f"{r['prompt_id']}: {r['n_samples']}); lower k or collect more samples per prompt")
        per_problem = per_problem.with_columns(pl.lit(k, dtype=pl.Int64).alias("k"))
    ks = sorted(per_problem["k"].unique().to_list())
    passes = pl.coalesce([pl.when(pl.col("k") == kk).then(pass_at_k_expr("n_samples", "n_correct", kk))
                          for kk in ks])
    per_problem = per_problem.with_columns(
        (pl.col("n_correct").cast(pl.Float64) / pl.col("n_samples")).alias("acc_at_k"),
        passes.alias("pass_at_k"),
    ).drop("_fewest")

    votes = (
        s.join(per_problem.lazy().select(*PROBLEM_KEY, "k"), on=PROBLEM_KEY, how="inner")
        .filter(pl.col("sample_id").rank("ordinal").over(PROBLEM_KEY) <= pl.col("k"))  # the first k samples
        .filter(pl.col("answer").is_not_null())  # a missing answer casts no vote
        .group_by(*PROBLEM_KEY, "answer")
        .agg(pl.len().alias("votes"), pl.col("correct").any().alias("answer_correct"))
        .filter(pl.col("votes") == pl.col("votes").max().over(PROBLEM_KEY))  # the tied top answers
        .group_by(PROBLEM_KEY)
        .agg(pl.col("answer_correct").cast(pl.Float64).mean().alias("maj_at_k"))  # uniform tie-break
    )
    return (
        per_problem.join(collect_streaming(votes), on=PROBLEM_KEY, how="left")
        .with_columns(pl.col("maj_at_k").fill_null(0.0))  # no answer at all: the vote is lost
        .select(*PROBLEM_KEY, "k", pl.col("n_samples").cast(pl.Int64), pl.col("n_correct").cast(pl.Int64),
                *SCORES)
        .sort(PROBLEM_KEY)
    )


def benchmark_table(*, samples: pl.LazyFrame, k: int | None = None, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> pl.DataFrame:
    """Table 1 scores: one row per (``label``, ``dataset``, ``step``) of the samples table.

    ``samples`` and ``k`` as in :func:`problem_scores`.  Each score is the mean over problems of its
    per-problem value, with a percentile bootstrap CI over problems (``n_boot`` resamples, ``seed``,
    ``level``); ``n_problems`` is the number of problems averaged.

    Columns: ``label``, ``dataset``, ``step``, ``k``, ``n_problems``, ``n_samples`` (responses),
    ``acc_at_k``, ``acc_at_k_ci_low``, ``acc_at_k_ci_high``, and the same three for ``maj_at_k`` and
    ``pass_at_k``.
    """
    per = problem_scores(samples=samples, k=k)
    rows = []
    for key, g in per.group_by(GROUP_KEY, maintain_order=True):
        ests = bootstrap_cis([g[c].to_numpy() for c in SCORES], n_boot=n_boot, seed=seed, level=level)
        row = dict(zip(GROUP_KEY, key), k=int(g["k"].min()), n_problems=g.height,
                   n_samples=int(g["n_samples"].sum()))
        for c, e in zip(SCORES, ests):
            row.update({c: e.estimate, f"{c}_ci_low": e.ci_low, f"{c}_ci_high": e.ci_high})
        rows.append(row)
    schema = {"label": pl.Utf8, "dataset": pl.Utf8, "step": pl.Int64, "k": pl.Int64, "n_problems": pl.Int64,
              "n_samples": pl.Int64,
              **{f"{c}{suf}": pl.Float64 for c in SCORES for suf in ("", "_ci_low", "_ci_high")}}
    return pl.DataFrame(rows, schema=schema).sort(GROUP_KEY)


def paired_differences(*, samples: pl.LazyFrame, reference: str, k: int | None = None, n_boot: int = 1000,
                       seed: int = 0, level: float = 0.95) -> pl.DataFrame:
    """Each label's scores minus the ``reference`` label's, paired by problem, per dataset.

    For a score ``s`` (Acc@k, Maj@k, Pass@k) and the problems ``P`` both labels have in a dataset:
    ``Δ = (1/|P|) Σ_{p∈P} (s_label,p − s_ref,p)``, with a percentile bootstrap CI over problems (both models
    answered the same problems, so the problems are resampled, not the models).  Each label must hold one
    step per dataset (the model it names); ``samples`` and ``k`` as in :func:`problem_scores`.

    Columns: ``label``, ``dataset``, ``score`` (``acc_at_k`` / ``maj_at_k`` / ``pass_at_k``), ``n_problems``,
    ``estimate``, ``ci_low``, ``ci_high``; the reference itself is left out.
    """
    per = problem_scores(samples=samples, k=k)
    several = per.group_by("label", "dataset").agg(pl.col("step").n_unique().alias("n")).filter(pl.col("n") > 1)
    if several.height:
        r = several.row(0, named=True)
        raise UserError(f"label {r['label']!r} has {r['n']} steps on dataset {r['dataset']!r}; give each model "
                        "(label) one step so that its problems pair with the reference's")
    if reference not in per["label"].unique().to_list():
        raise UserError(f"reference label {reference!r} is not in the samples; labels: "
                        f"{', '.join(sorted(per['label'].unique().to_list()))}")
    ref = per.filter(pl.col("label") == reference).select("dataset", "prompt_id", *[pl.col(c).alias(f"_ref_{c}")
                                                                                      for c in SCORES])
    pairs = per.filter(pl.col("label") != reference).join(ref, on=["dataset", "prompt_id"], how="inner")
    rows = []
    for (label, dataset), g in pairs.group_by("label", "dataset", maintain_order=True):
        diffs = [(g[c] - g[f"_ref_{c}"]).to_numpy() for c in SCORES]
        for c, e in zip(SCORES, bootstrap_cis(diffs, n_boot=n_boot, seed=seed, level=level)):
            rows.append(dict(label=label, dataset=dataset, score=c, n_problems=e.n, estimate=e.estimate,
                             ci_low=e.ci_low, ci_high=e.ci_high))
    schema = {"label": pl.Utf8, "dataset": pl.Utf8, "score": pl.Utf8, "n_problems": pl.Int64,
              "estimate": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64}
    return pl.DataFrame(rows, schema=schema).sort("label", "dataset", "score")
