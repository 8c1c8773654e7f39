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
    assert parts.paths == {s: (partition_path(tmp_path, "tokens", s),) for s in (0, 1, 2)}
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


# ------------------------------------------------------------------------------------ several ranks, one step
def rank_rows(step, prompt_ids, n=2):
    """Tokens and samples rows of the responses (p, 0) for p in ``prompt_ids``, ``n`` tokens each; the log-prob
    of token t of prompt p is −(p + t/10), so every row is recognisable."""
    k = len(prompt_ids)
    tok = dict(step=[step] * (k * n), prompt_id=[p for p in prompt_ids for _ in range(n)], sample_id=[0] * (k * n),
               position=[t for _ in prompt_ids for t in range(n)],
               rel_position=[t / n for _ in prompt_ids for t in range(n)],
               token_id=[1] * (k * n), logprob=[-(p + t / 10) for p in prompt_ids for t in range(n)],
               entropy=[0.5] * (k * n), sum_p2=[0.5] * (k * n))
    smp = dict(step=[step] * k, prompt_id=list(prompt_ids), sample_id=[0] * k, length=[n] * k, truncated=[False] * k,
               prompt=["q"] * k, text=["a"] * k, answer=[None] * k, gold=[""] * k, format_ok=[True] * k,
               correct=[True] * k, reward=[1.0] * k, logppl=[0.1] * k, mean_entropy=[0.5] * k, source=["trl"] * k)
    return tok, smp


def validate(capsys, root):
    from entropy_lens.cli import main

    code = main(["validate", str(root)])
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def test_a_step_written_by_two_ranks_is_listed_by_rank_0_once_both_parts_exist(tmp_path, capsys):
    from entropy_lens.store import part_path, write_parts

    with StoreWriter(tmp_path, kind="train", settings={}) as w:  # rank 0 holds the store
        w.write_step(0, **dict(zip(("tokens", "samples"), rank_rows(0, [0, 1]))))  # a one-part step before it
        t1, s1 = rank_rows(3, [2, 3])
        write_parts(tmp_path, 3, 1, tokens=t1, samples=s1)  # rank 1 first, without the lock
        assert part_path(tmp_path, "tokens", 3, 1).is_file() and entropy_lens.open(tmp_path).completed_steps == [0]
        with pytest.raises(UserError, match=r"step 3 of tokens lacks the part files of ranks \[0\] \(of 2\)") as e:
            w.complete_step(3, ("tokens", "samples"), parts=2)  # rank 0's part is not written yet
        assert "\n" not in str(e.value)
        assert 3 not in json.loads((tmp_path / "lens.json").read_text())["completed"]["tokens"]
        t0, s0 = rank_rows(3, [0, 1])
        write_parts(tmp_path, 3, 0, tokens=t0, samples=s0)
        assert entropy_lens.open(tmp_path).completed_steps == [0]  # both parts there, not listed until rank 0 lists
        w.complete_step(3, ("tokens", "samples"), parts=2)
    manifest = json.loads((tmp_path / "lens.json").read_text())
    assert manifest["parts"] == {"tokens": {"3": 2}, "samples": {"3": 2}}
    store = entropy_lens.open(tmp_path)
    assert store.completed_steps == [0, 3] and store.multi_part_steps("tokens") == {3: 2}
    assert store.partitions("samples").paths[3] == tuple(part_path(tmp_path, "samples", 3, r) for r in (0, 1))
    tok = store.tokens.filter(pl.col("step") == 3).collect()
    assert tok["prompt_id"].to_list() == [0, 0, 1, 1, 2, 2, 3, 3]  # both ranks' rows, rank 0's part first
    assert tok["logprob"].to_list() == pytest.approx([-0.0, -0.1, -1.0, -1.1, -2.0, -2.1, -3.0, -3.1])
    assert store.samples.filter(pl.col("step") == 3).collect()["prompt_id"].to_list() == [0, 1, 2, 3]
    from entropy_lens.store import StepPairs, step_tables

    (by_step,) = step_tables(store.partitions("tokens"))
    assert by_step.num_rows(3) == 8 and by_step.scan(3).collect().equals(tok)
    assert StepPairs(store.partitions("tokens"), store.partitions("tokens").scan().with_columns(
        logprob_next=pl.col("logprob"))).frame(3, ["prompt_id"])["prompt_id"].to_list() == [0, 0, 1, 1, 2, 2, 3, 3]
    code, out, err = validate(capsys, tmp_path)
    assert code == 0 and err == "" and "steps [0, 3]" in out and "12 tokens rows, 6 samples rows" in out
    assert out.endswith("up to 2 part files a step")


def test_validate_reports_a_key_written_by_two_ranks(tmp_path, capsys):
    from entropy_lens.store import write_parts

    with StoreWriter(tmp_path, kind="train", settings={}) as w:
        t0, s0 = rank_rows(5, [0, 1])
        t1, s1 = rank_rows(5, [1, 2])  # prompt 1 (2 tokens, 1 sample) in both parts
        write_parts(tmp_path, 5, 1, tokens=t1, samples=s1)
        write_parts(tmp_path, 5, 0, tokens=t0, samples=s0)
        w.complete_step(5, ("tokens", "samples"), parts=2)
    store = entropy_lens.open(tmp_path)
    dup = store.cross_part_duplicates("tokens")
    assert list(dup) == [5] and dup[5].rows() == [(5, 1, 0, 0), (5, 1, 0, 1)]
    assert store.cross_part_duplicates("samples")[5].rows() == [(5, 1, 0)]
    code, out, err = validate(capsys, tmp_path)
    assert code == 2 and out == "" and "\n" not in err
    assert err.endswith("step 5 of tokens has 2 keys in more than one of its 2 part files (first: step=5, "
                        "prompt_id=1, sample_id=0, position=0): its ranks wrote overlapping rows; re-run that "
                        "training into a new store")


def test_a_step_rewritten_by_one_process_reads_only_its_one_part(tmp_path):
    from entropy_lens.store import part_path, write_parts

    with StoreWriter(tmp_path, kind="train", settings={}) as w:
        for rank, ids in ((0, [0]), (1, [1])):
            write_parts(tmp_path, 2, rank, tokens=rank_rows(2, ids)[0])
        w.complete_step(2, ("tokens",), parts=2)
        w.write_step(2, tokens=rank_rows(2, [0, 1])[0])  # a resumed run on one process rewrites the step
    assert part_path(tmp_path, "tokens", 2, 1).is_file()  # left over by the two-rank run ...
    assert "parts" not in json.loads((tmp_path / "lens.json").read_text())
    store = entropy_lens.open(tmp_path)
    assert store.tokens.collect()["prompt_id"].to_list() == [0, 0, 1, 1]  # ... and not read


def test_a_one_part_store_reads_as_the_plain_scan_of_its_files(tmp_path):
    """One process: every step is the one file part-00000, no ``parts`` in the manifest, and the store's frames
    are the plain scan of the listed files (what the reader returned before steps could have several parts)."""
    with StoreWriter(tmp_path, kind="train", settings={}) as w:
        for step in (0, 1):
            t, smp = rank_rows(step, [0, 1, 2])
            w.write_step(step, tokens=t, samples=smp, updates=updates(step, [0, 1]))
    assert "parts" not in json.loads((tmp_path / "lens.json").read_text())
    assert sorted(p.name for p in tmp_path.rglob("*.parquet")) == ["part-00000.parquet"] * 6
    store = entropy_lens.open(tmp_path)
    for table in ("tokens", "samples", "updates"):
        files = [str(partition_path(tmp_path, table, s)) for s in (0, 1)]
        plain = pl.scan_parquet(files, hive_partitioning=False).collect()
        assert getattr(store, table).collect().equals(plain), table
        assert store.partitions(table).scan().collect().equals(plain), table


def test_sampler_logprob_round_trips_and_reads_null_from_files_without_it(tmp_path):
    import pyarrow as pa

    from entropy_lens.store import atomic_write_parquet, to_arrow

    with StoreWriter(tmp_path, kind="train", settings={}) as w:
        w.write_step(1, tokens={**tokens(1), "sampler_logprob": pa.array([-0.25, None, -2.5], pa.float32())})
        w.write_step(2, tokens=tokens(2))  # a writer without sampler log-probs: nulls
    # step 0 as written before the column existed (same schema version, the file lacks the column)
    old = to_arrow("tokens", tokens(0)).drop_columns(["sampler_logprob"])
    atomic_write_parquet(old, partition_path(tmp_path, "tokens", 0))
    manifest = json.loads((tmp_path / "lens.json").read_text())
    manifest["completed"]["tokens"] = [0, 1, 2]
    (tmp_path / "lens.json").write_text(json.dumps(manifest))
    assert "sampler_logprob" not in pq.read_schema(partition_path(tmp_path, "tokens", 0)).names
    store = entropy_lens.open(tmp_path)
    df = store.tokens.collect()
    assert df.columns == SCHEMAS["tokens"].names and df.schema["sampler_logprob"] == pl.Float32
    by_step = {s: df.filter(pl.col("step") == s)["sampler_logprob"].to_list() for s in (0, 1, 2)}
    # rows sorted by position: the values given at positions 2, 1, 0 read back at 0, 1, 2
    assert by_step == {0: [None] * 3, 1: [-2.5, None, -0.25], 2: [None] * 3}
    from entropy_lens.store import step_tables

    (one,) = step_tables(store.partitions("tokens"))
    assert one.scan(0).collect()["sampler_logprob"].null_count() == 3
    assert df.filter(pl.col("step") == 0).drop("sampler_logprob").equals(pl.read_parquet(
        partition_path(tmp_path, "tokens", 0)))


def test_validate_names_a_listed_file_that_lacks_a_required_column_or_is_gone(tmp_path, capsys):
    from entropy_lens.store import atomic_write_parquet, part_path, to_arrow, write_parts

    with StoreWriter(tmp_path, kind="train", settings={}) as w:
        w.write_step(0, tokens=tokens(0))
        write_parts(tmp_path, 1, 1, tokens=tokens(1))  # rank 1 of step 1; rank 0 of it: below
        write_parts(tmp_path, 1, 0, tokens=tokens(1))
        w.complete_step(1, ("tokens",), parts=2)
    store = entropy_lens.open(tmp_path)
    assert store.files_lacking_columns() == {}
    atomic_write_parquet(to_arrow("tokens", tokens(0)).drop_columns(["entropy", "sampler_logprob"]),
                         partition_path(tmp_path, "tokens", 0))  # sampler_logprob may be absent, entropy not
    part_path(tmp_path, "tokens", 1, 1).unlink()
    assert store.files_lacking_columns() == {partition_path(tmp_path, "tokens", 0): ["entropy"],
                                             part_path(tmp_path, "tokens", 1, 1): SCHEMAS["tokens"].names[:-1]}
    code, out, err = validate(capsys, tmp_path)
    assert code == 2 and "\n" not in err
    assert err.endswith(f"the listed part file {partition_path(tmp_path, 'tokens', 0)} lacks the columns entropy; "
                        "the store is damaged: re-run the step (or the run) into a new store")
    assert validate(capsys, write_v1_store(tmp_path / "v1"))[0] == 0  # a schema-1 store lacks its later columns
