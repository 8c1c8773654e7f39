"""The SFT warm-up's noise (``arith.sft_target``): none gives the clean solution; the default plants format
violations at the rate its docstring states."""

import random

import numpy as np

from entropy_lens.tasks.arith import DEFAULT_TASK, Noise, sft_target, solution_text, verify

CLEAN = Noise(slip=0.0, no_marker=0.0, double_answer=0.0, filler=0.0, cjk=0.0)


def test_without_noise_the_target_is_the_clean_solution_and_correct():
    rng = random.Random(0)
    for p in DEFAULT_TASK.problems(200, seed=3):
        target = sft_target(p, rng, CLEAN)
        assert target == solution_text(p) and verify(target, p.answer).correct


def test_format_violations_at_the_stated_rate():
    """No marker (and no second answer) or two markers: no_marker × (1 − double) + double × (1 − no_marker)."""
    noise, n = Noise(slip=0.0, filler=0.0, cjk=0.0), 6000
    rng = random.Random(1)
    verdicts = [verify(sft_target(p, rng, noise), p.answer) for p in DEFAULT_TASK.problems(n, seed=4)]
    bad = np.mean([not v.format_ok for v in verdicts])
    expected = noise.no_marker * (1 - noise.double_answer) + noise.double_answer * (1 - noise.no_marker)
    assert abs(bad - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    # both at once leave one marker, on the wrong number: formatted but wrong
    wrong_formatted = np.mean([v.format_ok and not v.correct for v in verdicts])
    both = noise.no_marker * noise.double_answer
    assert abs(wrong_formatted - both) < 4 * np.sqrt(both * (1 - both) / n)
    assert abs(Noise().no_marker * (1 - Noise().double_answer) + Noise().double_answer * (1 - Noise().no_marker)
               - 0.29) < 0.005  # the rate arith.Noise's docstring quotes
