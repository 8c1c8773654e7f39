"""The registered arith eval sets: `arith` never changes (stores record its fingerprint); `arith-long` and
`arith-wide` are the out-of-domain benchmarks of Table 1 and must still fit a response in the trainer's 64
new tokens."""

from entropy_lens.tasks import load_eval_set
from entropy_lens.tasks.arith import parse_chain, solution_text, verify
from entropy_lens.train.config import TrainConfig


def test_arith_is_unchanged():
    e = load_eval_set("arith")
    assert e.fingerprint == "b672543fb3314771"  # the fingerprint in data/runs/demo/baseline/sweep/lens.json
    assert len(e.problems) == 64


def test_arith_long_is_longer_held_out_and_fits():
    long, short = load_eval_set("arith-long"), load_eval_set("arith")
    assert len(long.problems) == 64 and long.name == "arith-long"
    assert {len(parse_chain(p.prompt[3:].strip())[1]) for p in long.problems} == {4}
    assert {len(parse_chain(p.prompt[3:].strip())[1]) for p in short.problems} == {2, 3}
    assert not {p.prompt for p in long.problems} & {p.prompt for p in short.problems}
    # the character tokenizer: one token per character of the clean solution, plus EOS
    assert max(len(solution_text(p)) + 1 for p in long.problems) <= TrainConfig().max_new_tokens
    assert all(verify(solution_text(p), p.answer).correct for p in long.problems)


def test_arith_wide_has_operands_beyond_training_and_fits():
    wide, short = load_eval_set("arith-wide"), load_eval_set("arith")
    assert len(wide.problems) == 64 and wide.name == "arith-wide"
    operands = [[a] + [b for _, b in chain] for a, chain in (parse_chain(p.prompt[3:].strip()) for p in wide.problems)]
    assert max(max(o) for o in operands) > 20 >= max(max(o) for o in (
        [a] + [b for _, b in chain] for a, chain in (parse_chain(p.prompt[3:].strip()) for p in short.problems)))
    assert {len(o) - 1 for o in operands} == {2, 3}
    assert not {p.prompt for p in wide.problems} & {p.prompt for p in short.problems}
    assert max(len(solution_text(p)) + 1 for p in wide.problems) <= TrainConfig().max_new_tokens
    assert all(verify(solution_text(p), p.answer).correct for p in wide.problems)
