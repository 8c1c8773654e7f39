"""The ``entropy-lens`` command line: one subcommand per job, each configured by a dataclass.

Each subcommand's flags are generated from its config dataclass (field name → ``--field-name``, help text
from the field's metadata), and its ``run`` only wires library calls together.  Errors a user can cause end
as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from typing import Any, Callable

from entropy_lens.errors import UserError

EPILOG = """quick start:
  entropy-lens train --out data/runs/demo              # train the tiny default model (CPU, minutes)
  entropy-lens collect data/runs/demo --dataset arith --out data/runs/demo/sweep
  entropy-lens report data/runs/demo/sweep             # tables, figures and a summary
"""


def _unwrap_optional(tp: Any) -> Any:
    """``int | None`` → ``int``: an optional flag parses as its inner type and defaults to None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per dataclass field: ``--field-name`` (plus metadata ``aliases``); booleans get ``--x/--no-x``;
    metadata gives help."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _unwrap_optional(hints[f.name])
        help_ = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if f.metadata.get("positional"):
            parser.add_argument(f.name, type=tp, help=help_)
            continue
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        default = None if f.default is dataclasses.MISSING else f.default
        if tp is bool:
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_)
        else:
            shown = "" if default is None else f" (default: {default})"
            parser.add_argument(*flags, dest=f.name, type=tp, default=default, choices=choices,
                                required=f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                                help=help_ + shown, metavar=f.metadata.get("metavar", f.name.upper()))


def config_from_args(cls: type, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class SubCommand:
    name: str
    help: str
    config: type
    run: Callable[[Any], None]


def _collect(cfg) -> None:
    from entropy_lens.capture.sweep import collect

    print(collect(cfg))


def _ls(cfg) -> None:
    for kind, names in registries().items():
        print(f"{kind}: {', '.join(names)}")


def registries() -> dict[str, list[str]]:
    """Every registry's names, for ``entropy-lens ls``."""
    import entropy_lens.capture.sampling as sampling
    import entropy_lens.capture.sweep  # noqa: F401  (registers the vllm and ray backends)
    import entropy_lens.tasks.arith  # noqa: F401
    from entropy_lens.tasks import TASKS

    from entropy_lens.capture.ingest import MATCH_RULES, ROLLOUT_FORMATS

    out = {"tasks": TASKS.names(), "backends": sampling.BACKENDS.names(),
           "rollout formats": ROLLOUT_FORMATS.names(), "checkpoint match rules": MATCH_RULES.names()}
    try:
        from entropy_lens.analysis.stages import STAGE_DETECTORS
        out["stage detectors"] = STAGE_DETECTORS.names()
    except ImportError:
        pass
    try:
        from entropy_lens.train.shaping import SHAPERS
        out["shapers"] = SHAPERS.names()
    except ImportError:
        pass
    return out


@dataclasses.dataclass
class LsConfig:
    """``entropy-lens ls``: list registered tasks, backends, shapers and stage detectors."""


def _validate(cfg) -> None:
    import entropy_lens

    store = entropy_lens.open(cfg.store)
    import polars as pl

    counts = {t: getattr(store, t).select(pl.len()).collect().item() for t in ("tokens", "samples", "updates")}
    print(f"{cfg.store}: {store.manifest['kind']} store, schema v{store.manifest['schema_version']}, "
          f"steps {store.completed_steps}, " + ", ".join(f"{v:,} {k} rows" for k, v in counts.items()))


@dataclasses.dataclass
class ValidateConfig:
    """``entropy-lens validate STORE``: check a store can be read and summarise it."""

    store: str = dataclasses.field(metadata={"help": "Store directory.", "positional": True})


def subcommands() -> list[SubCommand]:
    from entropy_lens.capture.sweep import CollectConfig

    cmds = [
        SubCommand("collect", "sample checkpoints on an eval set and store per-token entropy", CollectConfig, _collect),
        SubCommand("ls", "list registered names (tasks, backends, shapers, stage detectors)", LsConfig, _ls),
        SubCommand("validate", "check a store and print its size", ValidateConfig, _validate),
    ]
    for extra in _optional_subcommands():
        cmds.append(extra)
    return cmds


def _optional_subcommands() -> list[SubCommand]:
    """Subcommands provided by other modules (train, report, score, intervene), when present."""
    out = []
    for module in ("entropy_lens.train.cli", "entropy_lens.analysis.cli", "entropy_lens.capture.cli"):
        try:
            mod = __import__(module, fromlist=["SUBCOMMANDS"])
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        out += [SubCommand(*s) for s in mod.SUBCOMMANDS]
    return out


def build_parser(cmds: list[SubCommand]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entropy-lens", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Where did my RL run's entropy go, and what did it buy?")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for c in cmds:
        p = sub.add_parser(c.name, help=c.help, description=(c.config.__doc__ or c.help).strip())
        add_dataclass_arguments(p, c.config)
    return parser


def main(argv: list[str] | None = None) -> int:
    cmds = subcommands()
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
