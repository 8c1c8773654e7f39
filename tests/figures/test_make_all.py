"""make_all's scheduler: a stage starts only after the stages it reads, at most ``jobs`` at a time."""

from __future__ import annotations

import sys

import pytest

from figures.make_all import Stage, collect_stages, drawing_stages, run_stages, training_stages
from figures.figlib import seed_runs


def stamp(path, name):
    """A stage command that appends '<name> start' and '<name> end' to ``path``."""
    code = (f"import time; f = open({str(path)!r}, 'a'); f.write('{name} start\\n'); f.flush(); "
            f"time.sleep(0.3); f.write('{name} end\\n')")
    return lambda: [sys.executable, "-c", code]


def test_stages_wait_for_what_they_read(tmp_path):
    log = tmp_path / "order.txt"
    stages = [Stage("a", stamp(log, "a")), Stage("b", stamp(log, "b"), ("a",)), Stage("c", stamp(log, "c"), ("a",)),
              Stage("d", stamp(log, "d"), ("b", "c")), Stage("e", lambda: None, ("d",))]
    timings = run_stages(stages, tmp_path, jobs=2, t0=0.0)
    lines = log.read_text().splitlines()
    at = {ln: i for i, ln in enumerate(lines)}
    assert at["a end"] < at["b start"] and at["a end"] < at["c start"]
    assert max(at["b end"], at["c end"]) < at["d start"]
    assert at["b start"] < at["c end"] and at["c start"] < at["b end"]  # b and c ran side by side
    assert {t.name: t.skipped for t in timings} == {"a": False, "b": False, "c": False, "d": False, "e": True}


def test_unknown_dependency_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown stages"):
        run_stages([Stage("a", lambda: None, ("nope",))], tmp_path, jobs=1, t0=0.0)


def test_a_failing_stage_stops_the_run_with_its_log(tmp_path):
    with pytest.raises(SystemExit, match="boom failed"):
        run_stages([Stage("boom", lambda: [sys.executable, "-c", "raise SystemExit(3)"])], tmp_path, jobs=1, t0=0.0)


def test_the_pipeline_graph(tmp_path):
    sched = ["--steps", "90", "--sft-steps", "10", "--save-every", "10", "--eval-every", "10"]
    methods = ["ppl", "ppl-high", "position", "position-begin"]
    stages = training_stages(tmp_path, 3, sched) + collect_stages(tmp_path, 3, methods)
    after = {s.name: set(s.after) for s in stages}
    assert after["sft"] == set() and after["baseline"] == {"sft"}
    for name in seed_runs(3)[1:] + ["ppl", "ppl-high"]:
        assert after[name] == {"sft"}, name
    assert after["position"] == after["position-begin"] == {"baseline"}  # they branch at seed 0's boundary
    for name in seed_runs(3):
        assert after[f"sweep-{name}"] == {name} and after[f"intervene-{name}"] == {f"sweep-{name}"}
    seed1 = next(s for s in stages if s.name == "baseline-seed1").command()
    assert seed1[seed1.index("--seed") + 1] == "1" and seed1[seed1.index("--from") + 1].endswith("baseline/checkpoints/step_0")
    sft = next(s for s in stages if s.name == "sft").command()
    assert sft[sft.index("--steps", sft.index("--sft-steps")) + 1] == "0"


def test_figures_and_findings_run_side_by_side_after_everything(tmp_path):
    sched = ["--steps", "90", "--sft-steps", "10", "--save-every", "10", "--eval-every", "10"]
    stages = training_stages(tmp_path, 3, sched) + collect_stages(tmp_path, 3, ["ppl"])
    drawing = drawing_stages(tmp_path, tmp_path / "out", tmp_path / "FINDINGS.md", [s.name for s in stages])
    assert [d.name for d in drawing] == ["figures", "findings"]
    for d in drawing:
        assert set(d.after) == {s.name for s in stages}  # every run, sweep, intervention and bench collect
    figures, findings = (d.command() for d in drawing)
    assert figures[1:3] == ["-m", "figures.draw_all"] and figures[figures.index("--out") + 1] == str(tmp_path / "out")
    assert findings[1:3] == ["-m", "figures.findings"] and findings[findings.index("--out") + 1] == str(tmp_path / "FINDINGS.md")
