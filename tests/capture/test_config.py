"""The capture commands' configs, the registries of samplers and executors, and the manifest's sampling record."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from entropy_lens.capture.backends import BACKENDS, EXECUTORS, SAMPLERS, batch_sampler_name
from entropy_lens.capture.config import CollectConfig, InterveneConfig, SamplingRecord, ScoreConfig
from entropy_lens.errors import UserError


def test_config_backends_and_rollouts_import_no_torch():
    code = (
        "import sys\n"
        "import entropy_lens.capture.config, entropy_lens.capture.backends, entropy_lens.capture.rollouts\n"
        "import entropy_lens.capture.cli\n"
        "from entropy_lens.capture.backends import BACKENDS, EXECUTORS, SAMPLERS\n"
        "names = BACKENDS.names(), SAMPLERS.names(), EXECUTORS.names()\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print(names)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(['hf', 'ray', 'static', 'vllm'], ['hf', 'static', 'vllm'], ['local', 'ray'])"


def test_shared_fields_are_defined_once():
    by_name = {c: {f.name: f for f in dataclasses.fields(c)} for c in (CollectConfig, ScoreConfig, InterveneConfig)}
    for name in ("device", "temperature", "batch_size"):
        assert by_name[CollectConfig][name].metadata is by_name[ScoreConfig][name].metadata
    assert by_name[CollectConfig]["device"].metadata is by_name[InterveneConfig]["device"].metadata
    assert by_name[CollectConfig]["seed"].metadata is by_name[InterveneConfig]["seed"].metadata
    # the command's own positional argument stays first
    assert [next(iter(f)) for f in by_name.values()] == ["checkpoints", "checkpoints", "store"]
    assert CollectConfig("ckpts").batch_size == 64 and InterveneConfig("s").batch_size == 256
    assert InterveneConfig("s").temperature is None  # the store's


def test_backend_names_map_to_an_executor_and_a_sampler():
    assert {n: (BACKENDS.get(n).executor, BACKENDS.get(n).sampler) for n in BACKENDS} == \
        {"hf": ("local", "hf"), "vllm": ("local", "vllm"), "ray": ("ray", "static"), "static": ("local", "static")}
    for n in BACKENDS:
        assert BACKENDS.get(n).executor in EXECUTORS and BACKENDS.get(n).sampler in SAMPLERS
    assert batch_sampler_name("vllm") == "vllm"
    with pytest.raises(UserError, match="runs whole sweeps"):
        batch_sampler_name("ray")
    with pytest.raises(UserError, match="did you mean 'hf'"):
        batch_sampler_name("hff")


def test_sampling_record_round_trips_and_reads_stores_written_before_it():
    rec = SamplingRecord(0.7, 0.95, 64, False)
    assert SamplingRecord.from_settings({"sampling": rec.to_settings(), "temperature": 9.0}) == rec
    collect_v0 = {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 64, "chat_template": False}
    assert SamplingRecord.from_settings(collect_v0) == rec
    score_v0 = {"temperature": 1.0, "max_response_tokens": 12, "chat_template": False}
    assert SamplingRecord.from_settings(score_v0) == SamplingRecord(1.0, 1.0, 12, False)
    train_v0 = {"temperature": 1.0, "max_new_tokens": 64}
    assert SamplingRecord.from_settings(train_v0) == SamplingRecord(1.0, 1.0, 64, True)


def test_pad_sequences_left_and_right():
    from entropy_lens.capture.padding import pad_sequences

    ids, mask = pad_sequences([[5, 6, 7], [8]], 0, "left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_sequences([[5, 6, 7], [8], []], 9, "right")
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9], [9, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert str(ids.dtype) == "torch.int64" and str(mask.dtype) == "torch.int64"
    with pytest.raises(ValueError, match="side"):
        pad_sequences([[1]], 0, "middle")
