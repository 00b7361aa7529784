"""Live progress of a build's steps: what runs, for how long, its last output line, and
what is queued.

On a terminal, a rich live table redraws in place (below the lines the build prints).
Elsewhere (CI logs, a pipe), plain lines: every `every` seconds, one line per step that
has been running that long, so an hour-long compile is never silent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from factory.cells.context import LineSink
from factory.cells.executor import Outcome
from factory.plan.graph import Node

PLAIN_EVERY = 60.0
SHOWN_QUEUED = 3


def elapsed(seconds: float) -> str:
    """3s, 4m05s, 1h02m."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class _Running:
    started: float
    last_line: str = ""
    reported: float = 0.0


class StepProgress(LineSink):
    """Hears the executor and the steps' output; draws it live or prints plain lines."""

    def __init__(
        self,
        console: Console,
        *,
        live: bool | None = None,
        every: float = PLAIN_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console, self.every, self.clock = console, every, clock
        self.live = console.is_terminal if live is None else live
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._queued: list[str] = []
        self._display: Live | None = None

    def __enter__(self) -> StepProgress:
        if self.live:
            self._display = Live(self, console=self.console, refresh_per_second=4, transient=True)
            self._display.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._display is not None:
            self._display.stop()
            self._display = None

    # -- what the executor and the steps report (any thread) -------------------------
    def started(self, node: Node) -> None:
        now = self.clock()
        with self._lock:
            self._running[node.id] = _Running(started=now, reported=now)

    def finished(self, outcome: Outcome) -> None:
        with self._lock:
            self._running.pop(outcome.node, None)

    def queued(self, node_ids: list[str]) -> None:
        with self._lock:
            self._queued = list(node_ids)

    def line(self, node_id: str, text: str) -> None:
        text = text.strip()
        if text:
            with self._lock:
                if node_id in self._running:
                    self._running[node_id].last_line = text

    def tick(self) -> None:
        if self.live:
            return  # the live display redraws itself
        now = self.clock()
        due: list[str] = []
        with self._lock:
            for node_id, state in self._running.items():
                if now - state.reported >= self.every:
                    state.reported = now
                    last = f": {state.last_line}" if state.last_line else ""
                    due.append(f"running {node_id} ({elapsed(now - state.started)}){last}")
            waiting = self._queue_text()
        for line in due:
            self.console.print(f"{line}; {waiting}" if waiting else line, markup=False, highlight=False)

    # -- rendering ---------------------------------------------------------------------
    def _queue_text(self) -> str:
        if not self._queued:
            return ""
        shown = ", ".join(self._queued[:SHOWN_QUEUED])
        more = f" and {len(self._queued) - SHOWN_QUEUED} more" if len(self._queued) > SHOWN_QUEUED else ""
        return f"queued {len(self._queued)}: {shown}{more}"

    def __rich__(self) -> RenderableType:
        now = self.clock()
        table = Table("step", "time", "last output", box=None, show_header=False, pad_edge=False)
        with self._lock:
            for node_id, state in sorted(self._running.items(), key=lambda kv: kv[1].started):
                table.add_row(
                    node_id, elapsed(now - state.started), Text(state.last_line, no_wrap=True, overflow="ellipsis")
                )
            waiting = self._queue_text()
        parts: list[RenderableType] = [table]
        if waiting:
            parts.append(Text(waiting, style="dim"))
        return Group(*parts)
