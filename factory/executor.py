"""Walking the build graph once: skip what is cached, run the rest, in parallel.

Every node's output lives in the node cache under its build key
(`<work>/nodes/<kind>/<key>/`), made in a temporary folder and renamed into
place with its `node.json` last, so a crash never leaves a half-made entry
that a later run would trust. Nodes whose bundles are already cached (or in
the store) are pruned before anything runs; a failed node blocks only the
nodes that depend on it.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import FactoryError
from .plan import BuildGraph, Node

NODE_META = "node.json"


@dataclass(frozen=True, kw_only=True)
class Outcome:
    node: str
    kind: str
    status: str
    """built | cached | in-store | failed | blocked"""
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
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _key_locks: dict[str, threading.Lock] = field(default_factory=dict)

    def needed(self) -> dict[str, Node]:
        """Nodes that must run or be checked: the bundles not yet made, and everything they need."""
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

        for bundle in self.graph.of_kind("bundle"):
            visit(bundle)
        return {n.id: n for n in self.graph.nodes if n.id in wanted}

    def run(self) -> list[Outcome]:
        nodes = self.needed()
        outcomes: dict[str, Outcome] = {}
        done_ok: set[str] = set()
        pending = dict(nodes)
        running: dict[Future[Outcome], str] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.jobs)) as pool:
            while pending or running:
                for node_id, node in list(pending.items()):
                    deps = [d for d in node.deps if d in nodes]
                    if any(d in outcomes and d not in done_ok for d in deps):
                        failed = next(d for d in deps if d in outcomes and d not in done_ok)
                        outcomes[node_id] = Outcome(node=node_id, kind=node.kind, status="blocked", detail=failed)
                        self.on_event(outcomes[node_id])
                        del pending[node_id]
                    elif all(d in done_ok for d in deps) and len(running) < max(1, self.jobs):
                        running[pool.submit(self._one, node)] = node_id
                        del pending[node_id]
                if not running:
                    continue
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    node_id = running.pop(future)
                    outcome = future.result()
                    outcomes[node_id] = outcome
                    if outcome.status in {"built", "cached", "in-store"}:
                        done_ok.add(node_id)
                    self.on_event(outcome)
        return [outcomes[n.id] for n in self.graph.nodes if n.id in outcomes]

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
        try:
            with self.cache.building(node) as (out, meta):
                detail = self.handlers[node.kind](node, out, meta)
        except FactoryError as exc:
            return Outcome(
                node=node.id,
                kind=node.kind,
                status="failed",
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
