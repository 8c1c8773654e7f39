"""The Parquet store: layout, schemas, the manifest, atomic writes, and readers returning LazyFrames.

Layout (docs/store-schema.md has every column)::

    STORE/
      lens.json                        manifest: schema_version, kind, settings, completed partitions
      tokens/step=000040/part-00000.parquet     (part-00001, ... : one file per rank of a multi-process writer)
      samples/step=000040/part-00000.parquet
      updates/step=000040/part-00000.parquet
      steps.parquet                    per-step scalars (training metrics), optional
      vocab.parquet                    token_id -> decoded token string

Guarantees:

* A file appears under its final name only when complete (written to a temporary name, then renamed).
* A partition counts only once the manifest lists it, and the manifest is itself replaced atomically, so a
  sweep killed at any instant resumes by redoing exactly the unlisted partitions; readers read only listed
  partitions and never see half a step.
* One writer at a time: :class:`StoreWriter` holds an exclusive ``flock`` on ``STORE/.lock``; the kernel
  drops it when the process dies, so a killed sweep never blocks its own resume.
* Several processes (ranks) may write one step: rank r writes ``part-{r:05d}`` of each table with
  :func:`write_parts` (no lock, no manifest), and rank 0, which holds the lock, lists the step with
  ``StoreWriter.complete_step(step, tables, parts=N)`` once every rank has written (after a barrier).  The
  manifest records the part count of such a step (``parts``: table → step → N; absent for one-part steps, so a
  one-process store's manifest is as before); readers read exactly those N files, so the part files of an
  unlisted step, or of ranks beyond N left by an earlier run, are never read.
* The schema version is written into the manifest and into every file's metadata; a reader refuses a store
  from a newer version with one clear message.  Stores of an older version still read: the columns added
  since (:data:`ADDED_COLUMNS`) come back as typed all-null columns, so an analysis that needs them can test
  ``col.null_count() == len(col)`` and say which store it needs.  A writer never appends to an older store (one
  store, one row layout): it refuses with one line naming the store and the fix (a new ``--out``).
* Optional columns (:data:`OPTIONAL_COLUMNS`, e.g. ``tokens.sampler_logprob``) are nullable columns that only
  some writers have values for; they were added without a new schema version, so files written before them
  lack them.  Readers give them back as typed nulls whenever a file lacks them (old files, or a store that mixes
  both), which is why they need no version: every reader frame has every schema column.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from entropy_lens.errors import StoreLockedError, UserError
from entropy_lens.version import __version__

SCHEMA_VERSION = 2
#: Versions a reader opens.  Version 1 lacks the columns of :data:`ADDED_COLUMNS`.
READABLE_VERSIONS = (1, 2)
MANIFEST = "lens.json"
LOCK = ".lock"
_META = {b"entropy_lens.schema_version": str(SCHEMA_VERSION).encode()}
_KEY = ["step", "prompt_id", "sample_id"]


def _schema(*fields: tuple[str, pa.DataType, bool]) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=null) for n, t, null in fields], metadata=_META)


i32, f32, f64, utf8, boolean = pa.int32(), pa.float32(), pa.float64(), pa.string(), pa.bool_()

SCHEMAS: dict[str, pa.Schema] = {
    "tokens": _schema(
        ("step", i32, False), ("prompt_id", i32, False), ("sample_id", i32, False),
        ("position", i32, False), ("rel_position", f32, False), ("token_id", i32, False),
        ("logprob", f32, False), ("entropy", f32, False), ("sum_p2", f32, False),
        ("sum_p2_logp", f32, True), ("varentropy", f32, True),
        ("advantage", f32, True), ("shaped_advantage", f32, True), ("sampler_logprob", f32, True),
    ),
    "samples": _schema(
        ("step", i32, False), ("prompt_id", i32, False), ("sample_id", i32, False),
        ("length", i32, False), ("truncated", boolean, False), ("prompt", utf8, False),
        ("text", utf8, False), ("answer", utf8, True), ("gold", utf8, False),
        ("format_ok", boolean, False), ("correct", boolean, False), ("reward", f32, False),
        ("logppl", f32, False), ("mean_entropy", f32, False), ("source", utf8, False),
    ),
    "updates": _schema(
        ("step", i32, False), ("next_step", i32, False), ("prompt_id", i32, False),
        ("sample_id", i32, False), ("position", i32, False), ("logprob_next", f32, False),
        ("entropy_next", f32, True),
    ),
    "vocab": _schema(("token_id", i32, False), ("token", utf8, False)),
}
PARTITIONED = ("tokens", "samples", "updates")
#: Columns each schema version added (nullable, so that an older store reads with them all null).  Every writer
#: of this version fills them; they are null only in stores written before.
ADDED_COLUMNS: dict[int, dict[str, tuple[str, ...]]] = {
    2: {"tokens": ("sum_p2_logp", "varentropy"), "updates": ("entropy_next",)},
}
#: Nullable columns that only some writers fill (the rest write nulls) and that files written before they existed
#: lack, within the same schema version: readers insert them as typed nulls wherever a file lacks them.
#: ``tokens.sampler_logprob``: the log-prob the rollout's sampler (vLLM) reported for the token.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"tokens": ("sampler_logprob",)}
_SORT = {"tokens": _KEY + ["position"], "samples": _KEY, "updates": _KEY + ["position"], "vocab": ["token_id"]}
ROW_GROUP_SIZE = 1 << 20  # large row groups: 100k-row batches halved zstd write throughput (6.9 → 3.5 M rows/s, measured)


def part_path(root: Path, table: str, step: int, rank: int = 0) -> Path:
    """The file of ``table``'s step ``step`` written by process ``rank`` (0 for a one-process writer)."""
    return Path(root) / table / f"step={step:06d}" / f"part-{rank:05d}.parquet"


def partition_path(root: Path, table: str, step: int) -> Path:
    """The first (rank-0) part file of a step: the whole step when one process wrote it."""
    return part_path(root, table, step, 0)


def to_arrow(table: str, columns: dict[str, Any] | pa.Table) -> pa.Table:
    """Cast ``columns`` (a dict of arrays/lists, or an Arrow table) to the table's schema, sorted by key.

    Missing nullable columns are filled with nulls; missing required ones or extra ones are a bug, so they
    raise ``ValueError`` rather than a ``UserError``.
    """
    schema = SCHEMAS[table]
    if isinstance(columns, pa.Table):
        columns = {n: columns.column(n) for n in columns.column_names}
    extra = set(columns) - set(schema.names)
    if extra:
        raise ValueError(f"{table}: unknown columns {sorted(extra)}")
    n = len(next(iter(columns.values()))) if columns else 0
    arrays = []
    for field in schema:
        if field.name in columns:
            arrays.append(pa.array(columns[field.name], type=field.type) if not isinstance(
                columns[field.name], (pa.Array, pa.ChunkedArray)) else columns[field.name].cast(field.type))
        elif field.nullable:
            arrays.append(pa.nulls(n, type=field.type))
        else:
            raise ValueError(f"{table}: missing required column {field.name!r}")
    out = pa.Table.from_arrays(arrays, schema=schema)
    return out.sort_by([(k, "ascending") for k in _SORT[table]])


def atomic_write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` via a temporary file and ``os.replace``: readers see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_SIZE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parts(root: str | Path, step: int, rank: int, **tables: dict[str, Any] | pa.Table) -> None:
    """Write process ``rank``'s part of step ``step`` of each table given (``tokens=..., samples=...``), each
    file atomically, and list nothing: the step counts once the store's writer (rank 0, holding the lock) lists
    it with :meth:`StoreWriter.complete_step`.  Needs no lock, so the other ranks of a run call it while rank 0
    holds the store; each rank writes only its own files."""
    if not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank must be a non-negative int, got {rank!r}")
    for name, columns in tables.items():
        if name not in PARTITIONED:
            raise ValueError(f"{name} is not a partitioned table")
        atomic_write_parquet(to_arrow(name, columns), part_path(Path(root), name, step, rank))


def step_parts(manifest: dict, table: str, step: int) -> int:
    """How many part files step ``step`` of ``table`` has, from the manifest (1 unless several ranks wrote it)."""
    return int(manifest.get("parts", {}).get(table, {}).get(str(int(step)), 1))


def read_manifest(root: Path) -> dict:
    """Read and check ``root/lens.json``; a missing, unreadable or too-new manifest is a :class:`UserError`."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise UserError(f"{root}: not an entropy-lens store (no {MANIFEST}); point at a folder written by "
                        "`entropy-lens collect`, `score` or `train`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable manifest ({e}); delete the store and re-run") from None
    version = manifest.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise UserError(f"{root}: store schema version {version!r} is not understood by this entropy-lens "
                        f"(which reads versions {READABLE_VERSIONS[0]} to {SCHEMA_VERSION}); use the entropy-lens "
                        "version that wrote it")
    return manifest


def missing_columns(version: int, table: str) -> list[str]:
    """The columns of ``table`` that a store of schema ``version`` lacks (added by later versions)."""
    return [c for v, added in sorted(ADDED_COLUMNS.items()) if v > version for c in added.get(table, ())]


class StoreWriter:
    """Exclusive writer of one store.  Use as a context manager::

        with StoreWriter(out, kind="sweep", settings={...}) as w:
            if not w.is_complete(step):
                w.write_step(step, tokens=..., samples=...)

    ``settings`` (model, dataset fingerprint, sampling parameters) are recorded in the manifest; re-opening
    an existing store with different settings is refused, so a resumed sweep never mixes two experiments.
    """

    def __init__(self, root: str | Path, *, kind: str, settings: dict[str, Any]):
        self.root = Path(root)
        self.kind = kind
        self.settings = json.loads(json.dumps(settings))  # normalise tuples etc. to what JSON gives back
        self._lock_fd: int | None = None

    def __enter__(self) -> "StoreWriter":
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root}: exists and is not a directory; choose another --out")
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(f"{self.root}: another entropy-lens process is writing to this store; "
                                   "wait for it to finish or choose another --out") from None
        self._lock_fd = fd
        try:
            self._load_or_create_manifest()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load_or_create_manifest(self) -> None:
        if (self.root / MANIFEST).exists():
            manifest = read_manifest(self.root)
            version = manifest.get("schema_version")
            if version != SCHEMA_VERSION:
                lacks = ", ".join(c for t in PARTITIONED for c in missing_columns(version, t))
                raise UserError(f"{self.root}: written at store schema {version} (without {lacks}); this "
                                f"entropy-lens writes schema {SCHEMA_VERSION} and does not append to an older "
                                "store: choose a new --out (the old store still reads, with those columns null)")
            old = manifest.get("settings", {})
            if manifest.get("kind") != self.kind or not _same_settings(old, self.settings):
                diff = _settings_diff(manifest.get("settings", {}), self.settings)
                raise UserError(f"{self.root}: this store was written by a different {manifest.get('kind')} "
                                f"({diff}); choose a new --out or repeat the original settings")
            manifest["settings"] = self.settings  # records what an older toolkit's manifest lacked
            self.manifest = manifest
        else:
            self.manifest = {"schema_version": SCHEMA_VERSION, "kind": self.kind, "toolkit_version": __version__,
                             "settings": self.settings, "completed": {t: [] for t in PARTITIONED}}
            self._save_manifest()

    def _save_manifest(self) -> None:
        atomic_write_text(json.dumps(self.manifest, indent=2, sort_keys=True) + "\n", self.root / MANIFEST)

    def is_complete(self, step: int, tables: Iterable[str] = ("tokens", "samples")) -> bool:
        return all(step in self.manifest["completed"][t] for t in tables)

    def write_step(self, step: int, **tables: dict[str, Any] | pa.Table) -> None:
        """Write one step's partitions (e.g. ``tokens=..., samples=...``), then list them in the manifest.

        Files are written first and the manifest last: a kill in between leaves unlisted files that readers
        ignore and the next run overwrites.  (One process: the step is the one file ``part-00000``.)
        """
        write_parts(self.root, step, 0, **tables)
        self.complete_step(step, tables, parts=1)

    def complete_step(self, step: int, tables: Iterable[str], parts: int = 1) -> None:
        """List step ``step`` of ``tables`` as complete, made of the part files of ranks ``0 .. parts-1``
        (written with :func:`write_parts`; call it once every rank has written, e.g. after a barrier).

        A part file missing is one line naming the ranks and the likely cause (ranks writing to different
        folders), and nothing is listed.  The part count is recorded for ``parts`` > 1 only.
        """
        tables = list(tables)
        if not isinstance(parts, int) or parts < 1:
            raise ValueError(f"parts must be a positive int, got {parts!r}")
        for name in tables:
            if name not in PARTITIONED:
                raise ValueError(f"{name} is not a partitioned table")
            absent = [r for r in range(parts) if not part_path(self.root, name, step, r).is_file()]
            if absent:
                raise UserError(f"{self.root}: step {step} of {name} lacks the part files of ranks {absent} "
                                f"(of {parts}); every rank must write to this same folder (on several nodes, a "
                                "filesystem they all share)")
        for name in tables:
            done = self.manifest["completed"][name]
            if step not in done:
                done.append(step)
                done.sort()
            counts = self.manifest.get("parts", {}).get(name, {})
            if parts > 1:
                self.manifest.setdefault("parts", {}).setdefault(name, {})[str(int(step))] = parts
            else:
                counts.pop(str(int(step)), None)
        if "parts" in self.manifest:  # a store whose multi-part steps were all rewritten by one process
            self.manifest["parts"] = {t: c for t, c in self.manifest["parts"].items() if c}
            if not self.manifest["parts"]:
                del self.manifest["parts"]
        self._save_manifest()

    def write_table(self, name: str, columns: dict[str, Any] | pa.Table | pl.DataFrame) -> None:
        """Write a whole (unpartitioned) table: ``vocab`` with the fixed schema, ``steps`` as given."""
        if name == "steps":
            frame = columns if isinstance(columns, pl.DataFrame) else pl.DataFrame(columns)
            table = frame.sort("step").to_arrow().replace_schema_metadata(_META)
        else:
            table = to_arrow(name, columns)
        atomic_write_parquet(table, self.root / f"{name}.parquet")

    def update_info(self, **info: Any) -> None:
        """Record descriptive facts (checkpoint paths, vocabulary size...) that do not gate resumption."""
        self.manifest.setdefault("info", {}).update(json.loads(json.dumps(info)))
        self._save_manifest()


# Settings that newer toolkits record and that only restate others (``sampling`` restates temperature, top_p,
# max_new_tokens and chat_template): a store written before such a key existed resumes when everything else
# matches, and the key is then added to its manifest.
RESTATED_SETTINGS = ("sampling",)


def _same_settings(old: dict, new: dict) -> bool:
    absent = {k for k in RESTATED_SETTINGS if k not in old}
    return {k: v for k, v in old.items() if k not in absent} == {k: v for k, v in new.items() if k not in absent}


def _settings_diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} before, {new.get(k)!r} now" for k in keys[:3]) or "same settings"


def open_store(path: str | Path, what: str = "store") -> "Store":
    """Open ``path`` for reading; a missing folder is a :class:`UserError` naming ``what`` (e.g. "--train-run")."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{what} {p}: no such directory; point at a store folder written by `entropy-lens collect`, "
                        "`score` or `train`")
    return Store(p)


class Store:
    """Read side of a store: LazyFrames over the completed partitions only.

    The tables join on ``(step, prompt_id, sample_id)`` (and ``position`` for tokens/updates).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)

    def _scan(self, table: str) -> pl.LazyFrame:
        return self.partitions(table).scan()

    def partitions(self, table: str) -> "Partitions":
        """The completed step partitions of ``table`` (tokens, samples or updates): step → its Parquet files
        (one, or one per rank when several processes wrote the step).

        Pass them where a step-wise analysis takes ``tokens=`` / ``updates=``: it then reads each step's own
        file instead of filtering the scan of all of them by step (the same rows either way).
        """
        if table not in PARTITIONED:
            raise ValueError(f"{table} is not a partitioned table (one of {', '.join(PARTITIONED)})")
        steps = self.manifest["completed"].get(table, [])
        return Partitions(table, {int(s): tuple(part_path(self.root, table, s, r)
                                                for r in range(step_parts(self.manifest, table, s)))
                                  for s in steps}, int(self.manifest["schema_version"]))

    def multi_part_steps(self, table: str) -> dict[int, int]:
        """Step → number of part files, for the completed steps of ``table`` written by several processes."""
        steps = self.manifest["completed"].get(table, [])
        return {int(s): n for s in steps if (n := step_parts(self.manifest, table, s)) > 1}

    def cross_part_duplicates(self, table: str) -> dict[int, pl.DataFrame]:
        """Step → the keys (``step, prompt_id, sample_id`` and ``position`` for tokens / updates) that occur in
        more than one part file of that step, for the steps of ``table`` with several parts whose parts overlap
        (an empty dict when none do).  One-part steps are not read."""
        key = _KEY if table == "samples" else TOKEN_KEY
        parts = self.partitions(table)
        steps = list(self.multi_part_steps(table))
        frames = pl.collect_all([
            pl.concat([pl.scan_parquet(str(f), hive_partitioning=False).select(key).unique() for f in parts.paths[s]])
            .group_by(key).len().filter(pl.col("len") > 1).drop("len").sort(key) for s in steps])
        return {s: df for s, df in zip(steps, frames) if df.height}

    def check_parts(self) -> int:
        """The part-file checks of ``entropy-lens validate``: a :class:`UserError` naming the first listed part file
        that is missing or lacks a column it should have (:meth:`files_lacking_columns`), or the first step whose
        part files share a key (:meth:`cross_part_duplicates`: the ranks of a multi-process writer wrote
        overlapping rows); else the most part files any step has (1 for a one-process store)."""
        for path, lacks in self.files_lacking_columns().items():
            what = "is missing" if not path.is_file() else f"lacks the columns {', '.join(lacks)}"
            raise UserError(f"{self.root}: the listed part file {path} {what}; the store is damaged: re-run the step "
                            "(or the run) into a new store")
        multi = {t: self.multi_part_steps(t) for t in PARTITIONED}
        for table in multi:
            for step, keys in self.cross_part_duplicates(table).items():
                first = ", ".join(f"{k}={v}" for k, v in keys.row(0, named=True).items())
                raise UserError(f"{self.root}: step {step} of {table} has {keys.height:,} keys in more than one of "
                                f"its {multi[table][step]} part files (first: {first}): its ranks wrote overlapping "
                                "rows; re-run that training into a new store")
        return max((n for m in multi.values() for n in m.values()), default=1)

    def files_lacking_columns(self) -> dict[Path, list[str]]:
        """Listed part file → the columns it should have and lacks: every required column, and the nullable ones
        of the store's schema version except :data:`OPTIONAL_COLUMNS` (readers would give those back as nulls;
        a file lacking them is damaged or foreign).  Reads the Parquet footers only; empty when all is well."""
        version = int(self.manifest["schema_version"])
        out: dict[Path, list[str]] = {}
        for table in PARTITIONED:
            later = set(missing_columns(version, table)) | set(OPTIONAL_COLUMNS.get(table, ()))
            need = [n for n in SCHEMAS[table].names if n not in later]
            for files in self.partitions(table).paths.values():
                for f in files:
                    names = set(pq.read_schema(f).names) if f.is_file() else set()
                    if lacks := [n for n in need if n not in names]:
                        out[f] = lacks
        return out

    def tokens_with_updates(self) -> pl.LazyFrame:
        """View: the ``tokens`` rows of every step that has ``updates``, with ``next_step``, ``logprob_next`` and
        ``entropy_next`` (all null in a store of schema 1).

        The same rows as ``tokens ⋈ updates`` on (step, prompt_id, sample_id, position), without a hash join:
        both tables' partitions are written sorted by that key, one row per token, so each step's two files
        are paired row for row and concatenated horizontally.  Each step is checked first (row counts from
        the Parquet footers, then the four key columns compared row by row, which reads only the keys); a
        step that is not aligned is joined instead (:class:`StepPairs`).  The Δp analyses take it as ``tokens=``
        without ``updates=``; they read it a step at a time by filtering it, so ``tokens=store.partitions("tokens"),
        updates=store.partitions("updates")`` is the faster way to give them the same rows.
        """
        return pair_steps(self.partitions("tokens"), self.partitions("updates"),
                          ("next_step", "logprob_next", "entropy_next"))

    @property
    def tokens(self) -> pl.LazyFrame:
        return self._scan("tokens")

    @property
    def samples(self) -> pl.LazyFrame:
        return self._scan("samples")

    @property
    def updates(self) -> pl.LazyFrame:
        return self._scan("updates")

    def _scan_file(self, name: str) -> pl.LazyFrame | None:
        path = self.root / f"{name}.parquet"
        return pl.scan_parquet(path) if path.is_file() else None

    @property
    def steps(self) -> pl.LazyFrame | None:
        """Per-step training scalars, or ``None`` for a store with no training log (a pure sweep)."""
        return self._scan_file("steps")

    @property
    def vocab(self) -> pl.LazyFrame | None:
        return self._scan_file("vocab")

    @property
    def completed_steps(self) -> list[int]:
        return list(self.manifest["completed"].get("samples", []))

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r}, kind={self.manifest.get('kind')!r}, steps={self.completed_steps})"


# ------------------------------------------------------------------------------------ step-wise reading
# Analyses that work one step at a time (exact per-step quantiles, row-for-row pairing of tokens and updates)
# read a step's rows from its own partition file when they are given the table's Partitions, and otherwise
# filter the frame they are given by step.  Both give the same rows in the same (stored) order.
TOKEN_KEY = [*_KEY, "position"]


def _polars_schema(table: str) -> pl.Schema:
    return pl.from_arrow(SCHEMAS[table].empty_table()).schema


def scan_parts(table: str, files: Iterable[str | Path]) -> pl.LazyFrame:
    """The rows of ``table`` in ``files`` (Parquet files of this store, read in the order given), with every
    column of the table's schema in schema order: a column a file lacks (added by a later schema version, or an
    optional column: :data:`OPTIONAL_COLUMNS`) comes back as typed nulls for that file's rows."""
    return pl.scan_parquet([str(f) for f in files], hive_partitioning=False, schema=_polars_schema(table),
                           missing_columns="insert")


@dataclass(frozen=True, eq=False)
class Partitions:
    """One table's completed step partitions, from :meth:`Store.partitions`: ``paths`` maps step → its files
    (a tuple: ``part-00000`` alone, or one per rank of a multi-process writer, in rank order); ``version`` is
    the store's schema version (the columns its files lack are read as nulls).

    :meth:`scan` is the same LazyFrame as the store's table property (``Store.tokens`` for the tokens): the
    steps in order, each step's parts in rank order.
    """

    table: str
    paths: dict[int, tuple[Path, ...]]
    version: int = SCHEMA_VERSION

    def scan(self) -> pl.LazyFrame:
        if not self.paths:
            return pl.LazyFrame(schema=_polars_schema(self.table))
        return scan_parts(self.table, [p for files in self.paths.values() for p in files])


class StepTable:
    """One table read a step at a time: ``steps`` (sorted), :meth:`scan` (one step's rows, in stored order)
    and :meth:`num_rows` (from the Parquet footer of a partition file; None for a filtered frame).

    Build it with :func:`step_tables`, from :class:`Partitions` (each step is its own files: one, or one per
    rank) or from any frame (each step is ``frame.filter(step == s)``).
    """

    def __init__(self, files: dict[int, Path | Sequence[Path]] | None = None, frame: pl.LazyFrame | None = None,
                 steps: Iterable[int] = (), *, table: str | None = None, version: int = SCHEMA_VERSION):
        self._files = None if files is None else {
            int(s): (f,) if isinstance(f, (str, Path)) else tuple(f) for s, f in files.items()}
        self._frame = frame
        self._table, self._version = table, version  # files lacking columns get them as typed nulls
        self.steps = sorted(self._files) if self._files is not None else sorted(int(s) for s in steps)

    def scan(self, step: int) -> pl.LazyFrame:
        if self._files is not None:
            files = self._files[step]
            if self._table:
                return scan_parts(self._table, files)
            return pl.scan_parquet([str(f) for f in files], hive_partitioning=False)
        return self._frame.filter(pl.col("step") == step)

    def num_rows(self, step: int) -> int | None:
        if self._files is None:
            return None
        try:
            return sum(pq.ParquetFile(f).metadata.num_rows for f in self._files[step])
        except OSError:
            return None


def source_frame(source: pl.LazyFrame | Partitions) -> pl.LazyFrame:
    """The whole table as one LazyFrame (``Partitions.scan()``, or the frame itself)."""
    return source.scan() if isinstance(source, Partitions) else source


def step_tables(*sources: pl.LazyFrame | Partitions) -> list[StepTable]:
    """A :class:`StepTable` per source; the frames' steps are found with one parallel scan of their ``step``
    columns."""
    frames = [i for i, s in enumerate(sources) if not isinstance(s, Partitions)]
    found = pl.collect_all([sources[i].select(pl.col("step").unique().drop_nulls()) for i in frames]) if frames else []
    steps = {i: df["step"].to_list() for i, df in zip(frames, found)}
    return [StepTable(files=s.paths, table=s.table, version=s.version) if isinstance(s, Partitions)
            else StepTable(frame=s, steps=steps[i]) for i, s in enumerate(sources)]


def keys_aligned(t: pl.DataFrame, u: pl.DataFrame) -> bool:
    """True when ``t`` and ``u`` hold the same (step, prompt_id, sample_id, position) keys in the same order."""
    if t.height != u.height:
        return False
    try:
        return all(t[k].equals(u[k], check_dtypes=False, check_names=False) for k in TOKEN_KEY)
    except Exception:  # incomparable key types: let the join decide
        return False


class StepPairs:
    """``tokens ⋈ updates`` (inner join on the token key), one step partition at a time.

    The store writes a step's tokens and updates rows sorted by the key, one updates row per token row, so a
    step is paired by a horizontal concatenation when the two sides hold the same keys in the same order;
    any other step is joined.  The verdict per step is taken once (row counts from the Parquet footers when
    known, else the four key columns compared row by row) and remembered, so later reads of the step read
    only the columns they need.

    ``steps``: the steps present on both sides.  ``next_columns``: the updates columns added (default
    ``logprob_next``).  ``tokens`` that already carry ``logprob_next`` need no ``updates``: they are read as
    they are.
    """

    def __init__(self, tokens: pl.LazyFrame | Partitions, updates: pl.LazyFrame | Partitions | None = None,
                 next_columns: Iterable[str] = ("logprob_next",)):
        self.next_columns = list(next_columns)
        self.token_columns = source_frame(tokens).collect_schema().names()
        self.joined = "logprob_next" in self.token_columns
        if self.joined:
            (self._t,) = step_tables(tokens)
            self._u = None
            self.steps = self._t.steps
        else:
            if updates is None:
                raise UserError("updates are needed (or tokens with a logprob_next column)")
            self._t, self._u = step_tables(tokens, updates)
            self.steps = sorted(set(self._t.steps) & set(self._u.steps))
        self._aligned: dict[int, bool] = {}

    def _known_misaligned(self, step: int) -> bool:
        nt, nu = self._t.num_rows(step), self._u.num_rows(step)
        return nt is not None and nu is not None and nt != nu

    def frame(self, step: int, columns: Iterable[str], with_next: bool = True) -> pl.DataFrame:
        """One step's rows: the token ``columns`` (and the next columns unless ``with_next`` is False)."""
        cols = list(dict.fromkeys(columns))
        t = self._t.scan(step)
        if self.joined:
            return t.select(*cols, *(["logprob_next"] if with_next and "logprob_next" not in cols else [])).collect()
        u = self._u.scan(step)
        ucols = self.next_columns if with_next else []
        if step not in self._aligned and self._known_misaligned(step):
            self._aligned[step] = False
        known = self._aligned.get(step)
        if known:
            if not ucols:
                return t.select(cols).collect()
            tdf, udf = pl.collect_all([t.select(cols), u.select(ucols)])
            if tdf.height != udf.height:  # the files changed under us: pair by key instead
                self._aligned[step] = False
                return self.frame(step, cols, with_next)
            return tdf.hstack(udf)
        tcols = list(dict.fromkeys([*TOKEN_KEY, *cols]))
        tdf, udf = pl.collect_all([t.select(tcols), u.select(*TOKEN_KEY, *ucols)])
        if known is None:  # first read: the key columns are read anyway, so the verdict costs nothing more
            self._aligned[step] = ok = keys_aligned(tdf, udf)
            if ok:
                return tdf.select(cols).hstack(udf.select(ucols)) if ucols else tdf.select(cols)
        return tdf.join(udf, on=TOKEN_KEY, how="inner").select(*cols, *ucols)

    def check(self, steps: Iterable[int]) -> None:
        """Take the alignment verdict of every step of ``steps`` not yet known (keys read in one parallel pass)."""
        todo = [s for s in steps if s not in self._aligned and not self.joined]
        for s in todo:
            if self._known_misaligned(s):
                self._aligned[s] = False
        todo = [s for s in todo if s not in self._aligned]
        keys = pl.collect_all([q for s in todo for q in (self._t.scan(s).select(TOKEN_KEY),
                                                         self._u.scan(s).select(TOKEN_KEY))]) if todo else []
        for i, s in enumerate(todo):
            self._aligned[s] = keys_aligned(keys[2 * i], keys[2 * i + 1])

    def scan(self, step: int) -> pl.LazyFrame:
        """One step's rows, lazily: every token column and the next columns (the verdict is taken first)."""
        t = self._t.scan(step)
        if self.joined:
            return t
        self.check([step])
        u = self._u.scan(step)
        if self._aligned[step]:
            return pl.concat([t, u.select(self.next_columns)], how="horizontal")
        return (t.join(u.select(*TOKEN_KEY, *self.next_columns), on=TOKEN_KEY, how="inner")
                .select(*self.token_columns, *self.next_columns))


def pair_steps(tokens: pl.LazyFrame | Partitions, updates: pl.LazyFrame | Partitions,
               columns: Iterable[str] = ("logprob_next",)) -> pl.LazyFrame:
    """``tokens`` with the ``columns`` of ``updates`` (an inner join on the token key), paired step by step
    (:class:`StepPairs`): steps missing from either side are left out, as the join would."""
    pairs = StepPairs(tokens, updates, columns)
    pairs.check(pairs.steps)
    if pairs.steps:
        return pl.concat([pairs.scan(s) for s in pairs.steps], how="vertical")
    t, u = source_frame(tokens), source_frame(updates)
    return t.join(u.select(*TOKEN_KEY, *pairs.next_columns), on=TOKEN_KEY, how="inner")
