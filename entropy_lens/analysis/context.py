"""The run context: what one run's stores hold, and which steps each analysis counts.

:class:`RunView` is the single answer, computed once and handed to every consumer (the report, the figure
scripts, the paper's analysis scripts)::

    view = RunView.open("RUN/baseline/sweep", train_run="RUN/baseline")   # detector "segmented" unless boundary=
    view.boundary            # StageBoundary (first plateau step) or None, with view.boundary_reason
    view.delta_p_scope       # DeltaPScope: the plateau when it has Δp rows, else all steps; .kwargs
    updates.update_by_entropy_bin(tokens=view.tokens_by_step, updates=view.updates_by_step,
                                  **view.delta_p_scope.kwargs)
    view.late_start()        # first step of "late training" for the method comparisons

Sources: the per-token tables (tokens, samples, updates) come from the store; the training log
(``steps.parquet``) from the training run when one is given, else from the store; the vocabulary from the
store, else from the training run.  The curves the stage boundary is detected on are
:func:`~entropy_lens.analysis.stages.step_curves` of the training run (its log and rollouts) when there is
one, else of the store alone: a sweep's held-out samples never fill gaps in a training batch's curve.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from entropy_lens.analysis import stages
from entropy_lens.analysis.frames import has_values
from entropy_lens.errors import UserError
from entropy_lens.store import Partitions, Store, open_store

INTERVENTIONS_FILE = "interventions.parquet"
INTERVENTION_COLUMNS = ["kind", "group", "n", "delta_accuracy", "ci_low", "ci_high"]


@dataclass(frozen=True)
class DeltaPScope:
    """The steps the plateau-stage Δp analyses (paper-notes §2.1 D–F, §2.2 G, Fig. 5a's |Δp| panel) use.

    ``stage``: ``"plateau"`` when the plateau has Δp rows, else None (all steps); ``note``: a sentence saying
    which; :attr:`kwargs`: the ``boundary=``/``stage=`` arguments of the step-wise analyses (empty for all
    steps).
    """

    stage: str | None
    note: str
    boundary: int | None = None

    @property
    def kwargs(self) -> dict:
        return dict(boundary=self.boundary, stage=self.stage) if self.stage else {}


def delta_p_scope(updates: pl.LazyFrame | None, boundary) -> DeltaPScope:
    """The rule of :class:`DeltaPScope`: the plateau (steps ≥ ``boundary``) when ``updates`` has rows there."""
    if boundary is None:
        return DeltaPScope(None, "all steps (no stage boundary)")
    if updates is None:
        return DeltaPScope(None, "all steps (no Δp)")
    b = int(boundary)
    if updates.filter(pl.col("step") >= b).select(pl.len()).collect().item():
        return DeltaPScope("plateau", f"plateau steps (≥ {b})", b)
    return DeltaPScope(None, f"all steps: the plateau (steps ≥ {b}) has no Δp rows (the last checkpoint has no next "
                             "one to score it)")


def late_start(steps: pl.DataFrame | None, boundary) -> int | None:
    """First step of "late training": the boundary when known, else the median of ``steps["step"]`` (None
    without steps)."""
    if boundary is not None:
        return int(getattr(boundary, "step", boundary))
    s = steps["step"].to_numpy() if steps is not None and steps.height else np.array([])
    return int(np.median(s)) if s.size else None


def no_clear_break(found: stages.StageBoundary) -> str:
    """Why a detector's break is not used: its slopes do not differ (the fit's test of a straight line)."""
    f = found.fit
    return (f"no clear break in {found.column} (detector `{found.detector}`): the best break, step {f.boundary}, has "
            f"slopes {f.rising_slope.estimate:.3g} and {f.plateau_slope.estimate:.3g} per step, which a straight "
            f"line explains as well (p = {f.p_value:.2f})")


def read_interventions(path: Path) -> pl.DataFrame:
    """Read an interventions table (columns: kind, group, n, accuracy_before, accuracy_after, delta_accuracy,
    ci_low, ci_high); a malformed one is a :class:`UserError`."""
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path}: unreadable interventions table ({e})") from None
    missing = [c for c in INTERVENTION_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: interventions table lacks column(s) {', '.join(missing)}")
    return df


@dataclass(frozen=True)
class Rollouts:
    """The rollouts an account of the updates reads: ``tokens``, ``samples`` and ``updates`` (None when the
    store has none) of one store, ``where`` they come from (a phrase for the report), and whether their tokens
    carry the trainer's ``advantage`` (else analyses normalise the rewards themselves)."""

    tokens: pl.LazyFrame
    samples: pl.LazyFrame
    updates: pl.LazyFrame | None
    where: str
    has_advantages: bool
    kind: str = "?"  # the store's kind: "train" (updates right after each step's update) or a sweep / score store


def _has_advantages(store: Store) -> bool:
    return has_values(store.tokens, "advantage")


def _rollouts_of(store: Store, where: str, has_advantages: bool) -> Rollouts:
    """``store``'s tokens, samples and updates (None when it has none) as :class:`Rollouts`."""
    return Rollouts(store.tokens, store.samples, None if _is_empty(store.updates) else store.updates, where,
                    has_advantages, store.manifest.get("kind", "?"))


def _n_steps(samples: pl.LazyFrame | None) -> int:
    """Distinct steps of a samples table (0 when there is none)."""
    return 0 if samples is None else int(samples.select(pl.col("step").n_unique()).collect().item())


def _is_empty(lf: pl.LazyFrame | None) -> bool:
    return lf is None or lf.select(pl.len()).collect().item() == 0


@dataclass
class RunView:
    """One run: the store the per-token analyses read, the training run its curves come from, and the
    stage boundary (``boundary`` = manual first plateau step, else the registered ``detector``).

    Every property is computed on first use and kept.  What does not depend on the boundary (the tables, the
    curves, :meth:`memo`'s entries) is shared with the copies :meth:`with_boundary` makes, so that moving the
    boundary to the ends of its interval recomputes only what the boundary changes.
    """

    path: Path
    store: Store
    train_run: Path | None = None
    train: Store | None = None
    manual_boundary: int | None = None
    detector: str = stages.DEFAULT_DETECTOR
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    #: cached properties that do not depend on the boundary: :meth:`with_boundary` hands them to its copy
    BOUNDARY_FREE = ("steps_table", "has_updates", "is_empty", "rollouts", "rising_rollouts", "curves")

    @classmethod
    def open(cls, store, train_run=None, *, boundary: int | None = None,
             detector: str = stages.DEFAULT_DETECTOR) -> "RunView":
        """Open ``store`` (and ``train_run``, which must be a training run); an unknown ``detector`` fails here."""
        st = open_store(store, "store")
        train = open_store(train_run, "--train-run") if train_run is not None else None
        if train is not None and train.manifest.get("kind") != "train":
            raise UserError(f"--train-run {train_run}: a {train.manifest.get('kind')!r} store, expected a training "
                            "run (`entropy-lens train --out RUN`)")
        if boundary is None:
            stages.STAGE_DETECTORS.get(detector)  # unknown names fail loudly, not as a skipped stage split
        return cls(Path(store), st, Path(train_run) if train_run is not None else None, train,
                   None if boundary is None else int(boundary), detector)

    # ---------------------------------------------------------------------------------------- tables
    @property
    def kind(self) -> str:
        return self.store.manifest.get("kind", "?")

    @property
    def tokens(self) -> pl.LazyFrame:
        return self.store.tokens

    @property
    def samples(self) -> pl.LazyFrame:
        return self.store.samples

    @property
    def updates(self) -> pl.LazyFrame:
        return self.store.updates

    @property
    def tokens_by_step(self) -> Partitions:
        """The tokens as step partitions: what the step-wise analyses read one file at a time."""
        return self.store.partitions("tokens")

    @property
    def updates_by_step(self) -> Partitions | None:
        """The updates as step partitions, or None when the store has none (no Δp)."""
        return self.store.partitions("updates") if self.has_updates else None

    @property
    def steps(self) -> pl.LazyFrame | None:
        """The training log: the training run's ``steps.parquet``, else the store's (None for a pure sweep)."""
        return self.train.steps if self.train is not None else self.store.steps

    @cached_property
    def steps_table(self) -> pl.DataFrame | None:
        return self.steps.collect() if self.steps is not None else None

    @property
    def vocab(self) -> pl.LazyFrame | None:
        """token_id → string: the store's vocab.parquet, else the training run's."""
        if self.store.vocab is not None:
            return self.store.vocab
        return self.train.vocab if self.train is not None else None

    @cached_property
    def has_updates(self) -> bool:
        return not _is_empty(self.store.updates)

    @cached_property
    def is_empty(self) -> bool:
        """True when the store has no completed step (no samples or no tokens)."""
        return _is_empty(self.store.samples) or _is_empty(self.store.tokens)

    @cached_property
    def rollouts(self) -> Rollouts:
        """The training rollouts: the store's when its tokens carry advantages, else the training run's when
        it has some, else the store's own samples (a sweep or a re-scored dump: no advantages)."""
        if _has_advantages(self.store):
            return _rollouts_of(self.store, "this store", True)
        if self.train is not None and _has_advantages(self.train):
            return _rollouts_of(self.train, f"the training run {self.train_run}", True)
        return _rollouts_of(self.store, "this store", False)

    @cached_property
    def rising_rollouts(self) -> Rollouts:
        """The responses the rising-stage findings on tokens and responses (B, C) read: the training run's
        rollouts when they record more steps than this store's samples (a sweep of every 10th checkpoint beside
        a training batch at every step), else this store's — the densest data the run has, as finding A takes
        the training log's per-step entropies.  A rising stage shorter than the sweep's checkpoint interval
        is then still measured."""
        n_own = _n_steps(self.store.samples)
        n_train = _n_steps(self.train.samples) if self.train is not None else 0
        store, where = ((self.train, f"the training run's rollouts ({n_train} steps; this store has {n_own})")
                        if n_train > n_own else (self.store, "this store's samples"))
        return _rollouts_of(store, where, _has_advantages(store))

    # ---------------------------------------------------------------------------------------- stages
    @cached_property
    def curves(self) -> pl.DataFrame:
        """Fig. 1's per-step curves (:func:`~entropy_lens.analysis.stages.step_curves`): the training run's
        log and rollouts when there is a training run, else the store's own; never a mix of a sweep's held-out
        samples with a training batch."""
        src = self.train if self.train is not None else self.store
        return stages.step_curves(tokens=src.tokens, samples=src.samples, steps=src.steps)

    @cached_property
    def _boundary(self) -> tuple[stages.StageBoundary | None, str]:
        if self.manual_boundary is not None:
            return stages.detect_stage_boundary(self.curves, boundary=self.manual_boundary), ""
        try:
            found = stages.detect_stage_boundary(self.curves, self.detector)
        except UserError as e:  # curves too short: no boundary, and why
            return None, str(e)
        if not found.clear:
            return None, no_clear_break(found)
        return found, ""

    def with_boundary(self, step: int) -> "RunView":
        """The same run with the boundary set to ``step`` (a manual boundary), e.g. an end of its interval; it
        shares this view's boundary-free results (:attr:`BOUNDARY_FREE`, :meth:`memo`)."""
        other = dataclasses.replace(self, manual_boundary=int(step))  # the same _memo dict
        other.__dict__.update({k: v for k, v in self.__dict__.items() if k in self.BOUNDARY_FREE})
        return other

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per run for a result that does not depend on the boundary (e.g. the token account
        before its stage split), shared with every :meth:`with_boundary` copy."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @property
    def boundary(self) -> stages.StageBoundary | None:
        """The rising → plateau boundary, or None when the curves are too short (:attr:`boundary_reason`)."""
        return self._boundary[0]

    @property
    def boundary_reason(self) -> str:
        """Why there is no boundary ("" when there is one)."""
        return self._boundary[1]

    @property
    def boundary_step(self) -> int | None:
        return None if self.boundary is None else self.boundary.step

    @cached_property
    def delta_p_scope(self) -> DeltaPScope:
        """Which steps the plateau-stage Δp analyses use (:func:`delta_p_scope`)."""
        return delta_p_scope(self.updates if self.has_updates else None, self.boundary_step)

    def late_start(self, steps: pl.DataFrame | None = None) -> int | None:
        """First step of "late training": the boundary when the run has a training log and a boundary, else
        the median step of ``steps`` (default: the training log); None when there is neither."""
        if self.steps_table is None:
            return late_start(steps, None)
        return late_start(self.steps_table if steps is None else steps, self.boundary)

    # ---------------------------------------------------------------------------------------- interventions
    def interventions_path(self, path=None) -> Path | None:
        """``path`` when given (it must exist), else ``interventions.parquet`` in the store or its parent folder."""
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise UserError(f"--interventions {p}: no such file")
            return p
        return next((p for p in (self.path / INTERVENTIONS_FILE, self.path.parent / INTERVENTIONS_FILE)
                     if p.is_file()), None)


def source_curves(source) -> tuple[pl.DataFrame, str]:
    """The per-step curves of ``source`` for stage detection, and what they were read from.

    ``source``: a store folder (a training run, whose log and rollouts give the curves, or a sweep), a
    ``steps.parquet`` file, or a folder holding one.  Besides :func:`~entropy_lens.analysis.stages.step_curves`'
    columns, every numeric column of the training log is kept, so any logged metric can be segmented.
    """
    path = Path(source)
    if path.is_dir() and (path / "lens.json").is_file():
        view = RunView.open(path)
        curves, steps, what = view.curves, view.steps, f"store {path} ({view.kind})"
    else:
        file = path / "steps.parquet" if path.is_dir() else path
        if not file.is_file() or file.suffix != ".parquet":
            raise UserError(f"{source}: not a store, a steps.parquet file or a folder holding one; point at a "
                            "training run folder (`entropy-lens train --out RUN`), a store, or RUN/steps.parquet")
        try:
            steps = pl.scan_parquet(file)
            names = steps.collect_schema().names()
        except Exception as e:  # noqa: BLE001  (pyarrow / polars raise several types for a bad file)
            raise UserError(f"{file}: unreadable Parquet file ({str(e).splitlines()[0]})") from None
        if "step" not in names:
            raise UserError(f"{file}: no 'step' column; expected a training log with one row per step")
        curves, what = stages.step_curves(steps=steps), f"training log {file}"
    if steps is not None:
        schema = steps.collect_schema()
        extra = [c for c, t in schema.items() if c not in curves.columns and t.is_numeric()]
        if extra:
            curves = curves.join(steps.select(pl.col("step").cast(pl.Int64), *extra).collect(), on="step", how="left")
    return curves, what
