"""``collect --backend ray``: a Ray Data sweep on a local 2-CPU Ray instance writes the hf backend's store."""

from __future__ import annotations

import json

import pytest

from tests.capture.test_sweep import collect

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'entropy-lens[ray]')")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def _same_store(a, b):
    files = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    assert any(str(f).startswith("updates/") for f in files) and (a / "vocab.parquet").exists()
    for f in files:  # same rows, same order, same bytes
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    ma, mb = (json.loads((d / "lens.json").read_text()) for d in (a, b))
    assert ma["settings"] == mb["settings"] and ma["completed"] == mb["completed"]


def test_ray_sweep_writes_the_hf_store_and_resumes_it(tmp_path, tiny_run, local_ray, capsys):
    hf, rs, resumed = tmp_path / "hf", tmp_path / "ray", tmp_path / "resumed"
    assert collect(tiny_run, hf) == 0
    # 3 prompts × 2 samples in batches of 4: 2 shards per step, 3 steps, updates for steps 0 and 10
    assert collect(tiny_run, rs, "--backend", "ray", "--workers", "2") == 0
    assert "collected 3 step(s) [0, 10, 20]" in capsys.readouterr().out
    _same_store(hf, rs)
    assert json.loads((rs / "lens.json").read_text())["info"]["executor"] == "ray (2 workers)"

    # An hf sweep of step 0 only, finished by ray: step 0 is kept, its updates come from the stored tokens.
    assert collect(tiny_run, resumed, "--steps", "0:0") == 0
    before = (resumed / "tokens/step=000000/part-00000.parquet").stat().st_mtime_ns
    capsys.readouterr()
    assert collect(tiny_run, resumed, "--backend", "ray") == 0
    out = capsys.readouterr().out
    assert "collected 2 step(s) [10, 20]" in out and "skipped 1" in out
    assert (resumed / "tokens/step=000000/part-00000.parquet").stat().st_mtime_ns == before
    _same_store(hf, resumed)

    assert collect(tiny_run, resumed, "--backend", "ray") == 0  # nothing left: Ray has nothing to run
    assert "collected 0 step(s)" in capsys.readouterr().out


def test_ray_backend_errors_are_one_line(tmp_path, tiny_run, local_ray, capsys):
    assert collect(tiny_run, tmp_path / "s", "--backend", "ray", "--workers", "0") == 2
    assert "--workers 0" in capsys.readouterr().err
