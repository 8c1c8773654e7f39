"""Checkpoint discovery: find the model folders of a training run and order them by step.

Layouts recognised (``N`` is the training step):

* ``DIR`` itself is one HF model folder (``config.json`` + weights) — step from its name if it has one, else 0;
* ``checkpoint-N/`` — TRL, the HF Trainer;
* ``global_step_N/actor/huggingface/`` — verl after its model merge (``global_step_N/actor`` also accepted
  when it holds the HF files directly);
* ``step_N/`` or ``step-N/`` — the embedded trainer and many hand-rolled loops;
* any of these under ``DIR/checkpoints/`` (an ``entropy-lens train`` run folder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from entropy_lens.errors import UserError

_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_STEP_DIR = re.compile(r"^(?:checkpoint-|global_step_|step_|step-)(\d+)$")
_SUBDIRS = ("", "actor/huggingface", "actor", "huggingface")
LAYOUTS = ("an HF model folder (config.json + model.safetensors)", "checkpoint-N/ (TRL, HF Trainer)",
           "global_step_N/actor/huggingface/ (verl, merged)", "step_N/ or step-N/", "any of these under checkpoints/")


@dataclass(frozen=True, order=True)
class Checkpoint:
    step: int
    path: Path


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / w).exists() for w in _WEIGHTS)


def step_of(name: str) -> int | None:
    m = _STEP_DIR.match(name)
    return int(m.group(1)) if m else None


def discover(root: str | Path) -> list[Checkpoint]:
    """All checkpoints under ``root``, sorted by step; a :class:`UserError` listing the layouts if none."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such checkpoint folder; check the path")
    if is_model_dir(root):
        return [Checkpoint(step_of(root.name) or 0, root)]
    for base in (root, root / "checkpoints"):
        found: dict[int, Path] = {}
        for child in sorted(base.iterdir()) if base.is_dir() else []:
            step = step_of(child.name)
            if step is None or not child.is_dir():
                continue
            model_dir = next((child / s for s in _SUBDIRS if is_model_dir(child / s)), None)
            if model_dir is None:
                raise UserError(f"{child}: a checkpoint folder with no HF model files (config.json + weights) "
                                "in it or in actor/huggingface/; for verl, run its model merger first")
            if step in found:
                raise UserError(f"{root}: two checkpoints for step {step} ({found[step]} and {model_dir}); "
                                "keep one")
            found[step] = model_dir
        if found:
            return [Checkpoint(s, p) for s, p in sorted(found.items())]
    raise UserError(f"{root}: no checkpoints found; looked for " + "; ".join(LAYOUTS))


def parse_steps(spec: str | None) -> slice | None:
    """``"START:STOP:STEP"`` (each part optional, STOP inclusive) → a filter; never ``eval``."""
    if spec is None:
        return None
    parts = spec.split(":")
    if len(parts) > 3 or not all(p.strip().isdigit() or p.strip() == "" for p in parts):
        raise UserError(f"--steps {spec!r}: expected START:STOP:STEP with non-negative integers, e.g. 0:200:20")
    nums = [int(p) if p.strip() else None for p in parts] + [None] * (3 - len(parts))
    if len(parts) == 1 and nums[0] is not None:
        return slice(nums[0], nums[0], None)
    return slice(*nums)


def select(checkpoints: list[Checkpoint], steps: slice | None) -> list[Checkpoint]:
    """Keep checkpoints whose step is within [start, stop] and, if a stride is given, ``(step-start) % stride == 0``."""
    if steps is None:
        return checkpoints
    lo = steps.start or 0
    out = [c for c in checkpoints if c.step >= lo and (steps.stop is None or c.step <= steps.stop)
           and (not steps.step or (c.step - lo) % steps.step == 0)]
    if not out:
        raise UserError(f"--steps selects none of the checkpoints (steps found: {[c.step for c in checkpoints]})")
    return out
