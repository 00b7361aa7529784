"""The ordered parallel ranges S3 downloads are made of (factory/store/backends/base.py)."""

from __future__ import annotations

import random
import threading
import time

from factory.store.backends.base import ordered_parts

DATA = bytes(random.Random(0).randrange(256) for _ in range(10_007))


class Ranges:
    """Serves DATA, parts finishing in a shuffled order; counts what is in flight."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flying = self.most = self.calls = 0
        self.rng = random.Random(1)

    def fetch(self, first: int, stop: int, buffer: memoryview) -> memoryview:
        with self.lock:
            self.calls += 1
            self.flying += 1
            self.most = max(self.most, self.flying)
            pause = self.rng.random() / 100
        time.sleep(pause)
        buffer[: stop - first] = DATA[first:stop]
        with self.lock:
            self.flying -= 1
        return buffer[: stop - first]


def test_parts_arrive_in_order_whatever_order_they_finish_in() -> None:
    ranges = Ranges()
    got = b"".join(bytes(view) for view in ordered_parts(ranges.fetch, 1000, len(DATA), 512, 4))
    assert got == DATA[1000:]
    assert ranges.calls == -(-(len(DATA) - 1000) // 512) and 1 < ranges.most <= 4


def test_closing_early_starts_no_more_parts() -> None:
    ranges = Ranges()
    parts = ordered_parts(ranges.fetch, 0, len(DATA), 512, 3)
    assert bytes(next(parts)) == DATA[:512] and bytes(next(parts)) == DATA[512:1024]
    parts.close()
    assert ranges.calls <= 2 + 3 and ranges.flying == 0  # the window at most, all finished


def test_nothing_to_fetch_starts_nothing() -> None:
    ranges = Ranges()
    assert list(ordered_parts(ranges.fetch, 50, 50, 512, 4)) == [] and ranges.calls == 0
