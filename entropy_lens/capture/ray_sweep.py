"""The ``ray`` backend: the checkpoint sweep as a Ray Data pipeline over (checkpoint × prompt shard).

``entropy-lens collect CKPTS --backend ray --workers N`` writes exactly the store that ``--backend hf`` writes
(same partitions, same manifest settings, the same rows for the same seed), so analysis code never changes
and a sweep started with one backend can be resumed with the other.

Pipeline::

    shards (driver)  ──>  map_batches(ShardWorker, concurrency=N)  ──>  driver: StoreWriter.write_step
    one row per           an actor pool; each actor holds up to two       a step's partitions are written
    (step, batch)         checkpoints (this one and the next)             (atomically, then the manifest)
                          and samples, scores, grades its shard           once all its shards are in

* A shard is one batch of the local executor: jobs ``[b·B, (b+1)·B)`` of the step, with ``B =
  --batch-size``, sampled with ``batch_seed(seed, step, b)`` and scored in that same batch, by the same
  functions (:func:`~entropy_lens.capture.sweep.step_tables`,
  :func:`~entropy_lens.capture.tables.updates_table`).  So the rows equal the local executor's with the same sampler (``static``), whichever actor
  ran which shard, in whatever order.
* ``updates`` (step k's responses teacher-forced under checkpoint k+1) are scored by the same actor right
  after sampling, which is why an actor keeps the next checkpoint loaded too; shards run in (step, batch)
  order so each actor loads each checkpoint about once.
* Only the driver writes, through :class:`~entropy_lens.store.StoreWriter` (lock, atomic files, manifest
  last): a killed sweep resumes where it stopped; shards of a step whose tokens are already stored but whose
  updates are not re-score the stored tokens, as the hf path does.
* Actors return their tables as Arrow IPC bytes, one row per shard; a step waits on the driver only until its
  last shard arrives, so the driver holds at most a few steps' rows.

On a cluster, every node must see the checkpoints, the dataset and the store folder at the same paths (a
shared filesystem).  Ray is imported only when this backend runs (``pip install 'entropy-lens[ray]'``); when
no Ray instance is running, a local one is started for the sweep and shut down after it.  Sampling inside
the actors is the static sampler (the ``static`` backend's); vLLM engines inside Ray (``ray.data.llm``) are not wired in.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from entropy_lens.capture.config import CollectConfig
from entropy_lens.capture.sweep import CollectSummary, make_sampler, prepare, settings, step_tables
from entropy_lens.capture.tables import step_jobs, updates_table, vocab_table
from entropy_lens.errors import UserError
from entropy_lens.store import StoreWriter, partition_path, to_arrow

INSTALL_HINT = ("--backend ray needs Ray Data, which is not installed; install it with "
                "pip install 'entropy-lens[ray]', or use --backend hf")


@dataclass(frozen=True)
class Shard:
    """One unit of work: batch ``batch`` of step ``step`` (and its updates under ``next_ckpt``)."""

    step: int
    batch: int
    ckpt: str
    next_step: int  # -1 when there is no next checkpoint or no updates are wanted
    next_ckpt: str
    sample: bool  # sample + score + grade (tokens, samples); otherwise re-read the stored tokens
    updates: bool
    vocab: bool  # also return vocab.parquet's rows (first shard, when the store has none yet)


def plan(store: StoreWriter, checkpoints, n_prompts: int, cfg: CollectConfig) -> list[Shard]:
    """Every shard still to do, in (step, batch) order; resumes exactly like the hf path."""
    n_batches = -(-len(step_jobs(n_prompts, cfg.samples_per_prompt)) // cfg.batch_size)
    shards = []
    for i, ckpt in enumerate(checkpoints):
        nxt = checkpoints[i + 1] if i + 1 < len(checkpoints) else None
        sample = not store.is_complete(ckpt.step)
        updates = cfg.updates and nxt is not None and not store.is_complete(ckpt.step, ["updates"])
        if not (sample or updates):
            continue
        for b in range(n_batches):
            shards.append(Shard(ckpt.step, b, str(ckpt.path), nxt.step if updates else -1,
                                str(nxt.path) if updates else "", sample, updates, False))
    if shards and not (store.root / "vocab.parquet").exists():
        shards[0] = replace(shards[0], vocab=True)
    return shards


def _ipc(table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes):
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


class ShardWorker:
    """Ray Data callable class: holds checkpoints and turns shard rows into Arrow-IPC table rows."""

    def __init__(self, cfg: CollectConfig, sampler: str, eval_set, device: str, dtype, cache: int = 2):
        import torch

        from entropy_lens.capture.sampling import SamplingParams

        self.cfg, self.eval_set, self.device, self.dtype, self.cache = cfg, eval_set, device, dtype, cache
        self.sampler = make_sampler(cfg, sampler)
        self.params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p)
        self.models: OrderedDict[str, tuple] = OrderedDict()
        torch.set_grad_enabled(False)

    def _load(self, path: str):
        """(model, tokenizer, prompt_ids) of a checkpoint, from a small LRU cache."""
        from entropy_lens.capture.sampling import encode_prompt
        from entropy_lens.models import load_checkpoint

        if path in self.models:
            self.models.move_to_end(path)
            return self.models[path]
        while len(self.models) >= self.cache:
            self.models.popitem(last=False)
        model, tokenizer = load_checkpoint(path, device=self.device, dtype=self.dtype)
        prompt_ids = [encode_prompt(tokenizer, p.prompt, chat_template=self.cfg.chat_template)
                      for p in self.eval_set.problems]
        self.models[path] = (model, tokenizer, prompt_ids)
        return self.models[path]

    def __call__(self, batch: dict) -> dict:
        import numpy as np
        import polars as pl

        out = {k: [] for k in ("step", "batch", "n_sampled", "n_updates", "tokens", "samples", "updates", "vocab")}
        for row in (dict(zip(batch, vals)) for vals in zip(*batch.values())):
            s = Shard(**{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
            model, tokenizer, prompt_ids = self._load(s.ckpt)
            tokens = samples = updates = vocab = b""
            n_sampled = n_updates = 0
            frame = None
            if s.sample:
                t, smp = step_tables(s.step, model, tokenizer, prompt_ids, self.eval_set, self.sampler,
                                     self.params, self.cfg, batches=range(s.batch, s.batch + 1))
                tokens, samples = _ipc(to_arrow("tokens", t)), _ipc(to_arrow("samples", smp))
                n_sampled = len(t["token_id"])
                if s.updates:
                    frame = pl.DataFrame({k: t[k] for k in ("prompt_id", "sample_id", "position", "token_id")})
            elif s.updates:  # the step is stored but its updates are not: re-score the stored tokens
                b = self.cfg.batch_size
                jobs = step_jobs(len(self.eval_set.problems), self.cfg.samples_per_prompt)
                jobs = jobs[s.batch * b:(s.batch + 1) * b]
                keys = pl.DataFrame({"prompt_id": [p for p, _ in jobs], "sample_id": [q for _, q in jobs]},
                                    schema={"prompt_id": pl.Int32, "sample_id": pl.Int32})
                frame = (pl.read_parquet(partition_path(Path(self.cfg.out), "tokens", s.step))
                         .join(keys, on=["prompt_id", "sample_id"], how="semi"))
            if s.updates:
                next_model, _, next_prompt_ids = self._load(s.next_ckpt)
                u = updates_table(frame, s.step, s.next_step, next_model, next_prompt_ids,
                                  temperature=self.cfg.temperature, batch_size=self.cfg.batch_size)
                updates, n_updates = _ipc(to_arrow("updates", u)), len(u["position"])
            if s.vocab:
                vocab = _ipc(to_arrow("vocab", vocab_table(tokenizer, model)))
            for k, v in dict(step=s.step, batch=s.batch, n_sampled=n_sampled, n_updates=n_updates, tokens=tokens,
                             samples=samples, updates=updates, vocab=vocab).items():
                out[k].append(v)
        return {k: np.array(v, dtype=object if isinstance(v[0], bytes) else np.int64) for k, v in out.items()}


def _user_error(e: BaseException) -> UserError | None:
    """The UserError an actor raised, from inside Ray's wrapping exceptions."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, UserError):
            return e
        e = getattr(e, "cause", None) or e.__cause__
    return None


def run_sweep(cfg: CollectConfig, sampler: str) -> CollectSummary:
    """The ``ray`` executor: the sweep of :func:`~entropy_lens.capture.sweep.run_local` as a Ray Data
    pipeline whose actors sample with ``sampler`` (module docstring)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UserError(INSTALL_HINT) from None

    if cfg.workers < 1:
        raise UserError(f"--workers {cfg.workers}: must be at least 1")
    checkpoints, eval_set, _, device, dtype = prepare(cfg)
    t0 = time.perf_counter()
    progress = _Progress()
    with StoreWriter(cfg.out, kind="sweep", settings=settings(cfg, eval_set, sampler)) as store:
        store.update_info(checkpoints={str(c.step): str(c.path) for c in checkpoints}, device=device,
                          executor=f"ray ({cfg.workers} workers)")
        shards = plan(store, checkpoints, len(eval_set.problems), cfg)
        todo = {s.step for s in shards}
        progress.skipped = [c.step for c in checkpoints if c.step not in todo]
        if shards:
            started = not ray.is_initialized()
            if started:
                ray.init(include_dashboard=False, log_to_driver=False)
            try:
                resources = {"num_gpus": 1} if device.startswith("cuda") else {"num_cpus": 1}
                ds = ray.data.from_items([asdict(s) for s in shards], override_num_blocks=len(shards)).map_batches(
                    ShardWorker, fn_constructor_kwargs=dict(cfg=cfg, sampler=sampler, eval_set=eval_set,
                                                            device=device, dtype=dtype),
                    batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(cfg.workers, len(shards))),
                    **resources)
                try:
                    write_steps(store, ds.iter_rows(), shards, progress)
                except Exception as e:
                    user = _user_error(e)
                    if user is not None:
                        raise UserError(str(user)) from None
                    raise
            finally:
                if started:
                    ray.shutdown()
    return CollectSummary(Path(cfg.out), sorted(progress.written), sorted(progress.skipped), progress.sampled,
                          progress.scored, time.perf_counter() - t0)


@dataclass
class _Progress:
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    sampled: int = 0
    scored: int = 0


def write_steps(store: StoreWriter, rows, shards: list[Shard], progress: _Progress) -> None:
    """Write each step's partitions as soon as the last of its shards' rows has arrived (in any order)."""
    import pyarrow as pa

    expected = defaultdict(int)
    for s in shards:
        expected[s.step] += 1
    flags = {s.step: (s.sample, s.updates) for s in shards}
    pending: dict[int, dict[int, dict]] = defaultdict(dict)
    for row in rows:
        if row["vocab"]:
            store.write_table("vocab", _from_ipc(row["vocab"]))
        step = int(row["step"])
        pending[step][int(row["batch"])] = row
        if len(pending[step]) < expected[step]:
            continue
        got = pending.pop(step)
        parts = [got[b] for b in sorted(got)]
        sample, updates = flags[step]
        tables = {}
        for name, wanted in (("tokens", sample), ("samples", sample), ("updates", updates)):
            if wanted:
                tables[name] = pa.concat_tables([_from_ipc(p[name]) for p in parts]).combine_chunks()
        store.write_step(step, **tables)
        n_s = sum(int(p["n_sampled"]) for p in parts)
        progress.sampled += n_s
        progress.scored += n_s + sum(int(p["n_updates"]) for p in parts)
        (progress.written if sample else progress.skipped).append(step)
