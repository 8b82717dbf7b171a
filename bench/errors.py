"""Errors a user can fix. The CLI prints them as one line and exits with code 2 (no traceback)."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input: the message says in one line what was wrong and what to type instead."""

    exit_code = 2


class DataNotFoundError(UsageError):
    """A dataset folder is missing or malformed; the message shows the layout expected."""


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3


def check(cond: bool, message: str) -> None:
    """Raise :class:`UsageError` with ``message`` unless ``cond`` holds."""
    if not cond:
        raise UsageError(message)
