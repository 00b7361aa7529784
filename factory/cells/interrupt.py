"""Ctrl-C and SIGTERM during a build.

Python delivers signals to the main thread only, and every step runs on a worker
thread, so the main thread's handler just marks the build cancelled; the
executor's loop (also on the main thread) then starts nothing more and stops the
containers and processes the runners registered. The build ends with 128 plus
the signal's number: 130 for Ctrl-C, 143 for SIGTERM.
"""

from __future__ import annotations

import signal

from factory.errors import FactoryError
from factory.runners.base import signals_cancel

__all__ = ["BuildInterrupted", "signals_cancel"]


class BuildInterrupted(FactoryError):
    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"build interrupted by {name}: nothing more was started, running steps were stopped and their "
            "containers removed",
            hint="run the same command again: finished nodes are cached and are not built again",
        )
        self.exit_code = 128 + signum
