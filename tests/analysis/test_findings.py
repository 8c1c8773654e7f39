"""Every verdict rule of analysis/findings.py on small planted tables: the branch where the data agree with the
paper, the branch where they do not (with the reason given), and the branch where the finding cannot be
measured (with its reason)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from entropy_lens.analysis import findings as fd
from entropy_lens.analysis.findings import AGREES, CLAIMS, DISAGREES, NOT_MEASURED, RULES

WIGGLE = [0.0, 0.01, -0.01, 0.005, -0.005, 0.0, 0.01, -0.01, 0.005, -0.005]  # noise that keeps bootstraps non-degenerate


def verdict(f: fd.Finding) -> tuple[str, str]:
    return f.verdict, f.why


def test_every_claim_has_a_rule_and_a_function():
    assert sorted(CLAIMS) == sorted(RULES) == list("ABCDEFGHIJKLMNO")
    assert all(callable(getattr(fd, f"finding_{k}")) for k in CLAIMS)
    f = fd.not_measured("J", "why not")
    assert f.markdown() == (f"- **J. {CLAIMS['J']}.** Not measured.\n"
                            f"  - Verdict: **not measured (why not)**. Rule: {RULES['J']}.")


# ------------------------------------------------------------------------------------------------ A


def polarity_table(neg, pos) -> pl.DataFrame:
    steps = list(range(len(neg)))
    return pl.DataFrame({"step": steps * 2, "polarity": ["negative"] * len(neg) + ["positive"] * len(pos),
                         "entropy_token_mean": [*neg, *pos]})


def test_A_agrees_when_negatives_start_higher_and_fall_faster():
    s = np.arange(6)
    pol = polarity_table(2.0 - 0.2 * s + WIGGLE[:6], 1.0 - 0.05 * s)  # H_neg − H_pos = 1 − 0.15 s
    f = fd.finding_A(pol, 6, n_boot=200)
    assert verdict(f) == (AGREES, "")
    assert f.measured.startswith("Rising stage (steps < 6): H_neg − H_pos = 0.625")


def test_A_disagrees_when_the_gap_is_negative_and_widens():
    s = np.arange(6)
    pol = polarity_table(0.05 * s + WIGGLE[:6], 1.0 + 0 * s)  # H_neg − H_pos = −1 + 0.05 s
    f = fd.finding_A(pol, 6, n_boot=200)
    assert verdict(f) == (DISAGREES, "level: opposite direction, CI excludes 0; slope: opposite direction, CI excludes 0")


def test_A_disagrees_without_a_gap():
    s = np.arange(6)
    pol = polarity_table(1.0 - 0.1 * s + WIGGLE[:6], 1.0 - 0.1 * s - WIGGLE[:6])  # no gap, no trend in the gap
    v, why = verdict(fd.finding_A(pol, 6, n_boot=200))
    assert v == DISAGREES and why.startswith("level: CI includes 0; slope: ")


def test_A_not_measured():
    s = np.arange(6)
    pol = polarity_table(2.0 - 0.2 * s, 1.0 - 0.05 * s)
    assert verdict(fd.finding_A(pol, None)) == (NOT_MEASURED, "no stage boundary")
    assert verdict(fd.finding_A(pol, 2)) == (NOT_MEASURED, "2 rising-stage step(s) with both polarities; need ≥ 3")
    assert verdict(fd.finding_A(pol.filter(pl.col("polarity") == "negative"), 6)) == \
        (NOT_MEASURED, "the rising stage lacks steps with both positive and negative samples")


# ------------------------------------------------------------------------------------------------ B

VOCAB = pl.LazyFrame({"token_id": [0, 1, 2, 3, 4], "token": ["3", "=", " the", " cat", " dog"]},
                     schema={"token_id": pl.Int32, "token": pl.Utf8})
FORMAL, SUPPORT = [0, 1], [2, 3, 4]


def shift_tokens(formal_share_start: float, formal_share_end: float, n: int = 200) -> pl.LazyFrame:
    """Steps 0–3, n tokens each; steps 0–1 (the start window) and 2–3 (the end window) with the given formal shares."""
    rows = []
    for step in range(4):
        share = formal_share_start if step < 2 else formal_share_end
        k = int(round(share * n))
        ids = [FORMAL[i % 2] for i in range(k)] + [SUPPORT[i % 3] for i in range(n - k)]
        rows += [(step, i) for i in ids]
    return pl.DataFrame(rows, schema={"step": pl.Int32, "token_id": pl.Int32}, orient="row").lazy()


def shift_table(support_change: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"token_id": [*FORMAL, *SUPPORT], "entropy_change": [0.0, 0.0, *support_change]},
                        schema={"token_id": pl.Int32, "entropy_change": pl.Float64})


def test_B_agrees_when_formal_tokens_rise_and_support_tokens_lose_entropy():
    f = fd.finding_B(shift_tokens(0.1, 0.6), VOCAB, shift_table([-0.5, -0.4, -0.6]), 4, window=2, n_boot=200)
    assert verdict(f) == (AGREES, "")
    assert f.measured.startswith("Windows: steps [0, 1] → [2, 3]. Formal-token share 0.100 → 0.600")


def test_B_disagrees_when_formal_tokens_fall_and_support_entropy_rises():
    f = fd.finding_B(shift_tokens(0.6, 0.1), VOCAB, shift_table([0.5, 0.4, 0.6]), 4, window=2, n_boot=200)
    assert verdict(f) == (DISAGREES, "formal share: opposite direction, CI excludes 0; "
                                     "support entropy: opposite direction, CI excludes 0")
    f = fd.finding_B(shift_tokens(0.1, 0.6), VOCAB, shift_table([0.5, 0.4, 0.6]), 4, window=2, n_boot=200)
    assert verdict(f) == (DISAGREES, "support entropy: opposite direction, CI excludes 0")


def test_B_not_measured():
    tokens, shift = shift_tokens(0.1, 0.6), shift_table([-0.5, -0.4, -0.6])
    assert verdict(fd.finding_B(tokens, None, shift, 4)) == \
        (NOT_MEASURED, "the store has no vocab.parquet to classify token types")
    for empty in (None, shift.head(0)):
        assert verdict(fd.finding_B(tokens, VOCAB, empty, 4)) == \
            (NOT_MEASURED, "no token-shift table (the rising stage has fewer than 2 steps)")


# ------------------------------------------------------------------------------------------------ C


def defect_flags(defective_per_step: list[int], n: int = 40) -> pl.DataFrame:
    rows = [dict(step=s, format=i < k, irrelevant=False, language_mixing=False, any_defect=i < k)
            for s, k in enumerate(defective_per_step) for i in range(n)]
    return pl.DataFrame(rows)


def test_C_agrees_when_defects_drop_across_the_rising_stage():
    f = fd.finding_C(defect_flags([30, 28, 3, 2, 2]), 4, window=2)
    assert verdict(f) == (AGREES, "")
    assert f.measured.startswith("Any defect: 0.725 (steps [0, 1], n = 80) → 0.062 (steps [2, 3], n = 80)")
    assert "format 0.725 → 0.062, irrelevant 0.000 → 0.000" in f.measured


def test_C_disagrees_when_defects_rise_or_hold():
    assert verdict(fd.finding_C(defect_flags([2, 3, 28, 30]), 4, window=2)) == \
        (DISAGREES, "opposite direction, CI excludes 0")
    assert verdict(fd.finding_C(defect_flags([10, 11, 10, 11]), 4, window=2)) == (DISAGREES, "CI includes 0")


def test_C_not_measured():
    assert verdict(fd.finding_C(defect_flags([30, 28, 3, 2]), 1)) == \
        (NOT_MEASURED, "the rising stage has 1 step(s); need ≥ 2")


# ------------------------------------------------------------------------------------------------ D


def delta_p_table(rows: list[tuple]) -> pl.DataFrame:
    """rows: (stage, polarity, n, share_small, share_increase, share_decrease)."""
    return pl.DataFrame(rows, schema=["stage", "polarity", "n", "share_small", "share_increase", "share_decrease"],
                        orient="row")


def test_D_agrees_when_few_tokens_move_and_big_moves_follow_polarity():
    dist = delta_p_table([("rising", "positive", 1000, 0.5, 0.25, 0.25),  # other stage: not read
                          ("plateau", "positive", 100_000, 0.995, 0.004, 0.001),
                          ("plateau", "negative", 100_000, 0.995, 0.001, 0.004)])
    f = fd.finding_D(dist, "plateau")
    assert verdict(f) == (AGREES, "")
    assert f.measured.startswith("Plateau: share with |Δp| < 1e-3 = 0.9950")
    assert "positive samples (100,000 tokens): increases are 0.800" in f.measured


def test_D_disagrees():
    moving = delta_p_table([("all", "positive", 1000, 0.9, 0.08, 0.02), ("all", "negative", 1000, 0.9, 0.02, 0.08)])
    f = fd.finding_D(moving, None)
    assert verdict(f) == (DISAGREES, "little-change share below 0.99") and f.measured.startswith("All steps:")
    backwards = delta_p_table([("plateau", "positive", 100_000, 0.995, 0.001, 0.004),
                               ("plateau", "negative", 100_000, 0.995, 0.004, 0.001)])
    assert verdict(fd.finding_D(backwards, "plateau")) == (DISAGREES, "direction of the big updates")
    one_sided = backwards.filter(pl.col("polarity") == "negative")
    f = fd.finding_D(one_sided, "plateau")
    assert verdict(f) == (DISAGREES, "direction of the big updates") and "no positive samples" in f.measured


def test_D_not_measured():
    dist = delta_p_table([("rising", "positive", 1000, 0.995, 0.004, 0.001)])
    assert verdict(fd.finding_D(dist, "plateau")) == (NOT_MEASURED, "no Δp rows")


# ------------------------------------------------------------------------------------------------ E


def sets_table(diff: float, low: float, high: float, n_top: int = 100) -> pl.DataFrame:
    return pl.DataFrame({"set": ["all", "top"], "n": [10_000, n_top], "entropy_mean": [1.0, 1.0 + diff],
                         "diff_vs_rest": [None, diff], "ci_low": [None, low], "ci_high": [None, high]})


def bins_table(grad_slope: float) -> pl.DataFrame:
    h = np.linspace(0.1, 3.0, 10)
    return pl.DataFrame({"entropy_mean": h, "mean_grad_norm": 0.5 + grad_slope * h + WIGGLE,
                         "mean_abs_delta_p": 0.01 * h})


def test_E_agrees_when_updated_tokens_are_high_entropy_with_larger_gradients():
    f = fd.finding_E(sets_table(1.0, 0.8, 1.2), bins_table(0.2), 0.01)
    assert verdict(f) == (AGREES, "")
    assert f.measured.startswith("Top-1.0% |Δp| tokens (n = 100) have mean entropy 2.000 nats")
    assert "entropy vs mean |Δp| ρ = 1.000" in f.measured


def test_E_disagrees():
    f = fd.finding_E(sets_table(-0.5, -0.7, -0.3), bins_table(-0.2), 0.01)
    assert verdict(f) == (DISAGREES, "entropy of updated tokens: opposite direction, CI excludes 0; "
                                     "gradient: opposite direction, CI excludes 0")
    f = fd.finding_E(sets_table(0.1, -0.1, 0.3), bins_table(0.2), 0.01)
    assert verdict(f) == (DISAGREES, "entropy of updated tokens: CI includes 0")


def test_E_not_measured():
    assert verdict(fd.finding_E(sets_table(1.0, 0.8, 1.2, n_top=0), bins_table(0.2), 0.01)) == \
        (NOT_MEASURED, "no significantly updated tokens")
    assert verdict(fd.finding_E(sets_table(1.0, 0.8, 1.2).filter(pl.col("set") == "all"), bins_table(0.2), 0.01)) == \
        (NOT_MEASURED, "no significantly updated tokens")


# ------------------------------------------------------------------------------------------------ F


def category_table(mean_abs: dict[str, float], share_significant: dict[str, float], stage: str = "plateau") -> pl.DataFrame:
    cats = ["formal", "logical", "metacognitive", "support"]
    return pl.DataFrame({"stage": [stage] * 4, "category": cats, "n": [1000] * 4, "share_tokens": [0.25] * 4,
                         "mean_abs_delta_p": [mean_abs[c] for c in cats],
                         "share_significant": [share_significant[c] for c in cats]})


EVEN = {"formal": 0.01, "logical": 0.01, "metacognitive": 0.01, "support": 0.01}


def test_F_agrees_when_formal_tokens_get_the_strongest_and_most_significant_updates():
    cat = category_table({**EVEN, "formal": 0.02}, {**EVEN, "formal": 0.05})
    f = fd.finding_F(cat, "plateau")
    assert verdict(f) == (AGREES, "")
    assert "(largest: formal)" in f.measured and "Formal tokens are 0.250 of tokens and 0.625 (CI [0.515, 0.723], n = 80)" in f.measured


def test_F_disagrees():
    cat = category_table({**EVEN, "logical": 0.03}, {**EVEN, "formal": 0.05})
    assert verdict(fd.finding_F(cat, "plateau")) == (DISAGREES, "largest mean |Δp| is logical")
    cat = category_table({**EVEN, "formal": 0.02}, EVEN)
    assert verdict(fd.finding_F(cat, "plateau")) == (DISAGREES, "formal not enriched among significant updates")


def test_F_not_measured():
    cat = category_table({**EVEN, "formal": 0.02}, {**EVEN, "formal": 0.05})
    assert verdict(fd.finding_F(cat.filter(pl.col("category") != "formal"), "plateau")) == \
        (NOT_MEASURED, "no formal-reasoning tokens in the updates")
    assert verdict(fd.finding_F(cat, "rising")) == (NOT_MEASURED, "no formal-reasoning tokens in the updates")


# ------------------------------------------------------------------------------------------------ G


def ppl_table(n_top: dict[str, int], stage: str = "plateau") -> pl.DataFrame:
    buckets = [b for b in ("low", "mid", "high") if b in n_top]
    total = sum(n_top.values())
    share_tokens = {"low": 0.3, "mid": 0.4, "high": 0.3}
    return pl.DataFrame({"stage": [stage] * len(buckets), "ppl_bucket": buckets,
                         "n_top": [n_top[b] for b in buckets], "share_tokens": [share_tokens[b] for b in buckets],
                         "share_top": [n_top[b] / total for b in buckets],
                         "enrichment": [n_top[b] / total / share_tokens[b] for b in buckets]})


def test_G_agrees_when_low_ppl_samples_hold_the_top_updates():
    f = fd.finding_G(ppl_table({"low": 60, "mid": 30, "high": 10}), "plateau")
    assert verdict(f) == (AGREES, "")
    assert f.measured.startswith("Of 100 top-|Δp| tokens, low-PPL samples hold 0.600")


def test_G_disagrees():
    assert verdict(fd.finding_G(ppl_table({"low": 20, "mid": 30, "high": 50}), "plateau")) == \
        (DISAGREES, "low-PPL samples not over-represented")
    # above its token share, but not above the high-PPL bucket's share of the top updates
    assert verdict(fd.finding_G(ppl_table({"low": 45, "mid": 5, "high": 50}), None)) == \
        (DISAGREES, "low-PPL samples not over-represented")


def test_G_not_measured():
    assert verdict(fd.finding_G(ppl_table({"mid": 30, "high": 10}), "plateau")) == \
        (NOT_MEASURED, "PPL buckets present: ['mid', 'high']; need low and high")
    assert verdict(fd.finding_G(ppl_table({"low": 60, "high": 10}), "rising")) == \
        (NOT_MEASURED, "PPL buckets present: []; need low and high")


# ------------------------------------------------------------------------------------------------ H, K


def interventions(kind: str, groups: dict[str, tuple[float, float, float]]) -> pl.DataFrame:
    return pl.DataFrame({"kind": [kind] * len(groups), "group": list(groups), "n": [50] * len(groups),
                         "delta_accuracy": [v[0] for v in groups.values()],
                         "ci_low": [v[1] for v in groups.values()], "ci_high": [v[2] for v in groups.values()]})


def test_H_agrees_when_low_ppl_samples_are_hurt_less():
    iv = interventions("ppl", {"low-ppl": (-0.05, -0.10, 0.0), "high-ppl": (-0.30, -0.35, -0.25)})
    f = fd.finding_H(iv)
    assert verdict(f) == (AGREES, "") and "difference 0.250" in f.measured


def test_H_disagrees():
    iv = interventions("ppl", {"low-ppl": (-0.30, -0.35, -0.25), "high-ppl": (-0.05, -0.10, 0.0)})
    assert verdict(fd.finding_H(iv)) == (DISAGREES, "opposite direction, CI excludes 0")
    iv = interventions("ppl", {"low-ppl": (-0.10, -0.3, 0.1), "high-ppl": (-0.12, -0.3, 0.06)})
    assert verdict(fd.finding_H(iv)) == (DISAGREES, "CI includes 0")


def test_H_not_measured():
    assert verdict(fd.finding_H(None)) == (NOT_MEASURED, "no interventions table (run `entropy-lens intervene`)")
    iv = interventions("position", {"begin": (-0.3, -0.35, -0.25), "end": (-0.05, -0.1, 0.0)})
    assert verdict(fd.finding_H(iv)) == \
        (NOT_MEASURED, "interventions table has no ppl rows for groups containing 'low' and 'high'")


def test_K_agrees_when_the_end_is_hurt_less_than_the_beginning():
    iv = interventions("position", {"begin": (-0.30, -0.35, -0.25), "end": (-0.05, -0.10, 0.0)})
    assert verdict(fd.finding_K(iv)) == (AGREES, "")


def test_K_disagrees():
    iv = interventions("position", {"begin": (-0.05, -0.10, 0.0), "end": (-0.30, -0.35, -0.25)})
    assert verdict(fd.finding_K(iv)) == (DISAGREES, "opposite direction, CI excludes 0")
    iv = interventions("position", {"begin": (-0.05, float("nan"), float("nan")), "end": (0.0, -0.1, 0.1)})
    assert verdict(fd.finding_K(iv)) == (DISAGREES, "too few data for an interval")


def test_K_not_measured():
    assert verdict(fd.finding_K(None))[0] == NOT_MEASURED
    iv = interventions("ppl", {"low-ppl": (-0.05, -0.10, 0.0), "high-ppl": (-0.30, -0.35, -0.25)})
    assert verdict(fd.finding_K(iv)) == \
        (NOT_MEASURED, "interventions table has no position rows for groups containing 'end' and 'begin'")


# ------------------------------------------------------------------------------------------------ J


def u_table(start: tuple[float, float, float], end: tuple[float, float, float], polarity: str = "all") -> pl.DataFrame:
    return pl.DataFrame({"polarity": [polarity] * 2, "contrast": ["start-middle", "end-middle"],
                         "estimate": [start[0], end[0]], "ci_low": [start[1], end[1]], "ci_high": [start[2], end[2]],
                         "n": [500, 500]})


def test_J_agrees_when_both_ends_are_above_the_middle():
    f = fd.finding_J(u_table((0.5, 0.3, 0.7), (0.4, 0.2, 0.6)))
    assert verdict(f) == (AGREES, "")
    assert f.measured == ("Start − middle 0.500 (CI [0.300, 0.700], n = 500) nats; "
                          "end − middle 0.400 (CI [0.200, 0.600], n = 500) nats (responses).")


def test_J_disagrees():
    assert verdict(fd.finding_J(u_table((0.5, 0.3, 0.7), (-0.1, -0.3, 0.1)))) == (DISAGREES, "end: CI includes 0")
    assert verdict(fd.finding_J(u_table((-0.5, -0.7, -0.3), (-0.4, -0.6, -0.2)))) == \
        (DISAGREES, "start: opposite direction, CI excludes 0; end: opposite direction, CI excludes 0")


def test_J_not_measured():
    assert verdict(fd.finding_J(u_table((0.5, 0.3, 0.7), (0.4, 0.2, 0.6), polarity="positive"))) == \
        (NOT_MEASURED, "no responses with tokens in the first, middle and last 10%")


# ------------------------------------------------------------------------------------------------ I, L, M


def steps_log(acc: float, entropy: float, length: float = 100.0, n: int = 10) -> pl.DataFrame:
    """A training log of n steps (0, 10, ...) with the given levels, plus a little step-to-step noise."""
    w = np.array(WIGGLE[:n])
    return pl.DataFrame({"step": np.arange(n) * 10, "eval_accuracy": acc + w, "entropy": entropy + w / 10,
                         "response_length": length + 10 * w})


def test_I_agrees_when_low_ppl_weighting_is_more_accurate_with_lower_entropy():
    runs = {"ppl": steps_log(0.6, 0.2), "ppl-high": steps_log(0.5, 0.3)}
    f = fd.finding_I(runs, 40, n_boot=200)
    assert verdict(f) == (AGREES, "")
    assert f.measured.startswith("Paired by step (steps ≥ 40): eval_accuracy ppl − ppl-high = 0.100")


def test_I_disagrees_and_marks_the_failed_comparison():
    runs = {"ppl": steps_log(0.4, 0.2), "ppl-high": steps_log(0.5, 0.3)}
    f = fd.finding_I(runs, None, n_boot=200)
    assert verdict(f) == (DISAGREES, "")
    assert "eval_accuracy ppl − ppl-high = -0.100" in f.measured and "[opposite direction, CI excludes 0]" in f.measured
    assert "(all steps)" in f.measured


def test_I_not_measured_or_partial():
    assert verdict(fd.finding_I({"ppl": steps_log(0.6, 0.2)}, None)) == (NOT_MEASURED, "absent run(s): RUN/ppl-high")
    runs = {"ppl": steps_log(0.6, 0.2).drop("entropy"), "ppl-high": steps_log(0.5, 0.3)}
    assert verdict(fd.finding_I(runs, None, n_boot=200)) == \
        (AGREES, "partial: entropy ppl − ppl-high (no shared steps with entropy)")


def test_L_agrees_when_the_end_bonus_wins_on_every_count():
    runs = {"position": steps_log(0.6, 0.3, 120), "position-begin": steps_log(0.5, 0.25), "baseline": steps_log(0.5, 0.2)}
    assert verdict(fd.finding_L(runs, None, n_boot=200)) == (AGREES, "")


def test_L_disagrees():
    runs = {"position": steps_log(0.5, 0.3, 90), "position-begin": steps_log(0.5, 0.25), "baseline": steps_log(0.5, 0.2)}
    f = fd.finding_L(runs, None, n_boot=200)
    assert verdict(f) == (DISAGREES, "")
    assert "response_length position − baseline = -10.000" in f.measured


def test_L_not_measured_or_partial():
    assert verdict(fd.finding_L({"baseline": steps_log(0.5, 0.2)}, None)) == \
        (NOT_MEASURED, "absent run(s): RUN/position, RUN/position-begin")
    runs = {"position": steps_log(0.6, 0.3, 120), "baseline": steps_log(0.5, 0.2)}
    assert verdict(fd.finding_L(runs, None, n_boot=200)) == (AGREES, "partial: absent run(s): RUN/position-begin")


def test_M_agrees_when_both_methods_keep_entropy_higher_late():
    early_low = pl.DataFrame({"step": [0, 10], "eval_accuracy": [0.1, 0.1], "entropy": [0.0, 0.0],
                              "response_length": [1.0, 1.0]})
    late = steps_log(0.5, 0.3).filter(pl.col("step") >= 40)
    runs = {"ppl": pl.concat([early_low, late]), "position": pl.concat([early_low, late]), "baseline": steps_log(0.5, 0.2)}
    assert verdict(fd.finding_M(runs, 40, n_boot=200)) == (AGREES, "")  # from the late start on
    assert verdict(fd.finding_M(runs, None, n_boot=200))[0] == DISAGREES  # the early steps go the other way


def test_M_disagrees():
    runs = {"ppl": steps_log(0.5, 0.1), "position": steps_log(0.5, 0.3), "baseline": steps_log(0.5, 0.2)}
    f = fd.finding_M(runs, None, n_boot=200)
    assert verdict(f) == (DISAGREES, "")
    assert "entropy ppl − baseline = -0.100" in f.measured and "entropy position − baseline = 0.100" in f.measured


def test_M_not_measured():
    assert verdict(fd.finding_M({"baseline": steps_log(0.5, 0.2)}, None)) == \
        (NOT_MEASURED, "absent run(s): RUN/position, RUN/ppl")
    runs = {"ppl": steps_log(0.5, 0.3).with_columns(pl.col("step") + 5), "baseline": steps_log(0.5, 0.2)}
    assert verdict(fd.finding_M(runs, None)) == \
        (NOT_MEASURED, "absent run(s): RUN/position; entropy ppl − baseline (no shared steps with entropy)")


@pytest.mark.parametrize("value,text", [(None, "n/a"), (float("nan"), "n/a"), (12345, "12,345"), (0.5, "0.500"),
                                        (1e-4, "1.00e-04"), (2e5, "2.00e+05"), (0.0, "0.000")])
def test_fmt(value, text):
    assert fd.fmt(value) == text
