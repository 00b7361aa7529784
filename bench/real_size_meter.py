"""The real-size benchmark's container timing (bench/real_size.py): every container that
carries a factory step's label or the benchmark's own, timed from the Docker engine's
events, its peak memory from the engine's stats."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from real_size_shared import BENCH_LABEL

from factory.runners.container import STEP_LABEL


@dataclass
class Usage:
    seconds: float = 0.0
    peak: int = 0
    started: float = 0.0


@dataclass
class ContainerMeter:
    """Wall time and peak memory of every container carrying one of our labels."""

    client: Any
    record: Path | None = None
    """Where each container's figures are appended as a JSON line when it ends, so a run
    that dies later keeps what it measured."""
    usage: dict[str, Usage] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)

    @contextmanager
    def watching(self) -> Iterator[ContainerMeter]:
        events = self.client.events(decode=True, filters={"type": "container", "event": ["start", "die"]})
        follower = threading.Thread(target=self._follow, args=(events,), daemon=True)
        follower.start()
        try:
            yield self
        finally:
            time.sleep(1)
            events.close()
            follower.join(timeout=10)
            for thread in self._threads:
                thread.join(timeout=10)

    def _follow(self, events: Any) -> None:
        try:
            for event in events:
                labels = event.get("Actor", {}).get("Attributes", {})
                name = labels.get(STEP_LABEL) or labels.get(BENCH_LABEL)
                if not name:
                    continue
                stamp = int(event.get("timeNano", 0)) / 1e9
                if event.get("Action") == "start":
                    self.usage[name] = Usage(started=stamp)
                    thread = threading.Thread(target=self._sample, args=(event["Actor"]["ID"], name), daemon=True)
                    self._threads.append(thread)
                    thread.start()
                elif event.get("Action") == "die" and name in self.usage:
                    usage = self.usage[name]
                    usage.seconds = stamp - usage.started
                    if self.record is not None:
                        # The peak is the last sample's (cgroup v1's maximum is cumulative).
                        line = {"container": name, "seconds": round(usage.seconds, 1), "peak_bytes": usage.peak}
                        with self.record.open("a") as out:
                            out.write(json.dumps(line) + "\n")
        except Exception:  # the stream is closed on exit
            return

    def _sample(self, container: str, name: str) -> None:
        try:
            for stats in self.client.api.stats(container, stream=True, decode=True):
                memory = stats.get("memory_stats") or {}
                seen = max(int(memory.get("max_usage") or 0), int(memory.get("usage") or 0))
                self.usage[name].peak = max(self.usage[name].peak, seen)
                if not memory and self.usage[name].seconds:
                    return
        except Exception:  # the container is gone
            return
