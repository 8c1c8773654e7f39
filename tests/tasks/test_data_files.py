"""data/evalsets/*.jsonl is what the built-in --dataset names contain, and data/examples is readable."""

import json
from pathlib import Path

import pytest

from entropy_lens.tasks import load_eval_set

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.parametrize("name", ["arith", "arith-long", "arith-wide"])
def test_evalset_file_matches_the_generator(name):
    rows = [json.loads(line) for line in (DATA / "evalsets" / f"{name}.jsonl").read_text().splitlines()]
    problems = load_eval_set(name).problems
    assert rows == [{"prompt_id": p.prompt_id, "prompt": p.prompt, "answer": p.answer} for p in problems]


def test_evalset_file_loads_as_a_problem_file():
    es = load_eval_set(str(DATA / "evalsets" / "arith.jsonl"))
    assert [(p.prompt, p.answer) for p in es.problems] == [(p.prompt, p.answer) for p in load_eval_set("arith").problems]


def test_math_example_loads_with_renamed_fields():
    es = load_eval_set(str(DATA / "examples" / "math-sample.jsonl"), prompt_field="problem", answer_field="solution")
    assert len(es.problems) == 8
    assert es.verify(r"so the answer is \boxed{\frac{5}{6}}", es.problems[0].answer).correct
    assert not es.verify(r"\boxed{\frac{5}{7}}", es.problems[0].answer).correct
