"""The one progress display of the trainer and the evaluation: rich bars on stderr, or nothing.

``with Progress(enabled) as p: advance = p.task("epoch 1/3", total=32); advance(1, stats="loss=0.41")``.
When disabled, :meth:`Progress.task` returns a function that does nothing, so callers never branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Advance = Callable[..., None]


class Progress:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._p: Any = None

    def __enter__(self) -> Progress:  # noqa: PYI034
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._p = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                   TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                                   TimeRemainingColumn(), console=Console(stderr=True))
            self._p.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)
            self._p = None

    def task(self, description: str, total: int) -> Advance:
        """A new bar; returns ``advance(n=1, stats=None)``."""
        if self._p is None:
            return lambda n=1, stats=None: None
        p, tid = self._p, self._p.add_task(description, total=total, stats="")

        def advance(n: int = 1, stats: str | None = None) -> None:
            p.update(tid, advance=n, **({"stats": stats} if stats is not None else {}))

        return advance
