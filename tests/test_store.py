from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest

import entropy_lens
from entropy_lens.errors import StoreLockedError, UserError
from entropy_lens.store import SCHEMA_VERSION, SCHEMAS, StoreWriter, partition_path


def tokens(step, n=3):
    return dict(step=[step] * n, prompt_id=[0] * n, sample_id=[0] * n, position=list(range(n))[::-1],
                rel_position=[0.0] * n, token_id=[1] * n, logprob=[-1.0] * n, entropy=[0.5] * n, sum_p2=[0.5] * n)


def updates(step, positions):
    n = len(positions)
    return dict(step=[step] * n, next_step=[step + 1] * n, prompt_id=[0] * n, sample_id=[0] * n,
                position=positions, logprob_next=[-0.1 * (p + 1) for p in positions])


def test_rows_sorted_schema_version_in_file_metadata(tmp_path):
    with StoreWriter(tmp_path, kind="sweep", settings={}) as w:
        w.write_step(5, tokens=tokens(5))
    path = partition_path(tmp_path, "tokens", 5)
    assert pq.read_schema(path).metadata[b"entropy_lens.schema_version"] == str(SCHEMA_VERSION).encode()
    assert entropy_lens.open(tmp_path).tokens.collect()["position"].to_list() == [0, 1, 2]


def test_readers_see_only_listed_partitions(tmp_path):
    with StoreWriter(tmp_path, kind="sweep", settings={}) as w:
        w.write_step(0, tokens=tokens(0))
    # A partition file left by a killed writer, never listed in the manifest:
    stray = partition_path(tmp_path, "tokens", 7)
    stray.parent.mkdir(parents=True)
    stray.write_bytes(partition_path(tmp_path, "tokens", 0).read_bytes())
    assert entropy_lens.open(tmp_path).tokens.collect()["step"].unique().to_list() == [0]


def test_one_writer_at_a_time(tmp_path):
    with StoreWriter(tmp_path, kind="sweep", settings={}):
        with pytest.raises(StoreLockedError, match="another entropy-lens process"):
            StoreWriter(tmp_path, kind="sweep", settings={}).__enter__()
    with StoreWriter(tmp_path, kind="sweep", settings={}):  # released on exit
        pass


def test_settings_mismatch_refused(tmp_path):
    with StoreWriter(tmp_path, kind="sweep", settings={"temperature": 1.0}):
        pass
    with pytest.raises(UserError, match="temperature: 1.0 before, 0.6 now"):
        StoreWriter(tmp_path, kind="sweep", settings={"temperature": 0.6}).__enter__()


def test_not_a_store_and_newer_schema(tmp_path):
    with pytest.raises(UserError, match="not an entropy-lens store"):
        entropy_lens.open(tmp_path)
    (tmp_path / "lens.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(UserError, match="is not understood.*reads versions 1 to 2"):
        entropy_lens.open(tmp_path)
    with pytest.raises(UserError, match="is not understood"):  # nor written to
        StoreWriter(tmp_path, kind="sweep", settings={}).__enter__()


def write_v1_store(root):
    """A store as entropy-lens wrote it at schema 1: the v1 tables (no sum_p2_logp, varentropy, entropy_next),
    version 1 in every file's metadata and in the manifest."""
    import pyarrow as pa

    from entropy_lens.store import atomic_write_parquet, to_arrow

    meta = {b"entropy_lens.schema_version": b"1"}
    added = {"tokens": {"sum_p2_logp", "varentropy"}, "updates": {"entropy_next"}}
    for step in (0, 1):
        for name, cols in (("tokens", tokens(step, 4)), ("updates", updates(step, [0, 1, 2, 3]))):
            t = to_arrow(name, cols)
            old = pa.schema([f for f in SCHEMAS[name] if f.name not in added[name]], metadata=meta)
            atomic_write_parquet(t.select(old.names).cast(old), partition_path(root, name, step))
    root.joinpath("lens.json").write_text(json.dumps({
        "schema_version": 1, "kind": "sweep", "toolkit_version": "0.1.0", "settings": {},
        "completed": {"tokens": [0, 1], "samples": [], "updates": [0, 1]}}))
    return root


def test_a_schema_1_store_opens_with_the_new_columns_null(tmp_path):
    root = write_v1_store(tmp_path / "v1")
    assert "varentropy" not in pq.read_schema(partition_path(root, "tokens", 0)).names  # really the old layout
    store = entropy_lens.open(root)
    frames = {"tokens": store.tokens.collect(), "updates": store.updates.collect(),
              "tokens (partitions)": store.partitions("tokens").scan().collect(),
              "tokens_with_updates": store.tokens_with_updates().collect()}
    for name, df in frames.items():
        assert df.height == 8, name
        for col in ("sum_p2_logp", "varentropy", "entropy_next"):
            if col in df.columns:
                assert df.schema[col] == pl.Float32 and df[col].null_count() == df.height, (name, col)
    assert frames["tokens"].columns == SCHEMAS["tokens"].names
    assert frames["updates"].columns == SCHEMAS["updates"].names
    assert "entropy_next" in frames["tokens_with_updates"].columns
    assert frames["tokens"]["logprob"].to_list() == [-1.0] * 8  # the old columns read as written
    # step-wise readers (one file a step) fill the same nulls
    from entropy_lens.store import StepPairs

    pairs = StepPairs(store.partitions("tokens"), store.partitions("updates"), ("logprob_next", "entropy_next"))
    one = pairs.frame(1, ["position", "varentropy"])
    assert one["varentropy"].null_count() == one["entropy_next"].null_count() == 4


def test_a_schema_1_store_is_not_appended_to(tmp_path):
    root = write_v1_store(tmp_path / "v1")
    before = (root / "lens.json").read_text()
    with pytest.raises(UserError, match=r"written at store schema 1 \(without sum_p2_logp, varentropy, "
                                         r"entropy_next\).*choose a new --out") as e:
        StoreWriter(root, kind="sweep", settings={}).__enter__()
    assert "\n" not in str(e.value) and str(root) in str(e.value)
    assert (root / "lens.json").read_text() == before
    with pytest.raises(UserError, match="written at store schema 1"):  # the refusal released the lock
        StoreWriter(root, kind="sweep", settings={}).__enter__()


def test_new_columns_round_trip(tmp_path):
    with StoreWriter(tmp_path, kind="sweep", settings={}) as w:
        w.write_step(0, tokens={**tokens(0), "sum_p2_logp": [-0.3] * 3, "varentropy": [0.2] * 3},
                     updates={**updates(0, [0, 1, 2]), "entropy_next": [0.4] * 3})
    store = entropy_lens.open(tmp_path)
    assert store.manifest["schema_version"] == SCHEMA_VERSION == 2
    t, u = store.tokens.collect(), store.updates.collect()
    assert t["varentropy"].to_list() == pytest.approx([0.2] * 3) and t["sum_p2_logp"].null_count() == 0
    assert u["entropy_next"].to_list() == pytest.approx([0.4] * 3)
    assert store.tokens_with_updates().collect()["entropy_next"].null_count() == 0


def test_empty_store_has_typed_empty_frames(tmp_path):
    with StoreWriter(tmp_path, kind="sweep", settings={}):
        pass
    store = entropy_lens.open(tmp_path)
    assert store.tokens.collect().schema["entropy"] == pl.Float32
    assert store.steps is None


def test_unknown_or_missing_columns_are_bugs(tmp_path):
    with StoreWriter(tmp_path, kind="sweep", settings={}) as w:
        with pytest.raises(ValueError, match="unknown columns"):
            w.write_step(0, tokens={**tokens(0), "oops": [1, 2, 3]})
        t = tokens(0)
        del t["entropy"]
        with pytest.raises(ValueError, match="missing required column 'entropy'"):
            w.write_step(0, tokens=t)


def test_tokens_with_updates_view_pairs_rows_and_joins_misaligned_steps(tmp_path):
    with StoreWriter(tmp_path, kind="train", settings={}) as w:
        w.write_step(0, tokens=tokens(0, 4), updates=updates(0, [0, 1, 2, 3]))  # aligned: paired row for row
        w.write_step(1, tokens=tokens(1, 4), updates=updates(1, [0, 2, 3]))  # a row missing: joined
        w.write_step(2, tokens=tokens(2, 4))  # no updates: left out, as by the join
    store = entropy_lens.open(tmp_path)
    view = store.tokens_with_updates().collect()
    want = store.tokens.join(store.updates.select("step", "prompt_id", "sample_id", "position", "next_step",
                                                  "logprob_next", "entropy_next"), on=["step", "prompt_id", "sample_id", "position"], how="inner").collect()
    key = ["step", "position"]
    assert view.columns == want.columns
    assert view.sort(key).equals(want.sort(key))
    assert view["step"].to_list().count(1) == 3 and 2 not in view["step"].to_list()


def test_partitions_are_the_listed_step_files_and_pair_like_the_frames(tmp_path):
    from entropy_lens.store import StepPairs, step_tables

    with StoreWriter(tmp_path, kind="train", settings={}) as w:
        w.write_step(0, tokens=tokens(0, 4), updates=updates(0, [0, 1, 2, 3]))
        w.write_step(1, tokens=tokens(1, 4), updates=updates(1, [0, 2, 3]))  # a row missing: joined
        w.write_step(2, tokens=tokens(2, 4))
    store = entropy_lens.open(tmp_path)
    parts = store.partitions("tokens")
    assert parts.paths == {s: partition_path(tmp_path, "tokens", s) for s in (0, 1, 2)}
    assert parts.scan().collect().equals(store.tokens.collect())
    assert store.partitions("updates").paths.keys() == {0, 1}
    with pytest.raises(ValueError, match="not a partitioned table"):
        store.partitions("vocab")
    by_file, by_filter = step_tables(parts, store.tokens)
    assert by_file.steps == by_filter.steps == [0, 1, 2]
    assert by_file.num_rows(1) == 4 and by_filter.num_rows(1) is None
    assert by_file.scan(1).collect().equals(by_filter.scan(1).collect())
    from_files = StepPairs(parts, store.partitions("updates"))
    from_frames = StepPairs(store.tokens, store.updates)
    assert from_files.steps == from_frames.steps == [0, 1]
    for s in (0, 1):
        a, b = from_files.frame(s, ["position", "logprob"]), from_frames.frame(s, ["position", "logprob"])
        assert a.equals(b) and a.height == (4 if s == 0 else 3)
    assert from_files._aligned == from_frames._aligned == {0: True, 1: False}
