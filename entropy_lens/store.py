"""The Parquet store: layout, schemas, the manifest, atomic writes, and readers returning LazyFrames.

Layout (docs/store-schema.md has every column)::

    STORE/
      lens.json                        manifest: schema_version, kind, settings, completed partitions
      tokens/step=000040/part-00000.parquet
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
* The schema version is written into the manifest and into every file's metadata; a reader refuses a store
  from a newer version with one clear message.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterable

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from entropy_lens.errors import StoreLockedError, UserError

SCHEMA_VERSION = 1
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
        ("advantage", f32, True), ("shaped_advantage", f32, True),
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
    ),
    "vocab": _schema(("token_id", i32, False), ("token", utf8, False)),
}
PARTITIONED = ("tokens", "samples", "updates")
_SORT = {"tokens": _KEY + ["position"], "samples": _KEY, "updates": _KEY + ["position"], "vocab": ["token_id"]}
ROW_GROUP_SIZE = 1 << 20  # large row groups: small ones halve write and scan throughput (ANCHORS D3)


def partition_path(root: Path, table: str, step: int) -> Path:
    return root / table / f"step={step:06d}" / "part-00000.parquet"


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
    if version != SCHEMA_VERSION:
        raise UserError(f"{root}: store schema version {version!r} is not understood by this entropy-lens "
                        f"(which reads version {SCHEMA_VERSION}); use the entropy-lens version that wrote it")
    return manifest


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
        from entropy_lens import __version__

        if (self.root / MANIFEST).exists():
            manifest = read_manifest(self.root)
            if manifest.get("kind") != self.kind or manifest.get("settings") != self.settings:
                diff = _settings_diff(manifest.get("settings", {}), self.settings)
                raise UserError(f"{self.root}: this store was written by a different {manifest.get('kind')} "
                                f"({diff}); choose a new --out or repeat the original settings")
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
        ignore and the next run overwrites.
        """
        for name, columns in tables.items():
            if name not in PARTITIONED:
                raise ValueError(f"{name} is not a partitioned table")
            atomic_write_parquet(to_arrow(name, columns), partition_path(self.root, name, step))
        for name in tables:
            done = self.manifest["completed"][name]
            if step not in done:
                done.append(step)
                done.sort()
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


def _settings_diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} before, {new.get(k)!r} now" for k in keys[:3]) or "same settings"


class Store:
    """Read side of a store: LazyFrames over the completed partitions only.

    The tables join on ``(step, prompt_id, sample_id)`` (and ``position`` for tokens/updates).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)

    def _scan(self, table: str) -> pl.LazyFrame:
        steps = self.manifest["completed"].get(table, [])
        paths = [str(partition_path(self.root, table, s)) for s in steps]
        if not paths:
            lf = pl.LazyFrame(schema=pl.from_arrow(SCHEMAS[table].empty_table()).schema)
        else:
            lf = pl.scan_parquet(paths, hive_partitioning=False)
        _set_step_scans(lf, {s: _FileScan(p) for s, p in zip(steps, paths)})
        return lf

    def tokens_with_updates(self) -> pl.LazyFrame:
        """View: the ``tokens`` rows of every step that has ``updates``, with ``next_step`` and ``logprob_next``.

        The same rows as ``tokens ⋈ updates`` on (step, prompt_id, sample_id, position), without a hash join:
        both tables' partitions are written sorted by that key, one row per token, so each step's two files
        are paired row for row and concatenated horizontally.  Each step is checked first (row counts from
        the Parquet footers, then the four key columns compared row by row, which reads only the keys); a
        step that is not aligned is joined instead.  Pass it as ``tokens=`` to the Δp analyses.
        """
        return pair_steps(self.tokens, self.updates, ("next_step", "logprob_next"))

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
# LazyFrames returned by :class:`Store` remember their partitions: analyses that work one step at a time
# (exact per-step quantiles, row-for-row pairing of tokens and updates) read each step's file directly
# instead of filtering the whole scan.  Any other LazyFrame falls back to ``filter(step == s)``.
_STEP_ATTR = "_entropy_lens_steps"
TOKEN_KEY = [*_KEY, "position"]


class _FileScan:
    """One partition file: its scan, and its row count from the Parquet footer (no data read)."""

    def __init__(self, path: str):
        self.path = path

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.path, hive_partitioning=False)

    def num_rows(self) -> int | None:
        try:
            return pq.ParquetFile(self.path).metadata.num_rows
        except OSError:
            return None


class _FrameScan:
    def __init__(self, lf: pl.LazyFrame):
        self.lf = lf

    def scan(self) -> pl.LazyFrame:
        return self.lf

    def num_rows(self) -> int | None:
        return None


def _set_step_scans(lf: pl.LazyFrame, scans: dict) -> None:
    setattr(lf, _STEP_ATTR, scans)


def step_scans(lf: pl.LazyFrame) -> dict[int, pl.LazyFrame] | None:
    """``{step: LazyFrame of that step's rows}`` for a frame returned by :class:`Store` (or its
    :meth:`Store.tokens_with_updates` view) as it was returned; ``None`` for any other frame."""
    scans = getattr(lf, _STEP_ATTR, None)
    return None if scans is None else {s: sc.scan() for s, sc in scans.items()}


def _step_sources(lf: pl.LazyFrame) -> dict | None:
    return getattr(lf, _STEP_ATTR, None)


def discover_steps(*frames: pl.LazyFrame) -> list[dict]:
    """Per frame, its step sources: the remembered partitions, else ``filter(step == s)`` for each distinct
    step (found with one scan of the ``step`` column of the frames that need it)."""
    out: list[dict | None] = [_step_sources(f) for f in frames]
    todo = [i for i, o in enumerate(out) if o is None]
    if todo:
        found = pl.collect_all([frames[i].select(pl.col("step").unique().drop_nulls()) for i in todo])
        for i, df in zip(todo, found):
            out[i] = {int(s): _FrameScan(frames[i].filter(pl.col("step") == s)) for s in sorted(df["step"].to_list())}
    return out  # type: ignore[return-value]


def keys_aligned(t: pl.DataFrame, u: pl.DataFrame) -> bool:
    """True when ``t`` and ``u`` hold the same (step, prompt_id, sample_id, position) keys in the same order."""
    if t.height != u.height:
        return False
    try:
        return all(t[k].equals(u[k], check_dtypes=False, check_names=False) for k in TOKEN_KEY)
    except Exception:  # incomparable key types: let the join decide
        return False


def pair_steps(tokens: pl.LazyFrame, updates: pl.LazyFrame, columns=("logprob_next",)) -> pl.LazyFrame:
    """``tokens`` with the ``columns`` of ``updates`` (an inner join on the token key), paired step by step.

    For each step in both frames: when the two sides hold the same keys in the same order (checked now,
    reading only the key columns; the Parquet footers' row counts first when known) the step is a
    horizontal concatenation; otherwise that step is an inner join.  Steps missing from either side are
    left out, as the join would.  The result remembers its steps (:func:`step_scans`).
    """
    columns = list(columns)
    t_src, u_src = discover_steps(tokens, updates)
    steps = sorted(set(t_src) & set(u_src))
    t_names = tokens.collect_schema().names()
    todo = []
    for s in steps:
        nt, nu = t_src[s].num_rows(), u_src[s].num_rows()
        if nt is not None and nu is not None and nt != nu:
            continue
        todo.append(s)
    key_frames = pl.collect_all([q for s in todo for q in (t_src[s].scan().select(TOKEN_KEY),
                                                           u_src[s].scan().select(TOKEN_KEY))]) if todo else []
    aligned = {s: keys_aligned(key_frames[2 * i], key_frames[2 * i + 1]) for i, s in enumerate(todo)}
    parts: dict[int, _FrameScan] = {}
    for s in steps:
        t, u = t_src[s].scan(), u_src[s].scan()
        if aligned.get(s, False):
            lf = pl.concat([t, u.select(columns)], how="horizontal")
        else:
            lf = t.join(u.select(*TOKEN_KEY, *columns), on=TOKEN_KEY, how="inner").select(*t_names, *columns)
        parts[s] = _FrameScan(lf)
    if parts:
        out = pl.concat([p.lf for p in parts.values()], how="vertical")
    else:
        out = tokens.join(updates.select(*TOKEN_KEY, *columns), on=TOKEN_KEY, how="inner")
    _set_step_scans(out, parts)
    return out
