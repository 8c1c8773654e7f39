"""Every shell command the READMEs document runs in a test, at a small size, so a wrong path or flag fails CI.

The commands are read from the READMEs themselves (:mod:`tests.markdown_commands`: each line of their shell
code blocks, and each inline code span that is a command or a flag) and looked up in :data:`COMMANDS`, which
says how each one is checked.  A command the READMEs have and the table lacks fails, and so does an entry no
README has any more, so the two cannot drift apart.  The kinds of entry:

* :class:`Cli` — an ``entropy-lens`` command.  Always: the subcommand exists, every ``--flag`` in it is one
  of that subcommand's option strings *exactly* (an abbreviation that argparse happens to accept is refused),
  every value shown parses (each of ``a|b|c`` too) and names a registered entry where the flag takes a
  registry name, the positional arguments are as many as the subcommand takes.  Runnable ones (``run=True``)
  then run in-process through ``entropy_lens.cli.main``, in a fake checkout (:func:`checkout`) with the
  layout ``make figures`` leaves; CAPS placeholders are bound to fixture paths (:data:`BIND`), the user's own
  paths in worked examples are built where the README says they are (``~`` and ``/...`` under the fake
  checkout's ``_root/``), small-size flags are appended after the README's own (argparse: the last one
  wins), and the command must exit 0 and write what it names (a store, with completed steps).
* :class:`Flags` — a flag named in prose (``--steps 100``): a real option of the subcommand(s) it belongs
  to, and its value parses.
* :class:`Make` — a ``make`` target: it exists, a README comment ``# = CMD`` is what its recipe runs, the
  recipe's commands name real modules and flags; ``make train`` runs its recipe's command at a small size;
  ``make figures`` / ``make test`` / ``make ppl-alpha`` are not run here (why is in their entries).
* :class:`Script` / :class:`Module` — ``python SCRIPT ...`` / ``python -m MODULE ...``: the file exists and
  its ``--help`` (in a subprocess) shows every flag the README passes; ``run=True`` runs it on the fixture
  (``analyses/stage_level.py STORE``, ``figures.fig1_stages``).
* :class:`Pip` — ``pip install -e .[X]``: pyproject.toml has the extra.
* :class:`External` — another project's tool; not run, with the reason.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.markdown_commands import Found, code_blocks, commands_in, read_makefile

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "data/README.md", "figures/README.md")
MAKEFILE = read_makefile(REPO / "Makefile")

# --------------------------------------------------------------------------------------------------------
# How commands are run: small sizes, placeholders, the fake checkout
# --------------------------------------------------------------------------------------------------------

#: Appended after the README's own flags (sizes and the device only: never a path, a dataset or a mode).
SMALL = {
    "train": ["--steps", "2", "--sft-steps", "2", "--sft-batch-size", "8", "--prompts-per-step", "2",
              "--group-size", "4", "--max-new-tokens", "16", "--overlong-buffer", "4", "--save-every", "2",
              "--eval-every", "2", "--eval-samples", "1", "--threads", "1"],
    "collect": ["--max-prompts", "2", "--samples-per-prompt", "2", "--max-new-tokens", "8", "--batch-size", "4",
                "--device", "cpu"],
    "score": ["--device", "cpu", "--batch-size", "8"],
    "intervene": ["--max-samples", "4", "--continuations", "1", "--n-boot", "20", "--device", "cpu"],
    "report": ["--n-boot", "50"],
}

BASELINE = "data/runs/demo/baseline"
SWEEP = f"{BASELINE}/sweep"
#: What each CAPS placeholder stands for in a runnable command (an entry's ``bind`` overrides these).
BIND = {"STORE": SWEEP, "RUN": BASELINE, "CHECKPOINTS": BASELINE, "EVAL": "arith", "STEP": "20",
        "RUN2": "data/runs/demo/run2", "RUN3": "data/runs/demo/run3"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(?::[A-Z][A-Z0-9_]*)*$")  # STORE, N, START:STOP:STEP
FAKE_ROOT = "_root"  # absolute paths of the README's examples live under CHECKOUT/_root
FAKE_HOME = f"{FAKE_ROOT}/home/user"

#: The fixture run, as `make figures` lays it out (figures/README.md) at a tiny size: the baseline trained
#: 30 steps with a checkpoint every 10 (the README branches from step_30), its sweep over every checkpoint.
TEMPLATE_TRAIN = ["train", "--out", BASELINE, *SMALL["train"], "--steps", "30", "--save-every", "10",
                  "--eval-every", "10"]
TEMPLATE_COLLECT = ["collect", BASELINE, "--dataset", "arith", "--out", SWEEP, "--max-prompts", "3",
                    "--samples-per-prompt", "2", "--max-new-tokens", "12", "--device", "cpu"]


def is_python(word: str) -> bool:
    return word in ("python", "python3") or word.startswith(".venv/bin/python")


def is_placeholder(word: str) -> bool:
    return bool(PLACEHOLDER.match(word))


def bind_word(word: str, bind: dict[str, str], checkout: Path) -> str:
    """A README word → the word the fixture runs: placeholders bound, ``~`` and absolute paths moved into the
    fake checkout (as a chroot would), everything else as written."""
    if word.startswith("~/"):
        return str(checkout / FAKE_HOME / word[2:])
    if word.startswith("/"):
        return str(checkout / FAKE_ROOT / word[1:])
    head, sep, tail = word.partition("/")
    if is_placeholder(head):
        if head not in bind:
            pytest.fail(f"placeholder {head} has no binding: add it to BIND or to the entry's bind")
        return bind[head] + sep + tail
    return word


# --------------------------------------------------------------------------------------------------------
# Kinds of entry
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    run: bool = True  # False: checked statically only
    mention: bool = False  # a prose mention: positional arguments may be left out
    setup: Callable[[Path], None] | None = None  # builds the user's paths the command names
    bind: dict[str, str] = field(default_factory=dict)
    creates: tuple[str, ...] | None = None  # paths it must write (placeholders bound); None: its --out
    expect: tuple[str, ...] = ()  # in its output
    reject: tuple[str, ...] = ()  # not in its output
    then: Callable[[Path], None] | None = None  # a further check, in the checkout
    why: str = ""  # why it is not run


@dataclass(frozen=True)
class Flags:
    subcommands: tuple[str, ...]


@dataclass(frozen=True)
class Make:
    run: bool = False  # run the recipe's entropy-lens command (small size)
    why: str = ""  # why it is not run


@dataclass(frozen=True)
class Script:
    path: str | None = None  # the script, when the README names it without its folder
    run: bool = False  # run it on the fixture (else: --help only)
    bind: dict[str, str] = field(default_factory=dict)
    expect: tuple[str, ...] = ()


@dataclass(frozen=True)
class Module:
    run: bool = False  # run it on the fixture (else: --help only)
    names: Callable[[], list[str]] | None = None  # what a NAME placeholder in the module stands for
    same_as_make: str | None = None  # the make target whose recipe this command is
    creates: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pip:
    pass


@dataclass(frozen=True)
class External:
    reason: str


# --------------------------------------------------------------------------------------------------------
# Fixtures for the README's worked examples: the user's own checkpoints and rollout dumps
# --------------------------------------------------------------------------------------------------------


def copy_checkpoint(checkout: Path, step: int, dest: Path) -> None:
    shutil.copytree(checkout / BASELINE / "checkpoints" / f"step_{step}", dest)


def swept_samples(checkout: Path, steps=(0, 10)):
    """The fixture sweep's responses at ``steps``: what a trainer would have dumped."""
    import entropy_lens
    import polars as pl

    samples = entropy_lens.open(checkout / SWEEP).samples.collect()
    return samples.filter(pl.col("step").is_in(list(steps))).sort("step", "prompt_id", "sample_id")


def verl_merged_run(checkout: Path) -> None:
    """`~/verl/checkpoints/qwen2.5-7b-grpo`: verl checkpoints after the model merger (steps 0, 10, 50, so
    `--steps 0:600:50` picks two), and `math500.jsonl`: data/examples/math-sample.jsonl."""
    root = checkout / FAKE_HOME / "verl/checkpoints/qwen2.5-7b-grpo"
    for step, src in ((0, 0), (10, 10), (50, 30)):
        copy_checkpoint(checkout, src, root / f"global_step_{step}" / "actor" / "huggingface")
    shutil.copy(checkout / "data/examples/math-sample.jsonl", checkout / "math500.jsonl")


def verl_rollouts(checkout: Path) -> None:
    """`/runs/math/checkpoints` (merged verl checkpoints 0, 10) and `/runs/math/rollouts` (its
    rollout_data_dir: `{step}.jsonl`, step = checkpoint + 1)."""
    from tests.capture.test_score_rollouts import write_verl

    root = checkout / FAKE_ROOT / "runs/math"
    for step in (0, 10):
        copy_checkpoint(checkout, step, root / "checkpoints" / f"global_step_{step}" / "actor" / "huggingface")
    write_verl(root / "rollouts", swept_samples(checkout))


def trl_output_dir(checkout: Path) -> None:
    """`trl_out`: a GRPOTrainer output dir, `checkpoint-N/` and `completions/completions_{step:05d}.parquet`."""
    from tests.capture.test_score_rollouts import write_trl

    for step in (0, 10):
        copy_checkpoint(checkout, step, checkout / "trl_out" / f"checkpoint-{step}")
    write_trl(checkout / "trl_out", swept_samples(checkout), messages=False)


def own_loop_dump(checkout: Path) -> None:
    """`ckpts/step_N` and `my_rollouts.jsonl` with the README's field names (question, completion, gold, r,
    iter)."""
    from tests.capture.test_score_rollouts import write_jsonl

    for step in (0, 10):
        copy_checkpoint(checkout, step, checkout / "ckpts" / f"step_{step}")
    rows = [{"question": r["prompt"], "completion": r["text"], "gold": r["gold"], "r": r["reward"],
             "iter": r["step"]} for r in swept_samples(checkout).iter_rows(named=True)]
    write_jsonl(checkout / "my_rollouts.jsonl", rows)


def python_blocks_read_the_store(checkout: Path) -> None:
    """The README's Python block reads the store its worked example wrote (`stores/qwen7b-grpo`)."""
    blocks = [b for b in code_blocks(REPO / "README.md", "python") if not is_trl_block(b)]
    assert blocks, "README.md has no ```python block any more; drop this check"
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md (python block)", "exec"), namespace)
        if "per_step" in namespace:
            assert len(namespace["per_step"]) > 0


def is_trl_block(block: str) -> bool:
    """The "In your TRL run" block: it names a Hub model and dataset, so it is checked by
    :func:`trl_run_store` (statically) rather than run."""
    return "entropy_lens.integrations.trl" in block


def trl_run_store(checkout: Path) -> None:
    """The README's TRL block is well formed (every keyword it passes LensGRPOTrainer and GRPOConfig exists, its
    shaper is registered), and ``trl_out/lens`` is a store written by a real tiny LensGRPOTrainer run."""
    import ast
    import inspect

    pytest.importorskip("trl")
    from trl import GRPOConfig, GRPOTrainer

    from entropy_lens.integrations.trl import LensGRPOTrainer
    from entropy_lens.train.config import SHAPERS
    from tests.integrations.test_trl import build, grpo_args

    (block,) = [b for b in code_blocks(REPO / "README.md", "python") if is_trl_block(b)]
    accepts = {"LensGRPOTrainer": set(inspect.signature(GRPOTrainer.__init__).parameters)
               | set(inspect.signature(LensGRPOTrainer.__init__).parameters),
               "GRPOConfig": set(inspect.signature(GRPOConfig).parameters)}
    calls = [n for n in ast.walk(ast.parse(block)) if isinstance(n, ast.Call) and getattr(n.func, "id", "") in accepts]
    assert {c.func.id for c in calls} == set(accepts)
    for c in calls:
        unknown = {k.arg for k in c.keywords} - accepts[c.func.id]
        assert not unknown, f"README's TRL block: {c.func.id} has no {sorted(unknown)}"
        for k in c.keywords:
            if k.arg == "shaping":
                SHAPERS.get(k.value.value)
    from entropy_lens.models import build_char_tokenizer
    from entropy_lens.tasks.arith import ALPHABET

    tok = build_char_tokenizer(ALPHABET)
    build(checkout / "trl_out", tok, args=grpo_args(checkout / "trl_out", max_steps=2),
          lens_store=checkout / "trl_out" / "lens", shaping="position").train()


def figure_scripts() -> list[str]:
    sys.path.insert(0, str(REPO))
    try:
        from figures.draw_all import FIGURE_SCRIPTS
    finally:
        sys.path.remove(str(REPO))
    return list(FIGURE_SCRIPTS)


# --------------------------------------------------------------------------------------------------------
# The table: every command the READMEs show → how it is checked
# --------------------------------------------------------------------------------------------------------

NOT_SCORED = ("NOT SCORED",)
COMMANDS: dict[str, object] = {
    # ---- README.md: two commands
    "make figures": Make(why="the whole 20-minute pipeline on the embedded default; not part of the test suite"),
    "time make figures": Make(why="as `make figures`"),
    "make test": Make(why="runs this test suite: CI's own job"),
    "pip install -e .[dev]": Pip(),
    "pip install entropy-lens": Pip(),
    "pip install entropy-lens[models]": Pip(),
    "python -m figures.make_all": Module(),
    # ---- collect
    "entropy-lens collect CHECKPOINTS --dataset EVAL --out STORE [--samples-per-prompt 8] [--max-new-tokens 128] "
    "[--temperature 1.0] [--top-p 1.0] [--seed 0] [--batch-size 64] [--device auto|cpu|cuda] "
    "[--steps START:STOP:STEP] [--backend static|hf|vllm|ray]": Cli(run=False, why="a synopsis; the examples below run"),
    "entropy-lens train": Cli(run=False, mention=True, why="a name in prose; train runs below"),
    "entropy-lens train --seed S --threads 1": Cli(run=False, mention=True, why="a pattern in prose (S a seed); "
                                                   "train runs below"),
    "--prompt-field": Flags(("collect", "score")),
    "--answer-field": Flags(("collect", "score")),
    "--no-chat-template": Flags(("collect",)),
    "--no-updates": Flags(("collect",)),
    "head -1 math500.jsonl": External("coreutils: shows the first row of the user's file (here it is "
                                      "data/examples/math-sample.jsonl, which the collect example below reads)"),
    "entropy-lens collect ~/verl/checkpoints/qwen2.5-7b-grpo --dataset math500.jsonl --prompt-field problem "
    "--answer-field solution --samples-per-prompt 8 --max-new-tokens 4096 --temperature 1.0 --steps 0:600:50 "
    "--device cuda --out stores/qwen7b-grpo":
        Cli(setup=verl_merged_run, expect=("collected 2 step(s) [0, 50]", "store: stores/qwen7b-grpo"),
            then=python_blocks_read_the_store),
    ".venv/bin/entropy-lens collect data/runs/demo/baseline --dataset arith --out data/runs/demo/sweep2 "
    "--samples-per-prompt 4 --max-prompts 16 --max-new-tokens 64": Cli(),
    # ---- train
    "make train": Make(run=True),
    "entropy-lens train --out RUN2 --shaping position --from data/runs/demo/baseline/checkpoints/step_30 "
    "--steps 60": Cli(creates=("RUN2/checkpoints/step_32",)),
    "entropy-lens train --out RUN3 --shaping ppl": Cli(creates=("RUN3/checkpoints/step_2",)),
    "entropy-lens ls": Cli(expect=("tasks: ", "backends: ", "shapers: ", "stage detectors: ")),
    "--threads": Flags(("train",)),
    "--score-after-update": Flags(("train",)),
    "--from MODEL --device cuda": Flags(("train",)),
    "entropy-lens collect RUN": Cli(creates=("data/runs/sweep",)),  # "sweeps with no extra flags": --out's default
    "make ppl-alpha": Make(why="trains three more runs (12 minutes); its recipe's module and flags are checked"),
    # ---- stages
    "entropy-lens stages": Cli(run=False, mention=True, why="a name in prose; stages runs below"),
    "entropy-lens stages RUN [--detector segmented] [--column entropy] [--json]":
        Cli(expect=('"detector": "segmented"', '"column": "entropy"', '"ci": ['), creates=()),
    "--json": Flags(("stages",)),
    "--column": Flags(("stages",)),
    # ---- analyses
    "entropy-lens report STORE [--train-run RUN] [--boundary STEP]": Cli(creates=("STORE/report/REPORT.md",)),
    # ---- view
    "entropy-lens view data/runs/demo/baseline/sweep --train-run data/runs/demo/baseline":
        Cli(expect=("view.html: showing ",), creates=("data/runs/demo/baseline/sweep/view.html",)),
    "entropy-lens view STORE [--train-run RUN] [--out FILE.html] [--samples-per-step N] [--max-mb M] [--seed S]":
        Cli(run=False, why="a synopsis; the example above it runs"),
    "entropy-lens view": Cli(run=False, mention=True, why="a name in a heading; the example below runs"),
    "--max-mb": Flags(("view",)),
    # ---- in your TRL run
    "pip install -e .[trl]": Pip(),
    "entropy-lens report trl_out/lens": Cli(setup=trl_run_store, creates=("trl_out/lens/report/REPORT.md",)),
    "python benchmarks/bench_trl_capture.py": Script(),
    "bench_trl_capture.py": Script(path="benchmarks/bench_trl_capture.py"),
    # ---- README.md: in your verl run
    "pip install -e .[verl]": Pip(),
    "export VERL_USE_EXTERNAL_MODULES=entropy_lens.integrations.verl": External(
        "sets the variable verl reads; tests/integrations/test_verl.py imports verl with it set and finds the "
        "plugins through verl's own lookups"),
    "python3 -m verl.trainer.main_ppo algorithm.adv_estimator=entropy_lens_position actor_rollout_ref.rollout.n=8 "
    "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla +algorithm.entropy_lens.position_alpha=0.1 "
    "trainer.rollout_data_dir=/runs/math/rollouts data.max_response_length=4096 "
    "trainer.default_local_dir=/runs/math/checkpoints": External(
        "verl's trainer (a Ray cluster with GPUs, not a dependency); the estimator it names and the "
        "algorithm.entropy_lens config run through verl's own compute_advantage in tests/integrations/test_verl.py"),
    "entropy-lens intervene STORE": Cli(creates=("STORE/interventions.parquet",)),
    "python analyses/stage_level.py STORE": Script(run=True, expect=("stage boundary:", "== A. polarity_entropy")),
    # ---- score
    "entropy-lens score": Cli(run=False, mention=True, why="a name in prose; score runs below"),
    "entropy-lens score CHECKPOINTS --rollouts PATH --out STORE [--format verl|trl|jsonl] [--prompt-field F] "
    "[--response-field F] [--answer-field F] [--reward-field F] [--step-field F] "
    "[--match latest-before|nearest|exact] [--policy-lag N] [--max-response-tokens N] [--skip-bad-rows]":
        Cli(run=False, why="a synopsis; the three examples below run"),
    "--match latest-before": Flags(("score",)),
    "--policy-lag": Flags(("score",)),
    "--max-response-tokens": Flags(("score",)),
    "--skip-bad-rows": Flags(("score",)),
    "python -m verl.model_merger merge --backend fsdp ...": External("verl's model merger (verl is not a "
                                                                     "dependency); the fixture writes its "
                                                                     "output layout, global_step_N/actor/"
                                                                     "huggingface, directly"),
    "entropy-lens score /runs/math/checkpoints --rollouts /runs/math/rollouts --out /runs/math/rescored "
    "--max-response-tokens 4096": Cli(setup=verl_rollouts, expect=("scored 2 step(s) of verl rollouts",),
                                      reject=NOT_SCORED),
    "--rollouts": Flags(("score",)),
    "--reward-field": Flags(("score",)),
    "entropy-lens score trl_out --rollouts trl_out --out trl_out/rescored --max-response-tokens 1024":
        Cli(setup=trl_output_dir, expect=("scored 2 step(s) of trl rollouts",), reject=NOT_SCORED),
    "entropy-lens score ckpts --rollouts my_rollouts.jsonl --out rescored --prompt-field question "
    "--response-field completion --answer-field gold --reward-field r --step-field iter --chat-template":
        Cli(setup=own_loop_dump, expect=("scored 2 step(s) of jsonl rollouts",), reject=NOT_SCORED),
    "--chat-template": Flags(("collect", "score")),
    # ---- the store, scale, benchmarks, layout
    "entropy-lens validate STORE": Cli(expect=("sweep store",)),
    "--backend vllm": Flags(("collect",)),
    "pip install -e .[vllm]": Pip(),
    "--backend ray --workers N": Flags(("collect",)),
    "pip install -e .[ray]": Pip(),
    "benchmarks/bench_ops.py": Script(),
    "benchmarks/bench_ops.py --routes logits logits-v1": Script(path="benchmarks/bench_ops.py"),
    "bench_train.py": Script(path="benchmarks/bench_train.py"),
    "bench_train.py --vs-trl": Script(path="benchmarks/bench_train.py"),
    "bench_collect.py --vocab 151936": Script(path="benchmarks/bench_collect.py"),
    "bench_analysis.py --rows 1e8": Script(path="benchmarks/bench_analysis.py"),
    "gpu_check.sh": Script(path="benchmarks/gpu_check.sh"),
    "bench_decoders.py": Script(path="benchmarks/bench_decoders.py"),
    "check_two_stages.py": Script(path="benchmarks/check_two_stages.py"),
    "python benchmarks/check_two_stages.py RUN ...": Script(path="benchmarks/check_two_stages.py"),
    "python -m figures.NAME": Module(names=figure_scripts),
    # ---- data/README.md
    "--dataset": Flags(("collect", "intervene")),
    "--dataset data/evalsets/arith.jsonl": Flags(("collect",)),
    "--dataset arith": Flags(("collect", "intervene")),
    "--dataset FILE": Flags(("collect",)),
    "entropy-lens collect --dataset FILE": Cli(run=False, mention=True, why="a name in prose"),
    "entropy-lens collect CHECKPOINTS --dataset data/examples/math-sample.jsonl --prompt-field problem "
    "--answer-field solution --out STORE": Cli(bind={"STORE": "stores/math-sample"}),
    # ---- figures/README.md
    ".venv/bin/python -m figures.fig1_stages --run data/runs/demo [--out figures/out]":
        Module(run=True, creates=("figures/out/fig1_entropy_accuracy.png",)),
    ".venv/bin/python -m figures.make_all --run data/runs/demo": Module(same_as_make="figures"),
    "entropy-lens report": Cli(run=False, mention=True, why="a name in prose"),
    "entropy-lens report SWEEP --train-run BASELINE": Cli(run=False, why="prose; the README's report runs"),
    "entropy-lens report STORE [--train-run RUN] [--out DIR]": Cli(run=False, why="prose; the README's report "
                                                                                  "runs"),
}


# --------------------------------------------------------------------------------------------------------
# The READMEs and the table agree
# --------------------------------------------------------------------------------------------------------


def documented() -> list[Found]:
    return [f for doc in DOCS for f in commands_in(REPO / doc, REPO)]


def test_every_documented_command_has_an_entry():
    missing = [f for f in documented() if f.text not in COMMANDS]
    assert not missing, "\n".join(f"{f}: README command has no test; add it to COMMANDS in "
                                  "tests/test_readme_commands.py" for f in missing)


def test_every_entry_is_still_documented():
    texts = {f.text for f in documented()}
    stale = [t for t in COMMANDS if t not in texts]
    assert not stale, "\n".join(f"`{t}`: in COMMANDS but in none of {', '.join(DOCS)} any more; update or drop "
                                "its entry in tests/test_readme_commands.py" for t in stale)


SAMPLE_MD = """\
# Title

Run `entropy-lens ls` or, wrapped, `entropy-lens validate
STORE`; flags: `--no-updates`; not commands: `step_N/`, `entropy_lens.open(RUN)`.

```bash
make train        # = entropy-lens train --out data/runs/demo/baseline
entropy-lens collect data/runs/demo/baseline --dataset "my file.jsonl" \\
    --out STORE   # a comment
# a comment line
```

    entropy-lens score CHECKPOINTS --rollouts PATH --out STORE
        [--format verl|trl] [--skip-bad-rows]

    {"prompt": "What is 1+1?", "answer": "2"}

```console
$ entropy-lens ls
tasks: arith
```

```python
import entropy_lens
```

```
RUN/
  baseline/    a tree, not commands
```
"""


def test_extraction_sees_what_a_reader_copies(tmp_path):
    """Continuations joined (backslashes and wrapped synopses), comments dropped and kept aside, JSON rows,
    console output, Python and plain-text blocks left out, wrapped inline spans found."""
    (tmp_path / "X.md").write_text(SAMPLE_MD)
    found = commands_in(tmp_path / "X.md", tmp_path)
    assert [(f.text, f.where, f.line) for f in found] == [
        ("entropy-lens ls", "inline", 3),
        ("entropy-lens validate STORE", "inline", 3),
        ("--no-updates", "inline", 4),
        ("make train", "block", 7),
        ("entropy-lens collect data/runs/demo/baseline --dataset 'my file.jsonl' --out STORE", "block", 8),
        ("entropy-lens score CHECKPOINTS --rollouts PATH --out STORE [--format verl|trl] [--skip-bad-rows]",
         "block", 13),
        ("entropy-lens ls", "block", 19),
    ]
    assert found[3].comment == "= entropy-lens train --out data/runs/demo/baseline"


# --------------------------------------------------------------------------------------------------------
# entropy-lens: flags and values, statically
# --------------------------------------------------------------------------------------------------------


def subparsers() -> dict[str, argparse.ArgumentParser]:
    from entropy_lens.cli import build_parser, commands

    parser = build_parser(commands())
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _device_ok(value: str) -> None:
    import torch

    from entropy_lens.models import resolve_device

    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: True  # a value the README shows must be accepted on a machine with CUDA
    try:
        resolve_device(value)
    finally:
        torch.cuda.is_available = real


def _registry(module: str, name: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        import importlib

        registry = getattr(importlib.import_module(module), name)
        assert value in registry, f"{value!r} is not a registered name ({', '.join(registry.names())})"

    return check


def _dataset_ok(value: str) -> None:
    from entropy_lens.tasks import TASKS

    if value in TASKS:
        return
    assert value.endswith((".jsonl", ".parquet")), f"{value!r}: neither a task ({', '.join(TASKS.names())}) nor a file"
    if "/" in value and (REPO / value.split("/")[0]).is_dir():  # a path into the repository must exist
        assert (REPO / value).is_file(), f"{value}: no such file in the repository"


def _steps_ok(value: str) -> None:
    from entropy_lens.checkpoints import parse_steps

    parse_steps(value)


#: (subcommand or "*", dest) → a check of a value beyond argparse's type and choices.
VALUE_CHECKS: dict[tuple[str, str], Callable[[str], None]] = {
    ("*", "device"): _device_ok,
    ("*", "backend"): _registry("entropy_lens.capture.backends", "BACKENDS"),
    ("*", "dataset"): _dataset_ok,
    ("train", "shaping"): _registry("entropy_lens.train.config", "SHAPERS"),
    ("score", "format"): _registry("entropy_lens.capture.rollouts", "ROLLOUT_FORMATS"),
    ("score", "match"): _registry("entropy_lens.capture.rollouts", "MATCH_RULES"),
    ("report", "detector"): _registry("entropy_lens.analysis.stages", "STAGE_DETECTORS"),
    ("collect", "steps"): _steps_ok,
}


def check_value(sub: str, action: argparse.Action, value: str, text: str) -> None:
    for alt in value.split("|"):
        try:
            if action.type is not None:
                action.type(alt)
            if action.choices is not None:
                assert alt in action.choices, f"not one of {action.choices}"
            check = VALUE_CHECKS.get((sub, action.dest)) or VALUE_CHECKS.get(("*", action.dest))
            if check:
                check(alt)
        except Exception as e:  # noqa: BLE001 - any failure is the README's value being wrong
            pytest.fail(f"`{text}`: {action.option_strings[0]} {alt!r} is not accepted by entropy-lens {sub}: {e}")


def check_cli_words(sub: str, words: list[str], text: str, *, mention: bool) -> None:
    """``words`` (after the subcommand; ``[...]`` optional parts allowed) against the subcommand's parser."""
    parsers = subparsers()
    assert sub in parsers, f"`{text}`: entropy-lens has no subcommand {sub!r} (it has {', '.join(parsers)})"
    p = parsers[sub]
    options = {s: a for a in p._actions for s in a.option_strings}
    positionals = [a for a in p._actions if not a.option_strings]
    words = [w.strip("[]") for w in words if w.strip("[]")]
    n_pos, i = 0, 0
    while i < len(words):
        w = words[i]
        if w.startswith("-"):
            flag, eq, inline = w.partition("=")
            assert flag in options, (f"`{text}`: {flag} is not a flag of entropy-lens {sub} (its flags: "
                                     f"{', '.join(sorted(s for s in options if s.startswith('--')))})")
            action = options[flag]
            if action.nargs == 0:
                assert not eq, f"`{text}`: {flag} takes no value"
            else:
                if eq:
                    value = inline
                elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                    i += 1
                    value = words[i]
                else:  # a flag named in prose, without its value
                    assert mention, f"`{text}`: {flag} needs a value"
                    value = None
                if value is not None and not is_placeholder(value) and value != "...":
                    check_value(sub, action, value, text)
        else:
            n_pos += 1
        i += 1
    if mention:
        assert n_pos <= len(positionals), f"`{text}`: entropy-lens {sub} takes {len(positionals)} positional(s)"
    else:
        assert n_pos == len(positionals), (f"`{text}`: entropy-lens {sub} takes {len(positionals)} positional "
                                           f"argument(s) ({', '.join(a.dest for a in positionals)}), not {n_pos}")
        shown = {w.partition("=")[0] for w in words}
        required = [a for a in p._actions if a.required and a.option_strings]
        for a in required:
            assert shown & set(a.option_strings), f"`{text}`: leaves out {a.option_strings[0]}, which is required"


def program_ok(word: str, text: str) -> None:
    """``.venv/bin/X`` is what `make setup` makes: the Makefile's venv is .venv, and X is installed there."""
    if word.startswith(".venv/bin/"):
        assert MAKEFILE.variables.get("VENV") == ".venv", f"`{text}`: the Makefile's venv is not .venv"
        if sys.prefix != sys.base_prefix:  # running in a virtual environment: the program is in it
            name = word.removeprefix(".venv/bin/")
            assert (Path(sys.prefix) / "bin" / name).exists(), f"`{text}`: {name} is not installed in {sys.prefix}"


def test_small_flags_are_sizes_only():
    """What the test appends changes sizes and the device, never a path, a dataset or a mode: the point is
    to run the README's paths and choices as written."""
    for sub, flags in SMALL.items():
        check_cli_words(sub, flags, f"SMALL[{sub!r}]", mention=True)
        for flag, value in zip(flags[::2], flags[1::2]):
            assert re.fullmatch(r"\d+(\.\d+)?", value) or (flag, value) == ("--device", "cpu"), (sub, flag, value)


def test_entropy_lens_is_the_cli():
    """`entropy-lens` (the console script) and `python -m entropy_lens` (the Makefile's) both run cli.main."""
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^entropy-lens\s*=\s*"entropy_lens\.cli:main"', pyproject, flags=re.M)
    main_py = (REPO / "entropy_lens/__main__.py").read_text()
    assert "from entropy_lens.cli import main" in main_py and "main()" in main_py


# --------------------------------------------------------------------------------------------------------
# Fixtures: the fake checkout, the tiny trainer, the --help texts
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minuscule_trainer():
    """As tests/test_pipeline_e2e.py: a width-32 model and a verifier that calls even-length responses
    correct, so a random model's groups are mixed and every step trains."""
    from entropy_lens.models import TinyModelConfig, build_tiny_model
    from entropy_lens.tasks import Verdict
    from entropy_lens.train import grpo

    small = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                            max_positions=64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(grpo, "build_tiny_model", lambda tok, seed=0: build_tiny_model(tok, small, seed=seed))
        mp.setattr(grpo, "verify", lambda response, gold: Verdict(
            answer=None, format_ok=len(response) % 2 == 0, correct=len(response) % 2 == 0,
            reward=1.0 if len(response) % 2 == 0 else -1.0))
        yield


def help_argv(entry, words: list[str]) -> list[str] | None:
    """``python ...`` argv (after the interpreter) whose ``--help`` an entry checks, or None."""
    if isinstance(entry, Script):
        path = entry.path or (words[1] if is_python(words[0]) else words[0])
        return None if path.endswith(".sh") else [path]
    if isinstance(entry, Module):
        mod = words[words.index("-m") + 1]
        return None if "NAME" in mod else ["-m", mod]
    return None


def make_modules(target: str) -> list[list[str]]:
    """The ``python -m MOD ARGS...`` lines of a make target's recipe, as [MOD, *ARGS]."""
    py = MAKEFILE.variables["PY"]
    out = []
    for line in MAKEFILE.recipes.get(target, []):
        words = shlex.split(line)
        if words[:2] == [py, "-m"]:
            out.append(words[2:])
    return out


@pytest.fixture(scope="module")
def helps():
    """``--help`` of every script and module the READMEs name, started at once, in the repository."""
    argvs = set()
    for text, entry in COMMANDS.items():
        argv = help_argv(entry, shlex.split(text))
        if argv:
            argvs.add(tuple(argv))
        if isinstance(entry, Make):
            words = shlex.split(text)
            argvs |= {("-m", m[0]) for m in make_modules(words[-1]) if (REPO / m[0].split(".")[0]).is_dir()
                      and m[0] != "entropy_lens"}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = {a: subprocess.Popen([sys.executable, *a, "--help"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for a in sorted(argvs)}

    def get(argv: list[str], text: str) -> str:
        proc = procs[tuple(argv)]
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"`{text}`: python {' '.join(argv)} --help exited {proc.returncode}\n{out[-2000:]}"
        return out

    yield get
    for p in procs.values():
        if p.poll() is None:
            p.kill()


def _copy_repo_dir(name: str, dest: Path) -> None:
    shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "out", "runs"))


@pytest.fixture(scope="module")
def template(tmp_path_factory, minuscule_trainer, helps) -> Path:
    """A checkout as `make figures` leaves it, at a tiny size: the repository's data/, analyses/, figures/
    and benchmarks/, and data/runs/demo/baseline (a training run, checkpoints/step_{0,10,20,30}) with its
    sweep.  Built with relative paths from its root, as make_all does, so a copy is a checkout too.
    (``helps`` first: its interpreters start while this trains.)"""
    from entropy_lens.cli import main

    root = tmp_path_factory.mktemp("checkout")
    for name in ("data", "analyses", "figures", "benchmarks"):
        _copy_repo_dir(name, root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(TEMPLATE_TRAIN) == 0
        assert main(TEMPLATE_COLLECT) == 0
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def checkout(template, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the template checkout, as the working directory."""
    root = tmp_path / "checkout"
    shutil.copytree(template, root, symlinks=True)
    monkeypatch.chdir(root)
    return root


# --------------------------------------------------------------------------------------------------------
# The checks, by kind
# --------------------------------------------------------------------------------------------------------


def run_cli(words: list[str], entry: Cli, text: str, checkout: Path, capsys) -> None:
    from entropy_lens.cli import main
    from entropy_lens.store import open_store

    if entry.setup:
        entry.setup(checkout)
    bind = {**BIND, **entry.bind}
    argv = [bind_word(w.strip("[]"), bind, checkout) for w in words if w.strip("[]")]
    sub = argv[0]
    capsys.readouterr()
    try:
        code = main([*argv, *SMALL.get(sub, [])])
    except SystemExit as e:  # argparse's --help exits
        code = e.code
    out, err = capsys.readouterr()
    assert code == 0, f"`{text}` exited {code}:\n{err[-3000:]}"
    for s in entry.expect:
        assert s in out, f"`{text}`: {s!r} not in its output:\n{out[-3000:]}"
    for s in entry.reject:
        assert s not in out, f"`{text}`: {s!r} in its output:\n{out[-3000:]}"
    if entry.creates is not None:
        creates = [bind_word(c, bind, checkout) for c in entry.creates]
    else:
        outs = [argv[i + 1] for i, w in enumerate(argv[:-1]) if w == "--out"]
        creates = outs[-1:]
    for path in creates:
        p = checkout / path
        assert p.exists(), f"`{text}` did not write {path}"
        if (p / "lens.json").is_file():
            assert open_store(p).completed_steps, f"`{text}`: {path} has no completed step"
    if entry.then:
        entry.then(checkout)


def check_cli(text: str, entry: Cli, request, capsys) -> None:
    words = shlex.split(text)
    program_ok(words[0], text)
    assert words[0] in ("entropy-lens", ".venv/bin/entropy-lens")
    check_cli_words(words[1], words[2:], text, mention=entry.mention)
    if not entry.run:
        assert entry.why, f"`{text}`: an entry that is not run says why"
        return
    run_cli(words[1:], entry, text, request.getfixturevalue("checkout"), capsys)


def check_flags(text: str, entry: Flags) -> None:
    for sub in entry.subcommands:
        check_cli_words(sub, shlex.split(text), text, mention=True)


def check_make(text: str, entry: Make, request, capsys) -> None:
    words = shlex.split(text)
    if words[0] == "time":
        words = words[1:]
    assert words[0] == "make" and len(words) == 2, f"`{text}`: expected `make TARGET`"
    target = words[1]
    assert target in MAKEFILE.recipes, f"`{text}`: the Makefile has no target {target!r}"
    comments = [f.comment for f in documented() if f.text == text and f.comment.startswith("=")]
    lines = make_modules(target)
    assert lines or target == "setup", f"`{text}`: its recipe runs no `$(PY) -m MODULE` command"
    for claim in comments:  # `make train  # = entropy-lens train --out ...`
        claimed = shlex.split(claim.removeprefix("=").strip())
        as_user = [["entropy-lens", *m[1:]] if m[0] == "entropy_lens" else ["python", "-m", *m] for m in lines]
        assert claimed in as_user, f"`{text}`: the README says it is `{claim[1:].strip()}`; its recipe runs " + \
            "; ".join(" ".join(u) for u in as_user)
    for mod, *args in lines:
        if mod == "entropy_lens":
            check_cli_words(args[0], args[1:], f"make {target}: {' '.join(args)}", mention=False)
        elif (REPO / mod.split(".")[0]).is_dir():
            help_text = request.getfixturevalue("helps")(["-m", mod], text)
            for flag in (a.partition("=")[0] for a in args if a.startswith("--")):
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), \
                    f"make {target}: python -m {mod} has no {flag}"
    if not entry.run:
        assert entry.why, f"`{text}`: an entry that is not run says why"
        return
    for mod, *args in lines:
        assert mod == "entropy_lens", f"make {target}: only entropy-lens recipes are run here"
        # in a checkout as a fresh clone has it: no run yet (make train is the first thing one may run)
        checkout = request.getfixturevalue("checkout")
        shutil.rmtree(checkout / "data/runs")
        out = [args[i + 1] for i, w in enumerate(args[:-1]) if w == "--out"]
        run_cli(args, Cli(creates=(f"{out[-1]}/checkpoints/step_2",) if out else None), f"make {target}",
                checkout, capsys)


def check_help_flags(argv: list[str], words: list[str], help_text: str, text: str) -> None:
    for w in words:
        flag = w.strip("[]").partition("=")[0]
        if flag.startswith("--"):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), \
                f"`{text}`: python {' '.join(argv)} has no {flag} (its --help:\n{help_text})"


def _run_python(argv: list[str], checkout: Path, text: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, *argv], cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"`{text}` exited {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}"
    return r.stdout


def check_script(text: str, entry: Script, request) -> None:
    words = shlex.split(text)
    if is_python(words[0]):
        program_ok(words[0], text)
        words = words[1:]
    path = entry.path or words[0]
    assert (REPO / path).is_file(), f"`{text}`: {path} does not exist"
    if path.endswith(".sh"):
        r = subprocess.run(["bash", "-n", str(REPO / path)], capture_output=True, text=True)
        assert r.returncode == 0, f"`{text}`: bash -n {path}: {r.stderr}"
    else:
        check_help_flags([path], words[1:], request.getfixturevalue("helps")([path], text), text)
    if entry.run:
        checkout = request.getfixturevalue("checkout")
        bind = {**BIND, **entry.bind}
        out = _run_python([path, *[bind_word(w, bind, checkout) for w in words[1:]]], checkout, text)
        for s in entry.expect:
            assert s in out, f"`{text}`: {s!r} not in its output:\n{out[-3000:]}"


def check_module(text: str, entry: Module, request) -> None:
    words = shlex.split(text)
    program_ok(words[0], text)
    assert is_python(words[0])
    assert words[1] == "-m", f"`{text}`: expected python -m MODULE"
    mod = words[2]
    if entry.names:  # python -m figures.NAME
        names = entry.names()
        assert names
        for name in names:
            path = REPO / (mod.replace("NAME", name).replace(".", "/") + ".py")
            assert path.is_file(), f"`{text}`: {path.relative_to(REPO)} does not exist"
            assert re.search(r'^if __name__ == "__main__":', path.read_text(), flags=re.M), \
                f"`{text}`: {path.relative_to(REPO)} cannot be run as a module"
        return
    assert (REPO / (mod.replace(".", "/") + ".py")).is_file(), f"`{text}`: no module {mod} in the repository"
    check_help_flags(["-m", mod], words[3:], request.getfixturevalue("helps")(["-m", mod], text), text)
    if entry.same_as_make:
        recipes = [["python", "-m", *m] for m in make_modules(entry.same_as_make)]
        assert ["python", *words[1:]] in recipes, f"`{text}`: `make {entry.same_as_make}` runs {recipes}"
    if entry.run:
        checkout = request.getfixturevalue("checkout")
        _run_python([w.strip("[]") for w in words[1:] if w.strip("[]")], checkout, text)
        for path in entry.creates:
            assert (checkout / path).exists(), f"`{text}` did not write {path}"


def check_pip(text: str) -> None:
    m = re.fullmatch(r"pip install (?:-e \.|entropy-lens)(?:\[([\w,-]+)\])?", text)
    assert m, f"`{text}`: expected pip install -e .[EXTRA] or pip install entropy-lens[EXTRA]"
    if m.group(1) is None:
        return
    pyproject = (REPO / "pyproject.toml").read_text()
    extras = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?:^\[|\Z)", pyproject, flags=re.M | re.S)
    names = re.findall(r"^([\w-]+)\s*=", extras.group(1), flags=re.M) if extras else []
    for extra in m.group(1).split(","):
        assert extra in names, f"`{text}`: pyproject.toml has no extra {extra!r} (it has {', '.join(names)})"


#: Commands these checks must refuse, and what the failure says: the README's old wrong path, an abbreviated
#: or misspelt flag, a value no registry has, a required flag left out, a checkpoint that does not exist.
ROT = {
    "entropy-lens collect data/runs/demo --dataset arith --out data/runs/demo/sweep2 --samples-per-prompt 4":
        (Cli(), "data/runs/demo: no checkpoints found"),
    "entropy-lens collect CHECKPOINTS --dataset EVAL --out STORE [--max-new 64]":
        (Cli(run=False, why="-"), "--max-new is not a flag of entropy-lens collect"),
    "--no-update": (Flags(("collect",)), "--no-update is not a flag of entropy-lens collect"),
    "entropy-lens collect CHECKPOINTS --dataset EVAL --out STORE [--device gpu]":
        (Cli(run=False, why="-"), "--device 'gpu' is not accepted"),
    "entropy-lens collect CHECKPOINTS --dataset aritm --out STORE": (Cli(run=False, why="-"), "'aritm': neither"),
    "entropy-lens score CHECKPOINTS --rollouts PATH --out STORE [--format verl|openrlhf]":
        (Cli(run=False, why="-"), "--format 'openrlhf' is not accepted"),
    "entropy-lens score CHECKPOINTS --out STORE": (Cli(run=False, why="-"), "leaves out --rollouts"),
    "entropy-lens collect CHECKPOINTS STORE": (Cli(run=False, why="-"), "takes 1 positional argument(s)"),
    "entropy-lens train --out RUN2 --shaping position --from data/runs/demo/baseline/checkpoints/step_35":
        (Cli(), "step_35"),
}


@pytest.mark.parametrize("text", list(ROT), ids=[t if len(t) < 60 else t[:57] + "..." for t in ROT])
def test_the_checks_catch_rot(text, request, capsys):
    entry, says = ROT[text]
    with pytest.raises((AssertionError, pytest.fail.Exception)) as caught:
        check_cli(text, entry, request, capsys) if isinstance(entry, Cli) else check_flags(text, entry)
    assert says in str(caught.value)


@pytest.mark.parametrize("text", list(COMMANDS), ids=[t if len(t) < 60 else t[:57] + "..." for t in COMMANDS])
def test_readme_command(text, request, capsys):
    entry = COMMANDS[text]
    if isinstance(entry, Cli):
        check_cli(text, entry, request, capsys)
    elif isinstance(entry, Flags):
        check_flags(text, entry)
    elif isinstance(entry, Make):
        check_make(text, entry, request, capsys)
    elif isinstance(entry, Script):
        check_script(text, entry, request)
    elif isinstance(entry, Module):
        check_module(text, entry, request)
    elif isinstance(entry, Pip):
        check_pip(text)
    elif isinstance(entry, External):
        assert entry.reason
    else:
        pytest.fail(f"unknown kind {entry!r}")
