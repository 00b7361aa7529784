"""Walking the build graph once: skip what is cached, run the rest, in parallel.

Every node's output lives in the node cache under its build key
(`<work>/nodes/<kind>/<key>/`), made in a temporary folder and renamed into
place with its `node.json` last, so a crash never leaves a half-made entry
that a later run would trust. Nodes whose bundles are already cached (or in
the store) are pruned before anything runs; a failed node blocks only the
nodes that depend on it.

The order comes from `graphlib.TopologicalSorter`: the main thread takes the
ready nodes, runs up to `jobs` of them on worker threads and marks each done as
it finishes. Signals reach only the main thread; once the shared Cancellation
is set, nothing more starts, running steps are stopped, and the nodes never
started are reported as cancelled.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any, Protocol

from factory.errors import FactoryError
from factory.plan.graph import BuildGraph, Node
from factory.runners.base import Cancellation

NODE_META = "node.json"


@dataclass(frozen=True, kw_only=True)
class Outcome:
    node: str
    kind: str
    status: str
    """built | cached | in-store | failed | blocked | cancelled"""
    seconds: float = 0.0
    detail: str = ""
    exit_code: int = 0
    """For failures: the FactoryError's exit code (4 for a gate, 1 otherwise)."""


class NodeCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, node: Node) -> Path:
        return self.root / node.kind / node.key

    def has(self, node: Node) -> bool:
        return (self.path(node) / NODE_META).is_file()

    def meta(self, node: Node) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path(node) / NODE_META).read_text())
        return data

    @contextmanager
    def building(self, node: Node) -> Iterator[tuple[Path, dict[str, Any]]]:
        """A fresh folder to build into and a dict for node.json; both land only on success."""
        final = self.path(node)
        tmp = final.parent / f".tmp-{node.key[:16]}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        meta: dict[str, Any] = {"node": node.id, "kind": node.kind, "key": node.key}
        try:
            yield tmp, meta
            meta["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            (tmp / NODE_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / NODE_META).is_file():
                    raise
                # Another builder finished the same key first: equal inputs, keep theirs.
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


class NodeHandler(Protocol):
    def __call__(self, node: Node, out: Path, meta: dict[str, Any]) -> str:
        """Build `node` into `out`, filling `meta`; return a short detail for the summary."""
        ...


class Watch:
    """What the executor reports while it runs (live progress); every method may be
    called from any thread, and the default does nothing."""

    def started(self, node: Node) -> None:
        """A node's handler starts (not for cached or in-store nodes)."""

    def finished(self, outcome: Outcome) -> None:
        """A node has its outcome."""

    def queued(self, node_ids: list[str]) -> None:
        """Nodes not started yet, those ready to run first."""

    def tick(self) -> None:
        """The main thread is waiting (a few times a second)."""


POLL_SECONDS = 0.25


@dataclass
class Executor:
    graph: BuildGraph
    cache: NodeCache
    handlers: Mapping[str, NodeHandler]
    jobs: int = 2
    in_store: Callable[[Node], bool] = lambda _node: False
    after_cached: Callable[[Node], None] = lambda _node: None
    """Called for a cached bundle (to check and materialize it); a FactoryError fails the node."""
    on_event: Callable[[Outcome], None] = lambda _o: None
    cancel: Cancellation = field(default_factory=Cancellation)
    watch: Watch = field(default_factory=Watch)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _key_locks: dict[str, threading.Lock] = field(default_factory=dict)

    def needed(self) -> dict[str, Node]:
        """Nodes that must run or be checked: the graph's ends not yet made (its bundles, or
        the converts of a graph cut short for `factory kernels`), and everything they need."""
        by_id = {n.id: n for n in self.graph.nodes}
        wanted: dict[str, Node] = {}

        def visit(node: Node) -> None:
            if node.id in wanted:
                return
            wanted[node.id] = node
            done_elsewhere = node.kind == "bundle" and self.in_store(node)
            if not self.cache.has(node) and not done_elsewhere:
                for dep in node.deps:
                    visit(by_id[dep])

        depended_on = {dep for node in self.graph.nodes for dep in node.deps}
        for end in (n for n in self.graph.nodes if n.id not in depended_on):
            visit(end)
        return {n.id: n for n in self.graph.nodes if n.id in wanted}

    def run(self) -> list[Outcome]:
        nodes = self.needed()
        sorter = TopologicalSorter({i: [d for d in n.deps if d in nodes] for i, n in nodes.items()})
        sorter.prepare()
        outcomes: dict[str, Outcome] = {}
        ready: deque[str] = deque()
        running: dict[Future[Outcome], str] = {}
        jobs = max(1, self.jobs)

        def record(outcome: Outcome) -> None:
            outcomes[outcome.node] = outcome
            self.on_event(outcome)
            self.watch.finished(outcome)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            while sorter.is_active() and not self.cancel.is_set():
                ready.extend(sorter.get_ready())
                while ready and len(running) < jobs:
                    node = nodes[ready.popleft()]
                    failed = next((d for d in node.deps if d in outcomes and not _ok(outcomes[d])), None)
                    if failed is not None:
                        record(Outcome(node=node.id, kind=node.kind, status="blocked", detail=failed))
                        sorter.done(node.id)
                        ready.extend(sorter.get_ready())
                    else:
                        running[pool.submit(self._one, node)] = node.id
                started = {*outcomes, *running.values(), *ready}
                self.watch.queued([*ready, *(i for i in nodes if i not in started)])
                if not running:
                    continue
                self._collect(running, record, sorter.done)
            if self.cancel.is_set():
                self.cancel.stop_all()  # the main thread stops what the workers started
                while running:
                    self._collect(running, record, lambda _i: None)
                for node_id, node in nodes.items():
                    if node_id not in outcomes:
                        record(Outcome(node=node_id, kind=node.kind, status="cancelled"))
        return [outcomes[n.id] for n in self.graph.nodes if n.id in outcomes]

    def _collect(
        self, running: dict[Future[Outcome], str], record: Callable[[Outcome], None], done: Callable[[str], None]
    ) -> None:
        """Wait a little for running nodes; record those that finished."""
        finished, _ = wait(list(running), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        self.watch.tick()
        for future in finished:
            node_id = running.pop(future)
            record(future.result())
            done(node_id)

    def _one(self, node: Node) -> Outcome:
        # Nodes with equal keys (e.g. one tokenizer for several models) build once; the rest find it cached.
        with self._lock:
            key_lock = self._key_locks.setdefault(f"{node.kind}/{node.key}", threading.Lock())
        with key_lock:
            return self._one_locked(node)

    def _one_locked(self, node: Node) -> Outcome:
        start = time.monotonic()
        if self.cache.has(node):
            if node.kind == "bundle":
                try:
                    self.after_cached(node)
                except FactoryError as exc:
                    return Outcome(
                        node=node.id, kind=node.kind, status="failed", detail=exc.render(), exit_code=exc.exit_code
                    )
            return Outcome(node=node.id, kind=node.kind, status="cached")
        if node.kind == "bundle" and self.in_store(node):
            return Outcome(node=node.id, kind=node.kind, status="in-store")
        self.watch.started(node)
        try:
            with self.cache.building(node) as (out, meta):
                detail = self.handlers[node.kind](node, out, meta)
        except FactoryError as exc:
            status = "cancelled" if self.cancel.is_set() else "failed"
            return Outcome(
                node=node.id,
                kind=node.kind,
                status=status,
                seconds=time.monotonic() - start,
                detail=exc.render(),
                exit_code=exc.exit_code,
            )
        except Exception as exc:  # a bug in one node must not take the other cells down with it
            detail = f"error: internal error in the factory ({type(exc).__name__}: {exc})\n" + traceback.format_exc()
            return Outcome(
                node=node.id, kind=node.kind, status="failed", seconds=time.monotonic() - start, detail=detail
            )
        return Outcome(node=node.id, kind=node.kind, status="built", seconds=time.monotonic() - start, detail=detail)


def _ok(outcome: Outcome) -> bool:
    return outcome.status in {"built", "cached", "in-store"}
