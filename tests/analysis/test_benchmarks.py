"""Acc@k / Maj@k / Pass@k (Table 1) against values worked out by hand and a brute-force pass@k."""

import itertools
import math

import polars as pl
import pytest

from entropy_lens.analysis.benchmarks import benchmark_table, pass_at_k_expr, problem_scores
from entropy_lens.errors import UserError

from tests.analysis.store_builders import make_samples


def _problem(prompt_id, answers, correct, step=0):
    """Samples of one problem: ``answers[i]`` (None = no parsed answer) and ``correct[i]`` per sample."""
    return [dict(step=step, prompt_id=prompt_id, sample_id=i, answer=a, correct=c)
            for i, (a, c) in enumerate(zip(answers, correct))]


def _labelled(label, dataset, rows) -> pl.LazyFrame:
    return make_samples(rows).with_columns(pl.lit(label).alias("label"), pl.lit(dataset).alias("dataset"))


def _scores(rows, **kw) -> dict:
    df = problem_scores(samples=make_samples(rows), **kw)
    return {r["prompt_id"]: r for r in df.iter_rows(named=True)}


def test_three_of_eight_correct():
    # 3 right ("5"), 5 wrong spread over 3 answers: "5" wins the vote outright
    answers = ["5", "5", "5", "4", "4", "6", "7", None]
    correct = [True, True, True, False, False, False, False, False]
    r = _scores(_problem(0, answers, correct))[0]
    assert (r["k"], r["n_samples"], r["n_correct"]) == (8, 8, 3)
    assert r["acc_at_k"] == 0.375
    assert r["pass_at_k"] == 1.0
    assert r["maj_at_k"] == 1.0


def test_majority_wrong_and_none_correct():
    r = _scores(_problem(0, ["9", "9", "9", "1", "2"], [False, False, False, True, False])
                + _problem(1, ["3"] * 5, [False] * 5))
    assert r[0]["maj_at_k"] == 0.0 and r[0]["acc_at_k"] == 0.2 and r[0]["pass_at_k"] == 1.0
    assert r[1]["maj_at_k"] == 0.0 and r[1]["acc_at_k"] == 0.0 and r[1]["pass_at_k"] == 0.0


def test_majority_ties_score_the_expected_vote():
    two_way = _problem(0, ["1", "1", "2", "2"], [True, True, False, False])
    three_way = _problem(1, ["1", "2", "3", None], [False, True, False, False])
    wrong_tie = _problem(2, ["1", "2", "3", "3"], [False, False, False, False])
    r = _scores(two_way + three_way + wrong_tie)
    assert r[0]["maj_at_k"] == 0.5
    assert r[1]["maj_at_k"] == pytest.approx(1 / 3)
    assert r[2]["maj_at_k"] == 0.0


def test_missing_answers_never_win():
    # four responses without an answer outnumber the single right one, which still wins the vote
    r = _scores(_problem(0, [None, None, None, None, "8"], [False, False, False, False, True])
                + _problem(1, [None] * 8, [False] * 8))
    assert r[0]["maj_at_k"] == 1.0
    assert r[1]["maj_at_k"] == 0.0 and r[1]["pass_at_k"] == 0.0 and r[1]["acc_at_k"] == 0.0


def test_an_answer_counts_as_correct_only_when_verified():
    # "4" twice, once in a response that failed the format check (correct false): the vote goes to "4",
    # and "4" is correct because one response giving it was verified correct
    r = _scores(_problem(0, ["4", "4", "5"], [True, False, False]) + _problem(1, ["4", "4", "5"], [False, False, True]))
    assert r[0]["maj_at_k"] == 1.0
    assert r[1]["maj_at_k"] == 0.0


def test_majority_takes_the_first_k_samples():
    # with k = 2 only samples 0 and 1 vote ("1" wrong, "1" wrong); the later right answers do not count
    rows = _problem(0, ["1", "1", "2", "2", "2"], [False, False, True, True, True])
    r = _scores(rows, k=2)[0]
    assert r["maj_at_k"] == 0.0
    assert r["acc_at_k"] == 0.6  # Acc@k uses all n samples: c/n
    assert r["pass_at_k"] == pytest.approx(1 - math.comb(2, 2) / math.comb(5, 2))


def test_k_larger_than_samples_is_an_error():
    with pytest.raises(UserError, match="fewer samples"):
        problem_scores(samples=make_samples(_problem(0, ["1"] * 3, [True] * 3)), k=4)


def _brute_pass_at_k(correct: list[bool], k: int) -> float:
    """Share of the k-subsets of the samples that hold at least one correct one."""
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_matches_enumeration(n):
    rows, expected = [], {}
    for c in range(n + 1):
        for k in range(1, n + 1):
            flags = [i < c for i in range(n)]
            rows.append(dict(n=n, c=c, k=k))
            expected[(c, k)] = _brute_pass_at_k(flags, k)
            assert expected[(c, k)] == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    df = pl.DataFrame(rows)
    for k in range(1, n + 1):
        got = df.filter(pl.col("k") == k).select("c", pass_at_k_expr("n", "c", k).alias("p"))
        for c, p in got.iter_rows():
            assert p == pytest.approx(expected[(c, k)], abs=1e-12), (n, c, k)


def test_pass_at_k_is_null_when_fewer_than_k_samples():
    df = pl.DataFrame({"n": [3, 4, 8], "c": [1, 1, 1]}).select(pass_at_k_expr("n", "c", 4).alias("p"))
    assert df["p"].to_list() == [None, 1.0, pytest.approx(0.5)]  # 1 − C(7,4)/C(8,4) = 1 − 35/70


def test_pass_at_k_from_the_table_matches_enumeration():
    flags = [True, False, False, True, False, False]
    r = _scores(_problem(0, ["1"] * 6, flags), k=3)[0]
    assert r["pass_at_k"] == pytest.approx(_brute_pass_at_k(flags, 3))  # 1 − C(4,3)/C(6,3) = 0.8


def test_benchmark_table_groups_and_averages():
    frames = [
        _labelled("GRPO", "arith", _problem(0, ["5"] * 3 + ["4"] * 5, [True] * 3 + [False] * 5)
                  + _problem(1, ["2"] * 8, [False] * 8) + _problem(0, ["1"] * 8, [True] * 8, step=10)),
        _labelled("GRPO", "arith-long", _problem(0, ["1"] * 8, [True] * 8)),
        _labelled("base", "arith", _problem(0, [None] * 8, [False] * 8)),
    ]
    df = benchmark_table(samples=pl.concat(frames), n_boot=200)
    got = {(r["label"], r["dataset"], r["step"]): r for r in df.iter_rows(named=True)}
    assert set(got) == {("GRPO", "arith", 0), ("GRPO", "arith", 10), ("GRPO", "arith-long", 0), ("base", "arith", 0)}
    g = got[("GRPO", "arith", 0)]
    assert (g["k"], g["n_problems"], g["n_samples"]) == (8, 2, 16)
    # problem 0: acc 3/8, maj 0 ("4" has 5 votes), pass 1; problem 1: all 0
    assert g["acc_at_k"] == pytest.approx((0.375 + 0.0) / 2)
    assert g["maj_at_k"] == 0.0
    assert g["pass_at_k"] == 0.5
    assert g["acc_at_k_ci_low"] <= g["acc_at_k"] <= g["acc_at_k_ci_high"]
    assert g["pass_at_k_ci_low"] == 0.0 and g["pass_at_k_ci_high"] == 1.0
    one = got[("GRPO", "arith-long", 0)]
    assert (one["acc_at_k"], one["maj_at_k"], one["pass_at_k"], one["n_problems"]) == (1.0, 1.0, 1.0, 1)
    assert math.isnan(one["acc_at_k_ci_low"])  # one problem: no interval
    assert got[("base", "arith", 0)]["maj_at_k"] == 0.0


def test_benchmark_table_without_label_columns():
    df = benchmark_table(samples=make_samples(_problem(0, ["1", "2"], [True, False])), n_boot=50)
    assert df.select("label", "dataset", "step").row(0) == ("", "", 0)
    assert df["acc_at_k"].item() == 0.5 and df["maj_at_k"].item() == 0.5 and df["pass_at_k"].item() == 1.0


def test_benchmark_table_of_an_empty_frame():
    df = benchmark_table(samples=make_samples([]).with_columns(pl.lit("x").alias("label")))
    assert df.height == 0 and "pass_at_k_ci_high" in df.columns
