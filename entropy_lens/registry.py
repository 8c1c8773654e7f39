"""Name → function registries with "did you mean" errors.

A variant of an algorithm (a stage detector, an advantage shaper, a task) is a function registered under a
name, never a boolean switch on a shared function.  Lookups of unknown names fail with the closest matches::

    SHAPERS = Registry("shaper")

    @SHAPERS.register("ppl")
    def ppl_shaper(...): ...

    SHAPERS.get("ppll")  # UnknownNameError: unknown shaper 'ppll'; did you mean 'ppl'? (known: ppl, position)

An entry can also be *lazy*: a ``"package.module:attr"`` string, imported on the first :meth:`Registry.get`
of its name (as lm-evaluation-harness maps its models).  Its name is listed, suggested and checked without
importing anything, so a registry can offer an optional backend without importing it, and no module has to
be imported for the side effect of registering itself::

    SAMPLERS.register_lazy("vllm", "entropy_lens.capture.vllm_backend:VllmSampler")
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable, Generic, Iterator, TypeVar

from entropy_lens.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of functions (or classes), registered by decorator or lazily by import path."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}  # name -> "module:attr", until the first get() imports it

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self._check_new(name)
            self._entries[name] = obj
            return obj

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``target`` (``"package.module:attr"``, ``attr`` may be dotted) under ``name`` without
        importing it; the first :meth:`get` of ``name`` imports the module and keeps the attribute."""
        module, sep, attr = target.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"{self.kind} {name!r}: lazy target {target!r} is not of the form 'module:attr'")
        self._check_new(name)
        self._lazy[name] = target

    def _check_new(self, name: str) -> None:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            return self._load(name)
        raise UnknownNameError(self.unknown_message(name))

    def _load(self, name: str) -> T:
        """Import a lazy entry's target; a target that does not import is a bug in its registration."""
        target = self._lazy[name]
        module, _, attr = target.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise ImportError(f"{self.kind} {name!r} is registered as {target!r}, which cannot be loaded: "
                              f"{e}") from e
        self._entries[name] = obj
        del self._lazy[name]
        return obj

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})"

    def names(self) -> list[str]:
        """Every registered name, lazy ones included (listing imports nothing)."""
        return sorted([*self._entries, *self._lazy])

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries) + len(self._lazy)
