"""`entropy-lens score`: a run's saved rollouts (verl, TRL, plain JSONL) re-scored teacher-forced.

The rollouts are the tiny model's own generations: `collect` samples a store, its responses are written out
the way verl and TRL dump them (text decoded with skip_special_tokens, so EOS is gone; steps numbered after
the update, so rollout step s+1 was sampled by checkpoint s), and `score` must give back exactly the
statistics `collect` computed for the same tokens under the same checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import entropy_lens
from entropy_lens.capture.rollouts import MATCH_RULES, detect_format
from entropy_lens.cli import main
from tests.capture.test_sweep import FAST

MAX_NEW = 12  # FAST's --max-new-tokens: the "trainer's" response limit
CKPT_STEPS = (10, 20)
TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # renders the prompt text unchanged


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Checkpoints 10 and 20 whose tokenizer has a chat template, and a `collect` store sampled from them."""
    from entropy_lens.models import build_char_tokenizer
    from entropy_lens.tasks.arith import ALPHABET
    from tests.conftest import make_tiny

    tok = build_char_tokenizer(ALPHABET)
    tok.chat_template = TEMPLATE
    root = tmp_path_factory.mktemp("ingest")
    ckpts = root / "ckpts"
    for step in CKPT_STEPS:
        make_tiny(tok, seed=step).save_pretrained(ckpts / f"step_{step}")
    # The tokenizer once beside the checkpoints (as verl saves it).  Saved inside a checkpoint folder, next to
    # its config.json, transformers 5 reloads it as a Qwen2Tokenizer whose byte-level pre-tokenizer drops
    # spaces, newlines and CJK characters, so decoded text would not re-encode to the sampled tokens.
    tok.save_pretrained(ckpts)
    store = root / "collected"
    assert main(["collect", str(ckpts), "--dataset", "arith", "--out", str(store), *FAST, "--no-updates"]) == 0
    s = entropy_lens.open(store)
    samples = s.samples.collect().sort("step", "prompt_id", "sample_id")
    ids = (s.tokens.collect().sort("step", "prompt_id", "sample_id", "position")
           .group_by("step", "prompt_id", "sample_id", maintain_order=True).agg("token_id", "logprob", "entropy",
                                                                                 "sum_p2"))
    return ckpts, samples.join(ids, on=["step", "prompt_id", "sample_id"]), tok


def write_verl(folder: Path, collected: pl.DataFrame) -> Path:
    """verl's _dump_generations: one {step}.jsonl per step, step = checkpoint step + 1."""
    folder.mkdir(parents=True, exist_ok=True)
    for (step,), g in collected.group_by("step", maintain_order=True):
        with (folder / f"{step + 1}.jsonl").open("w") as f:
            for r in g.iter_rows(named=True):
                f.write(json.dumps({"input": r["prompt"], "output": r["text"], "gts": r["gold"],
                                    "score": r["reward"], "step": step + 1, "acc": r["correct"]}) + "\n")
    return folder


def write_trl(output_dir: Path, collected: pl.DataFrame, *, messages: bool) -> Path:
    """GRPOTrainer log_completions: completions/completions_{step:05d}.parquet, one reward column per function."""
    (output_dir / "completions").mkdir(parents=True, exist_ok=True)
    for (step,), g in collected.group_by("step", maintain_order=True):
        prompts = g["prompt"].to_list()
        completions = g["text"].to_list()
        table = {"step": [step + 1] * len(g),
                 "prompt": [[{"role": "user", "content": p}] for p in prompts] if messages else prompts,
                 "completion": [[{"role": "assistant", "content": c}] for c in completions] if messages
                 else completions,
                 "accuracy_reward": [1.0 if c else 0.0 for c in g["correct"]],
                 "format_reward": [0.5] * len(g), "advantage": np.linspace(-1, 1, len(g)).tolist()}
        pq.write_table(pa.table(table), output_dir / "completions" / f"completions_{step + 1:05d}.parquet")
    return output_dir


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def plain_rows(collected: pl.DataFrame, step_offset: int = 0) -> list[dict]:
    return [{"prompt": r["prompt"], "response": r["text"], "answer": r["gold"], "reward": r["reward"],
             "step": r["step"] + step_offset} for r in collected.iter_rows(named=True)]


def score(ckpts, rollouts, out, *extra) -> int:
    return main(["score", str(ckpts), "--rollouts", str(rollouts), "--out", str(out), *extra])


def assert_matches_collect(out: Path, collected: pl.DataFrame, step_offset: int, source: str) -> None:
    """Every re-scored response whose re-encoded tokens are the sampled ones has collect's statistics."""
    store = entropy_lens.open(out)
    tokens = (store.tokens.collect().sort("step", "prompt_id", "sample_id", "position")
              .group_by("step", "prompt_id", "sample_id", maintain_order=True)
              .agg("token_id", "logprob", "entropy", "sum_p2", "position"))
    samples = store.samples.collect()
    assert set(samples["source"]) == {source}
    assert store.completed_steps == [s + step_offset for s in CKPT_STEPS]
    assert len(samples) == len(collected)
    got = tokens.with_columns(pl.col("step") - step_offset).join(
        collected, on=["step", "prompt_id", "sample_id"], suffix="_collect")
    assert len(got) == len(collected)  # same prompt_id / sample_id keys
    same = got.filter(pl.col("token_id") == pl.col("token_id_collect"))
    # A random tiny model sometimes samples <pad>/<unk> mid-response; the decoded text cannot bring those back.
    assert len(same) >= len(collected) // 3, f"only {len(same)} of {len(collected)} responses re-encode"
    for r in got.filter(pl.col("token_id") != pl.col("token_id_collect")).iter_rows(named=True):
        assert {0, 2} & set(r["token_id_collect"]), r  # ...and only those differ
    for r in same.iter_rows(named=True):
        for k in ("logprob", "entropy", "sum_p2"):
            np.testing.assert_allclose(r[k], r[f"{k}_collect"], atol=1e-6, rtol=0)
        assert r["position"] == list(range(len(r["token_id"])))
    by_key = samples.with_columns(pl.col("step") - step_offset).join(
        collected, on=["step", "prompt_id", "sample_id"], suffix="_collect")
    assert by_key["prompt"].to_list() == by_key["prompt_collect"].to_list()
    same_keys = same.select("step", "prompt_id", "sample_id")
    agree = by_key.join(same_keys, on=["step", "prompt_id", "sample_id"])
    assert agree["truncated"].to_list() == agree["truncated_collect"].to_list()
    np.testing.assert_allclose(agree["mean_entropy"], agree["mean_entropy_collect"], atol=1e-6)


def test_verl_dump_rescores_to_collect_statistics(tmp_path, run, capsys):
    ckpts, collected, _ = run
    dump = write_verl(tmp_path / "rollout_data", collected)
    out = tmp_path / "store"
    assert score(ckpts, dump, out, "--max-response-tokens", str(MAX_NEW)) == 0
    printed = capsys.readouterr().out
    assert "scored 2 step(s) of verl rollouts" in printed and "11<-10, 21<-20" in printed
    assert_matches_collect(out, collected, 1, "verl")
    manifest = entropy_lens.open(out).manifest
    assert manifest["kind"] == "score"
    assert manifest["info"]["scored_by"] == {"11": 10, "21": 20}
    samples = entropy_lens.open(out).samples.collect().sort("step", "prompt_id", "sample_id")
    assert samples["reward"].to_list() == collected["reward"].to_list()  # the stored reward is kept


@pytest.mark.parametrize("messages", [False, True], ids=["text", "messages"])
def test_trl_completions_rescore_to_collect_statistics(tmp_path, run, messages, capsys):
    ckpts, collected, _ = run
    output_dir = write_trl(tmp_path / "trl_out", collected, messages=messages)
    out = tmp_path / "store"
    assert score(ckpts, output_dir, out, "--max-response-tokens", str(MAX_NEW)) == 0  # found under completions/
    assert "of trl rollouts" in capsys.readouterr().out
    assert_matches_collect(out, collected, 1, "trl")
    store = entropy_lens.open(out)
    samples = store.samples.collect().sort("step", "prompt_id", "sample_id")
    # The reward is the sum of the reward-function columns; the advantage lands on every token.
    assert samples["reward"].to_list() == [(1.0 if c else 0.0) + 0.5 for c in collected["correct"]]
    adv = store.tokens.filter(pl.col("step") == 11).group_by("prompt_id", "sample_id").agg(
        pl.col("advantage").n_unique().alias("n"), pl.col("advantage").first()).sort("prompt_id", "sample_id").collect()
    assert adv["n"].to_list() == [1] * len(adv)
    np.testing.assert_allclose(adv["advantage"], np.linspace(-1, 1, len(adv)), atol=1e-6)


def test_plain_jsonl_rescores_with_lag_zero(tmp_path, run, capsys):
    ckpts, collected, _ = run
    dump = write_jsonl(tmp_path / "mine" / "rollouts.jsonl", plain_rows(collected))
    out = tmp_path / "store"
    assert score(ckpts, dump, out, "--max-response-tokens", str(MAX_NEW)) == 0
    assert "10<-10, 20<-20" in capsys.readouterr().out
    assert_matches_collect(out, collected, 0, "jsonl")


def test_format_detection(tmp_path, run):
    _, collected, _ = run
    assert detect_format(write_verl(tmp_path / "v", collected)) == "verl"
    assert detect_format(tmp_path / "v" / "11.jsonl") == "verl"
    assert detect_format(write_trl(tmp_path / "t", collected, messages=False)) == "trl"
    assert detect_format(tmp_path / "t" / "completions") == "trl"
    assert detect_format(write_jsonl(tmp_path / "j" / "r.jsonl", plain_rows(collected))) == "jsonl"
    # Named like a verl dump but with other fields: plain JSONL.
    assert detect_format(write_jsonl(tmp_path / "k" / "3.jsonl", plain_rows(collected))) == "jsonl"


def test_unknown_format_and_rule_suggest(tmp_path, run, capsys):
    ckpts, collected, _ = run
    dump = write_verl(tmp_path / "v", collected)
    assert score(ckpts, dump, tmp_path / "s", "--format", "verll") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'verl'" in err
    assert score(ckpts, dump, tmp_path / "s", "--match", "nearst") == 2
    assert "did you mean 'nearest'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_match_rules():
    ckpts = [10, 20, 40]
    assert [MATCH_RULES.get("latest-before")(ckpts, s) for s in (5, 10, 19, 39, 99)] == [None, 10, 10, 20, 40]
    assert [MATCH_RULES.get("nearest")(ckpts, s) for s in (5, 15, 16, 31, 99)] == [10, 10, 20, 40, 40]
    assert [MATCH_RULES.get("exact")(ckpts, s) for s in (10, 11)] == [10, None]


def test_step_without_checkpoint_is_counted(tmp_path, run, capsys):
    ckpts, collected, _ = run
    rows = plain_rows(collected.filter(pl.col("step") == 10))
    early = [dict(r, step=5) for r in rows[:4]]  # no checkpoint at or before step 5
    dump = write_jsonl(tmp_path / "r.jsonl", early + rows)
    out = tmp_path / "store"
    assert score(ckpts, dump, out) == 0
    printed = capsys.readouterr().out
    assert "NOT SCORED: 4 rollout(s) in 1 step(s) [5] have no checkpoint" in printed
    store = entropy_lens.open(out)
    assert store.completed_steps == [10]
    assert store.manifest["info"]["unmatched_steps"] == {"5": 4}
    # verl's lag: rollout step 10 was sampled by checkpoint 9, and there is none at or before it: nothing
    # matches, so the command fails with one line and writes no store.
    dump = write_verl(tmp_path / "v", collected.filter(pl.col("step") == 10).with_columns(step=pl.lit(9)))
    assert score(ckpts, dump, tmp_path / "store2") == 2
    err = capsys.readouterr().err
    assert "no checkpoint scores any rollout: rollout steps [10] (policy step = step - 1)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "store2").exists()
    assert score(ckpts, dump, tmp_path / "store3", "--policy-lag", "0") == 0
    assert "10<-10" in capsys.readouterr().out


def test_malformed_row_names_file_and_line_and_writes_nothing(tmp_path, run, capsys):
    ckpts, collected, _ = run
    dump = write_verl(tmp_path / "v", collected)
    lines = (dump / "21.jsonl").read_text().splitlines()
    lines[1] = '{"input": "Q: 1+1\\n", "output": oops}'
    (dump / "21.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "store"
    assert score(ckpts, dump, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "21.jsonl:2" in err and "not valid JSON" in err and "--skip-bad-rows" in err
    assert not list(out.rglob("*.parquet")) if out.exists() else True

    lines[1] = json.dumps({"input": "Q: 1+1\n", "score": 1.0, "step": 21})  # no output
    (dump / "21.jsonl").write_text("\n".join(lines) + "\n")
    assert score(ckpts, dump, out) == 2
    err = capsys.readouterr().err
    assert "21.jsonl:2" in err and "no 'output' field" in err and "--response-field" in err
    assert not (out / "tokens" / "step=000021").exists()

    assert score(ckpts, dump, out, "--skip-bad-rows") == 0
    printed = capsys.readouterr().out
    assert "skipped 1 malformed row(s): " in printed and "21.jsonl:2 has no 'output' field" in printed
    samples = entropy_lens.open(out).samples.collect()
    assert len(samples.filter(pl.col("step") == 21)) == len(collected.filter(pl.col("step") == 20)) - 1
    assert len(samples.filter(pl.col("step") == 11)) == len(collected.filter(pl.col("step") == 10))


def test_reencode_mismatch_is_reported(tmp_path, run, capsys):
    ckpts, collected, _ = run
    rows = plain_rows(collected.filter(pl.col("step") == 10))
    rows[2]["response"] = "12+7=19\nA: 19 ZZ"  # upper-case letters are not in the vocabulary: <unk>
    rows[4]["prompt"] = "Q: 3+4 \u00e9\n"
    dump = write_jsonl(tmp_path / "r.jsonl", rows)
    assert score(ckpts, dump, tmp_path / "store") == 0
    printed = capsys.readouterr().out
    assert "2 row(s) do not re-encode to the same text" in printed
    assert f"{dump}:3, {dump}:5" in printed


def test_resume_skips_complete_steps_and_picks_up_new_ones(tmp_path, run, capsys):
    ckpts, collected, _ = run
    dump = write_verl(tmp_path / "v", collected)
    later = (dump / "21.jsonl").rename(tmp_path / "21.jsonl")  # the trainer has not dumped step 21 yet
    out = tmp_path / "store"
    assert score(ckpts, dump, out) == 0
    first = (out / "tokens" / "step=000011" / "part-00000.parquet").read_bytes()
    capsys.readouterr()
    assert score(ckpts, dump, out) == 0
    assert "scored 0 step(s)" in capsys.readouterr().out and entropy_lens.open(out).completed_steps == [11]
    later.rename(dump / "21.jsonl")
    assert score(ckpts, dump, out) == 0
    printed = capsys.readouterr().out
    assert "scored 1 step(s)" in printed and "skipped 1 already complete" in printed
    assert entropy_lens.open(out).completed_steps == [11, 21]
    assert (out / "tokens" / "step=000011" / "part-00000.parquet").read_bytes() == first
    assert entropy_lens.open(out).manifest["info"]["scored_by"] == {"11": 10, "21": 20}
    assert score(ckpts, dump, out, "--match", "nearest") == 2  # other settings: refused, not mixed
    assert "choose a new --out" in capsys.readouterr().err


def test_math_verify_disagreements_are_counted(tmp_path, run, capsys):
    ckpts, _, _ = run
    rows = [  # (response, gold, stored reward): Math-Verify's verdict vs reward > 0
        ("so \\boxed{2}", "2", 1.0),  # correct, agrees
        ("\\boxed{3}", "2", 1.0),  # wrong, but rewarded: disagrees
        ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", -1.0),  # equivalent, but not rewarded: disagrees
        ("no box", "2", -1.0),  # no answer, agrees
    ]
    dump = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "Q: 1+1\n", "response": resp, "answer": gold,
                                               "reward": rew, "step": 10} for resp, gold, rew in rows]
                       + [{"prompt": "Q: 2+2\n", "response": "A: 4", "reward": 1.0, "step": 10}])  # no answer
    assert score(ckpts, dump, tmp_path / "store") == 0
    printed = capsys.readouterr().out
    assert f"Math-Verify graded 4 response(s) against their answers; 2 disagree with the stored reward " \
           f"(reward>0 vs correct): {dump}:2, {dump}:3" in printed
    samples = entropy_lens.open(tmp_path / "store").samples.collect().sort("prompt_id", "sample_id")
    assert samples["correct"].to_list() == [True, False, True, False, True]  # ungraded row: reward > 0
    assert samples["reward"].to_list() == [1.0, 1.0, -1.0, -1.0, 1.0]
    assert samples["answer"].to_list() == ["2", "3", "\\frac{2}{4}", None, None]
    assert samples["text"][2] == "\\boxed{\\frac{2}{4}}"  # the stored text, not its <unk>-riddled re-decode
    assert samples["prompt_id"].to_list() == [0, 0, 0, 0, 1] and samples["sample_id"].to_list() == [0, 1, 2, 3, 0]


def test_text_prompts_missing_the_templates_special_tokens_are_reported(tmp_path, capsys):
    """verl decodes `input` with skip_special_tokens: a template's markers are gone from the text."""
    from entropy_lens.models import build_char_tokenizer
    from entropy_lens.tasks.arith import ALPHABET
    from tests.conftest import make_tiny

    tok = build_char_tokenizer(ALPHABET)
    tok.chat_template = "{% for m in messages %}<unk>{{ m['content'] }}{% endfor %}"
    make_tiny(tok, seed=0).save_pretrained(tmp_path / "ckpts" / "step_0")
    tok.save_pretrained(tmp_path / "ckpts")
    dump = write_jsonl(tmp_path / "r.jsonl", [
        {"prompt": "Q: 1+1\n", "response": "A: 2", "reward": 1.0, "step": 0},  # the markers were stripped
        {"prompt": [{"role": "user", "content": "Q: 1+1\n"}], "response": "A: 3", "reward": -1.0, "step": 0},
        {"prompt": "<unk>Q: 1+1\n", "response": "A: 2", "reward": 1.0, "step": 0},  # kept them
    ])
    assert score(tmp_path / "ckpts", dump, tmp_path / "store") == 0
    printed = capsys.readouterr().out
    assert "1 text prompt(s) lack the chat template's special tokens" in printed and f"{dump}:1" in printed
    samples = entropy_lens.open(tmp_path / "store").samples.collect()
    # A message list is rendered through the template; the same rendered text is the same prompt.
    assert samples["prompt"].to_list() == ["Q: 1+1\n", "<unk>Q: 1+1\n", "<unk>Q: 1+1\n"]
    assert samples["prompt_id"].to_list() == [0, 1, 1] and samples["sample_id"].to_list() == [0, 0, 1]
