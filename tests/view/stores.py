"""A hand-built store for the explorer's tests: groups of mixed correctness, a vocabulary, optional updates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from entropy_lens.store import StoreWriter

VOCAB = ["3", "=", " so", " wait", " the", "x", "\\frac", " erot", "7", " then"]


def write_store(root: Path, *, n_steps: int = 4, n_prompts: int = 3, group: int = 4, length: int = 10,
                updates: bool = True, vocab: bool = True, seed: int = 0, kind: str = "sweep",
                steps: list[int] | None = None) -> Path:
    """Each step: ``n_prompts`` prompts × ``group`` responses of ``length`` tokens; entropy falls over steps and is
    higher in wrong responses; response text ``resp s{step} p{prompt} i{sample}`` so a test can find it.
    ``steps`` (default ``range(n_steps)``) are the step numbers written, ``kind`` the store's kind."""
    rng = np.random.default_rng(seed)
    steps = list(range(n_steps)) if steps is None else list(steps)
    with StoreWriter(root, kind=kind, settings={"test": "view", "seed": seed}) as w:
        for i, step in enumerate(steps):
            level = 0.4 + 2.0 * math.exp(-step / 1.5)
            tok = {k: [] for k in ("step", "prompt_id", "sample_id", "position", "rel_position", "token_id", "logprob",
                                   "entropy", "sum_p2", "sum_p2_logp", "varentropy")}
            smp, upd = [], []
            for p in range(n_prompts):
                for s in range(group):
                    ok = (s + p + step) % 2 == 0
                    ent = np.clip(level * (0.7 if ok else 1.3) + rng.normal(0, 0.1, length), 0.01, None)
                    probs = np.clip(np.exp(-ent) + rng.uniform(0, 0.1, length), 0.02, 0.98)
                    for t in range(length):
                        rest = (1 - probs[t]) / 4
                        for k, v in (("step", step), ("prompt_id", p), ("sample_id", s), ("position", t),
                                     ("rel_position", t / length), ("token_id", int(rng.integers(0, len(VOCAB)))),
                                     ("logprob", float(np.log(probs[t]))), ("entropy", float(ent[t])),
                                     ("sum_p2", float(probs[t] ** 2 + 4 * rest ** 2)),
                                     ("sum_p2_logp", float(probs[t] ** 2 * np.log(probs[t]) + 4 * rest ** 2 * np.log(rest))),
                                     ("varentropy", float(ent[t] / 2))):
                            tok[k].append(v)
                        pn = float(np.clip(probs[t] + (0.1 if ok else -0.1), 1e-3, 0.999))
                        upd.append(dict(step=step, next_step=steps[min(i + 1, len(steps) - 1)], prompt_id=p, sample_id=s, position=t,
                                        logprob_next=float(np.log(pn)), entropy_next=float(ent[t] * 0.9)))
                    smp.append(dict(step=step, prompt_id=p, sample_id=s, length=length, truncated=False,
                                    prompt=f"question {p}", text=f"resp s{step} p{p} i{s}", answer=str(p) if ok else "0",
                                    gold=str(p), format_ok=True, correct=ok, reward=1.0 if ok else -1.0,
                                    logppl=float(-np.mean(np.log(probs))), mean_entropy=float(ent.mean()),
                                    source="collect"))
            w.write_step(step, tokens=tok, samples={k: [r[k] for r in smp] for k in smp[0]})
            if updates and i < len(steps) - 1:
                w.write_step(step, updates={k: [r[k] for r in upd] for k in upd[0]})
        if vocab:
            w.write_table("vocab", {"token_id": list(range(len(VOCAB))), "token": VOCAB})
    return root
