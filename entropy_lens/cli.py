"""The ``entropy-lens`` command line: the explicit list of its subcommands.

Every subcommand is an :class:`entropy_lens.command.Command` (name, help, config dataclass, ``run``)
defined in the package that does the work and listed in :func:`commands` below, in the order ``--help``
shows them.  Flags come from the config dataclasses; ``run`` only wires library calls together.  Errors a
user can cause end as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from entropy_lens.command import Command, add_dataclass_arguments, config_from_args, escape_help, needs_models
from entropy_lens.errors import UserError

EPILOG = """quick start:
  entropy-lens train --out data/runs/demo/baseline     # train the tiny default model (CPU, minutes)
  entropy-lens collect data/runs/demo/baseline --dataset arith --out data/runs/demo/baseline/sweep
  entropy-lens report data/runs/demo/baseline/sweep --train-run data/runs/demo/baseline
"""


# ------------------------------------------------------------------------------------------- intervene
def run_intervene(cfg) -> None:
    """The interventions experiment: sites chosen and results summarised by the analysis layer, the
    regeneration done by capture; this is the one place the two meet."""
    from entropy_lens.analysis import interventions

    with needs_models("intervene"):
        from entropy_lens.capture.intervene import intervene

    print(intervene(cfg, select_sites=interventions.select_positions, summarize=interventions.summarize,
                    groups=interventions.GROUPS))


# ------------------------------------------------------------------------------------------------- ls
@dataclasses.dataclass
class LsConfig:
    """``entropy-lens ls``: list registered tasks, backends, shapers and stage detectors."""


def registries() -> dict[str, list[str]]:
    """Every registry's names, for ``entropy-lens ls``."""
    from entropy_lens.analysis.stages import STAGE_DETECTORS
    from entropy_lens.capture.backends import BACKENDS, EXECUTORS, SAMPLERS
    from entropy_lens.capture.rollouts import MATCH_RULES, ROLLOUT_FORMATS
    from entropy_lens.tasks import TASKS
    from entropy_lens.train.config import SHAPERS

    return {"tasks": TASKS.names(), "backends": BACKENDS.names(), "samplers": SAMPLERS.names(),
            "executors": EXECUTORS.names(),
            "rollout formats": ROLLOUT_FORMATS.names(), "checkpoint match rules": MATCH_RULES.names(),
            "stage detectors": STAGE_DETECTORS.names(), "shapers": SHAPERS.names()}


def run_ls(cfg: LsConfig) -> None:
    for kind, names in registries().items():
        print(f"{kind}: {', '.join(names)}")


# ------------------------------------------------------------------------------------------- validate
@dataclasses.dataclass
class ValidateConfig:
    """``entropy-lens validate STORE``: check a store can be read and summarise it."""

    store: str = dataclasses.field(metadata={"help": "Store directory.", "positional": True})


def run_validate(cfg: ValidateConfig) -> None:
    import polars as pl

    from entropy_lens.store import open_store

    store = open_store(cfg.store)
    parts = store.check_parts()
    counts = {t: getattr(store, t).select(pl.len()).collect().item() for t in ("tokens", "samples", "updates")}
    print(f"{cfg.store}: {store.manifest['kind']} store, schema v{store.manifest['schema_version']}, "
          f"steps {store.completed_steps}, " + ", ".join(f"{v:,} {k} rows" for k, v in counts.items())
          + (f", up to {parts} part files a step" if parts > 1 else ""))


# ------------------------------------------------------------------------------------------- the list
def commands() -> list[Command]:
    """Every subcommand, in the order ``entropy-lens --help`` lists them."""
    from entropy_lens.capture.cli import COLLECT, SCORE
    from entropy_lens.capture.config import InterveneConfig
    from entropy_lens.report.cli import REPORT, STAGES
    from entropy_lens.train.cli import TRAIN
    from entropy_lens.view.cli import VIEW

    return [
        TRAIN,
        COLLECT,
        SCORE,
        STAGES,
        REPORT,
        VIEW,
        Command("intervene", "replace high-entropy tokens by the next-best token, regenerate, and compare "
                "accuracy by PPL and by position (Figs. 4b, 5b)", InterveneConfig, run_intervene),
        Command("ls", "list registered names (tasks, samplers, shapers, stage detectors)", LsConfig, run_ls),
        Command("validate", "check a store and print its size", ValidateConfig, run_validate),
    ]


def build_parser(cmds: list[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entropy-lens", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Where did my RL run's entropy go, and what did it buy?")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for c in cmds:
        p = sub.add_parser(c.name, help=escape_help(c.help), description=(c.config.__doc__ or c.help).strip())
        add_dataclass_arguments(p, c.config)
    return parser


def main(argv: list[str] | None = None) -> int:
    cmds = commands()
    parser = build_parser(cmds)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    cmd = next(c for c in cmds if c.name == args.command)
    try:
        cmd.run(config_from_args(cmd.config, args))
    except UserError as e:
        print(f"entropy-lens {cmd.name}: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
