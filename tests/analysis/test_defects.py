import polars as pl
import pytest

from entropy_lens.analysis.defects import (
    DEFECT_DETECTORS,
    defect_flags,
    defect_proportions,
    longest_repeat_run,
    ngram_repetition_ratio,
)

from tests.analysis.store_builders import make_samples

TEXTS = [
    ("The sum is 4. \\boxed{4}", True, False),                 # ok
    ("The sum is 4. 答案 \\boxed{4}", True, False),             # language mixing
    ("a" * 600 + " \\boxed{4}", True, False),                  # 600-char run → irrelevant
    ("so so so so so so so so \\boxed{4}", True, False),        # 3-gram repetition 5/7 > 0.35
    ("no final answer here", False, False),                    # format
    ("cut off mid senten", True, True),                        # truncated → format
]


def _samples():
    return make_samples([dict(step=i // 3, prompt_id=0, sample_id=i % 3, text=t, format_ok=f, truncated=tr)
                         for i, (t, f, tr) in enumerate(TEXTS)])


def test_helpers():
    assert longest_repeat_run("xxabababy") == 6
    assert longest_repeat_run("abc") == 0
    assert ngram_repetition_ratio("a b c a b c") == pytest.approx(1 - 3 / 4)
    assert ngram_repetition_ratio("a b") == 0.0


def test_defect_flags_known_texts():
    df = defect_flags(samples=_samples())
    assert df["defect"].to_list() == ["ok", "language_mixing", "irrelevant", "irrelevant", "format", "format"]
    assert df["any_defect"].to_list() == [False, True, True, True, True, True]
    assert set(DEFECT_DETECTORS.names()) >= {"format", "irrelevant", "language_mixing"}


def test_configurable_params():
    df = defect_flags(samples=_samples(), detectors=["irrelevant", "language_mixing"],
                      params={"irrelevant": {"min_repeat_chars": 1000, "max_ngram_ratio": 0.9},
                              "language_mixing": {"allowed": r"\x00-\x7F"}})
    assert df["irrelevant"].to_list() == [False] * 6
    assert df["language_mixing"].to_list() == [False, True, False, False, False, False]


def test_defect_proportions_exact():
    df = defect_proportions(samples=_samples())
    r = {(x["step"], x["defect"]): x for x in df.iter_rows(named=True)}
    assert r[0, "language_mixing"]["proportion"] == pytest.approx(1 / 3)
    assert r[0, "irrelevant"]["count"] == 1 and r[1, "irrelevant"]["count"] == 1
    assert r[1, "format"]["proportion"] == pytest.approx(2 / 3)
    assert r[1, "any"]["proportion"] == pytest.approx(1.0) and r[1, "any"]["n"] == 3
    assert r[0, "any"]["ci_low"] < 2 / 3 < r[0, "any"]["ci_high"]
