"""Errors a user can cause.

A :class:`UserError` is raised for bad input (a path that is not there, a malformed dataset line, an unknown
name, a store written by a newer schema).  The CLI prints its message as one line and exits with code 2;
nothing half-written is left behind because every write is atomic (see :mod:`entropy_lens.store`).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: the message names the input and says what to do."""

    exit_code = 2


class UnknownNameError(UserError, KeyError):
    """A registry lookup with a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreLockedError(UserError):
    """Another process is writing to the same store."""
