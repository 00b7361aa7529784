"""Byte progress bars for publish and pull (shown on a terminal only)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .storage.base import Progress as Advance


@contextmanager
def byte_progress(label: str, total: int) -> Iterator[Advance]:
    console = Console(stderr=True)
    columns = (TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task(label, total=total)

        def advance(amount: int) -> None:
            progress.update(task, advance=amount)

        yield advance
