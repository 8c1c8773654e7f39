from __future__ import annotations

import pytest

from entropy_lens.checkpoints import discover, parse_steps, select
from entropy_lens.errors import UserError


def fake_model(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.mark.parametrize("make", [
    lambda r, s: r / f"checkpoint-{s}",
    lambda r, s: r / f"global_step_{s}" / "actor" / "huggingface",
    lambda r, s: r / f"step_{s}",
    lambda r, s: r / f"step-{s}",
    lambda r, s: r / "checkpoints" / f"step_{s}",
])
def test_layouts_are_found_and_ordered_by_step_not_name(tmp_path, make):
    for s in (100, 20, 3):
        fake_model(make(tmp_path, s))
    assert [c.step for c in discover(tmp_path)] == [3, 20, 100]


def test_single_model_folder(tmp_path):
    fake_model(tmp_path / "m")
    assert [(c.step, c.path.name) for c in discover(tmp_path / "m")] == [(0, "m")]


def test_checkpoint_dir_without_weights_is_named(tmp_path):
    (tmp_path / "global_step_5" / "actor").mkdir(parents=True)
    with pytest.raises(UserError, match="global_step_5.*model merger"):
        discover(tmp_path)


def test_duplicate_steps_refused(tmp_path):
    fake_model(tmp_path / "step_5")
    fake_model(tmp_path / "checkpoint-5")
    with pytest.raises(UserError, match="two checkpoints for step 5"):
        discover(tmp_path)


@pytest.mark.parametrize("spec,want", [("0:40:20", [0, 20, 40]), ("20:", [20, 30, 40]), (":20", [0, 10, 20]),
                                       ("::20", [0, 20, 40]), ("30", [30])])
def test_steps_filter(tmp_path, spec, want):
    for s in (0, 10, 20, 30, 40):
        fake_model(tmp_path / f"step_{s}")
    assert [c.step for c in select(discover(tmp_path), parse_steps(spec))] == want


@pytest.mark.parametrize("spec", ["a:b", "1:2:3:4", "-1:5", "eval('x')"])
def test_bad_steps_spec(spec):
    with pytest.raises(UserError, match="START:STOP:STEP"):
        parse_steps(spec)
