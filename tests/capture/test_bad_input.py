"""Bad input: one clear line naming the input and the fix, exit code 2, and no partial partition."""

from __future__ import annotations

import json
import shutil

import pytest

from entropy_lens.cli import main
from tests.capture.test_sweep import FAST


def run(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_clear_line(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def assert_no_partition(out) -> None:
    assert not list(out.rglob("*.parquet")) if out.exists() else True


def test_missing_field(tmp_path, tiny_run, capsys):
    data = tmp_path / "eval.jsonl"
    data.write_text(json.dumps({"prompt": "1+1", "answer": "2"}) + "\n" + json.dumps({"prompt": "2+2"}) + "\n")
    out = tmp_path / "store"
    code, err = run(capsys, "collect", str(tiny_run), "--dataset", str(data), "--out", str(out), *FAST)
    assert_one_clear_line(code, err, "eval.jsonl", "line 2", "'answer'", "--answer-field")
    assert_no_partition(out)


def test_malformed_json_line(tmp_path, tiny_run, capsys):
    data = tmp_path / "eval.jsonl"
    data.write_text('{"prompt": "1+1", "answer": "2"}\n{"prompt": oops}\n')
    code, err = run(capsys, "collect", str(tiny_run), "--dataset", str(data), "--out", str(tmp_path / "s"), *FAST)
    assert_one_clear_line(code, err, "eval.jsonl:2", "not valid JSON")


def test_renamed_fields_are_accepted(tmp_path, tiny_run, capsys):
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i}+1", "solution": str(i + 1)}) + "\n" for i in range(2)))
    code = main(["collect", str(tiny_run), "--dataset", str(data), "--out", str(tmp_path / "s"), *FAST,
                 "--steps", "0", "--prompt-field", "question", "--answer-field", "solution"])
    assert code == 0


def test_unreadable_checkpoint(tmp_path, tiny_run, capsys):
    broken = tmp_path / "ckpts"
    shutil.copytree(tiny_run, broken)
    (broken / "step_10" / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "store"
    code, err = run(capsys, "collect", str(broken), "--dataset", "arith", "--out", str(out), *FAST)
    assert_one_clear_line(code, err, "step_10", "unreadable checkpoint")
    # Step 0 finished before the broken checkpoint was reached and is complete; nothing of step 10 exists.
    assert not (out / "tokens" / "step=000010").exists() and not (out / "samples" / "step=000010").exists()
    assert not list(out.rglob("*.tmp-*"))


def test_empty_folder_lists_what_was_looked_for(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run(capsys, "collect", str(tmp_path / "empty"), "--out", str(tmp_path / "s"))
    assert_one_clear_line(code, err, "no checkpoints found", "checkpoint-N", "global_step_N", "step_N")
    assert not (tmp_path / "s").exists()


def test_unknown_task_suggests(tmp_path, tiny_run, capsys):
    code, err = run(capsys, "collect", str(tiny_run), "--dataset", "arithh", "--out", str(tmp_path / "s"))
    assert_one_clear_line(code, err, "unknown task 'arithh'", "did you mean 'arith'")
    assert not (tmp_path / "s").exists()


def test_unknown_schema_version(tmp_path, tiny_run, capsys):
    out = tmp_path / "store"
    assert main(["collect", str(tiny_run), "--out", str(out), *FAST, "--steps", "0"]) == 0
    manifest = json.loads((out / "lens.json").read_text())
    manifest["schema_version"] = 99
    (out / "lens.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    code, err = run(capsys, "validate", str(out))
    assert_one_clear_line(code, err, "schema version 99", "reads versions 1 to 2")
    code, err = run(capsys, "collect", str(tiny_run), "--out", str(out), *FAST)
    assert_one_clear_line(code, err, "schema version 99")


@pytest.mark.parametrize("flag,value,needle", [("--steps", "a:b", "START:STOP:STEP"),
                                               ("--steps", "500", "selects none"),
                                               ("--temperature", "0", "must be > 0"),
                                               ("--backend", "hff", "did you mean 'hf'")])
def test_bad_flags(tmp_path, tiny_run, capsys, flag, value, needle):
    code, err = run(capsys, "collect", str(tiny_run), "--out", str(tmp_path / "s"), *FAST, flag, value)
    assert_one_clear_line(code, err, needle)
