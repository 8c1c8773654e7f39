"""Name → function registries with "did you mean" errors.

A variant of an algorithm (a stage detector, an advantage shaper, a task) is a function registered under a
name, never a boolean switch on a shared function.  Lookups of unknown names fail with the closest matches::

    SHAPERS = Registry("shaper")

    @SHAPERS.register("ppl")
    def ppl_shaper(...): ...

    SHAPERS.get("ppll")  # UnknownNameError: unknown shaper 'ppll'; did you mean 'ppl'? (known: ppl, position)
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from entropy_lens.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of functions (or classes) registered by decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
