"""One CLI subcommand = a name, a one-line help, a config dataclass and a ``run(config)`` function.

Each package that offers subcommands defines them in its own ``cli.py`` as :class:`Command` objects;
:mod:`entropy_lens.cli` lists every one of them explicitly.  A command's flags are generated from its config
dataclass (field ``batch_size`` → ``--batch-size``; help text, aliases, metavar and choices from the field's
metadata; a ``bool`` field gets ``--x/--no-x``; metadata ``positional`` makes a positional argument), so the
dataclass is the single definition of a setting, shared by the CLI and the Python API.

A config module must import no torch: building the parser imports every command's config.  ``run`` imports
what it needs when it is called.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import types
import typing
from typing import Any, Callable, Iterator

from entropy_lens.errors import UserError

#: What the ``models`` extra installs: the commands that load a model (train, collect, score, intervene) need
#: them; opening, validating, reporting on and viewing a store do not.
MODEL_PACKAGES = ("torch", "transformers", "tokenizers", "math_verify")


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    config: type
    run: Callable[[Any], None]


@contextlib.contextmanager
def needs_models(command: str) -> Iterator[None]:
    """Imports inside this block that fail for want of a :data:`MODEL_PACKAGES` package become one line
    saying which extra to install (the CLI prints it and exits 2)."""
    try:
        yield
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in MODEL_PACKAGES:
            raise
        raise UserError(f"entropy-lens {command} needs {e.name.split('.')[0]}, which this installation lacks; "
                        "install the models extra: pip install 'entropy-lens[models]'") from None


def _unwrap_optional(tp: Any) -> Any:
    """``int | None`` → ``int``: an optional flag parses as its inner type and defaults to None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def escape_help(text: str) -> str:
    """argparse formats help strings with ``%``: a literal percent sign must be doubled."""
    return text.replace("%", "%%")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per dataclass field: ``--field-name`` (plus metadata ``aliases``); booleans get ``--x/--no-x``;
    metadata gives help."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _unwrap_optional(hints[f.name])
        help_ = escape_help(f.metadata.get("help", ""))
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
