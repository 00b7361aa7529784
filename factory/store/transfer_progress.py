"""Byte progress bars for publish, pull and verify (shown on a terminal only)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from factory.store.backends.base import Progress as Advance


@contextmanager
def byte_progress(label: str, total: int) -> Iterator[Advance]:
    console = Console(stderr=True)
    columns = (TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task(label, total=total)

        def advance(amount: int) -> None:
            progress.update(task, advance=amount)

        yield advance


class ItemProgress:
    """Progress over a list of items of known sizes: the bytes so far, and which item is
    being worked on (`verify` of a store: one blob after another)."""

    def __init__(self, progress: Progress | None, task: TaskID | None, items: int) -> None:
        self._progress = progress
        self._task = task
        self._items = items
        self._done = 0

    def start(self, what: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, current=what)

    def advance(self, amount: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=amount)

    def finish(self) -> None:
        # Items may finish out of order (verify checks several at once): count what is done.
        self._done += 1
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, count=f"{self._done}/{self._items}")


@contextmanager
def item_progress(label: str, total: int, items: int) -> Iterator[ItemProgress]:
    """A live line on stderr when it is a terminal (bytes, speed, time left, item n/N and
    its name); nothing otherwise."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield ItemProgress(None, None, items)
        return
    columns = (
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[count]}"),
        TextColumn("{task.fields[current]}", style="dim"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=total, count=f"0/{items}", current="")
        yield ItemProgress(progress, task, items)
