"""The executor on the real source-built.yaml graph with recording handlers: order,
sharing, pruning, failure isolation and crash safety of the node cache."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from factory.cells.executor import Executor, NodeCache, NodeHandler
from factory.errors import FactoryError
from factory.manifest.load import load_manifest
from factory.manifest.lock import Lock
from factory.plan.graph import BuildGraph, Node
from factory.plan.graph import plan as make_plan

REPO = Path(__file__).resolve().parents[2]


def _graph(only: tuple[str, ...] = ()) -> BuildGraph:
    return make_plan(load_manifest(REPO / "manifests" / "source-built.yaml"), Lock(), only=only)


class Recorder:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail or set()
        self.lock = threading.Lock()

    def __call__(self, node: Node, out: Path, meta: dict[str, Any]) -> str:
        with self.lock:
            self.calls.append(node.id)
        if node.id in self.fail:
            raise FactoryError(f"{node.id} broke")
        (out / "made").write_text(node.id)
        return "ok"


def _executor(graph: BuildGraph, tmp_path: Path, recorder: Recorder, jobs: int = 4) -> Executor:
    return Executor(
        graph=graph,
        cache=NodeCache(tmp_path),
        handlers=dict.fromkeys(("fetch", "tokenizer", "convert", "compile", "bundle"), recorder),
        jobs=jobs,
    )


def test_every_node_runs_once_after_its_dependencies(tmp_path: Path) -> None:
    graph = _graph(("rwkv-5-world-*/*/*",))
    recorder = Recorder()
    outcomes = _executor(graph, tmp_path, recorder).run()
    by_id = {n.id: n for n in graph.nodes}
    # Every distinct output is made once: nodes with equal keys (the rwkv5 models share a
    # tokenizer: same vocab, same runtime encoder) find it cached.
    made = Counter((by_id[i].kind, by_id[i].key) for i in recorder.calls)
    assert set(made) == {(n.kind, n.key) for n in graph.nodes} and set(made.values()) == {1}
    assert len(recorder.calls) < len(graph.nodes)
    made_at = {(by_id[i].kind, by_id[i].key): n for n, i in enumerate(recorder.calls)}
    for n, node_id in enumerate(recorder.calls):
        deps = [by_id[d] for d in by_id[node_id].deps]
        assert all(made_at[(d.kind, d.key)] < n for d in deps), f"{node_id} ran before a dependency"
    finished = {o.node: i for i, o in enumerate(outcomes)}
    assert set(finished) == set(by_id)
    kinds = Counter(o.kind for o in outcomes if o.status == "built")
    # 3 models x 2 quantizations convert once each, shared by their 4 targets.
    assert kinds["convert"] == 6 and kinds["compile"] == 24 and kinds["bundle"] == 24


def test_a_second_run_runs_nothing(tmp_path: Path) -> None:
    graph = _graph(("rwkv-6-world-3b/*/*",))
    _executor(graph, tmp_path, Recorder()).run()
    again = Recorder()
    outcomes = _executor(graph, tmp_path, again).run()
    assert again.calls == []
    # Cached bundles prune everything below them: only the bundles are looked at.
    assert {o.kind for o in outcomes} == {"bundle"}
    assert all(o.status == "cached" for o in outcomes)


def test_a_failing_node_blocks_only_what_depends_on_it(tmp_path: Path) -> None:
    graph = _graph(("rwkv-5-world-3b/q4f16_1/*",))
    broken = "compile:rwkv-5-world-3b/q4f16_1/cuda-sm80@current-v0.20.0"
    outcomes = {o.node: o for o in _executor(graph, tmp_path, Recorder(fail={broken})).run()}
    assert outcomes[broken].status == "failed" and "broke" in outcomes[broken].detail
    assert outcomes["bundle:rwkv-5-world-3b/q4f16_1/cuda-sm80"].status == "blocked"
    assert outcomes["bundle:rwkv-5-world-3b/q4f16_1/cuda-sm90"].status == "built"
    assert outcomes["bundle:rwkv-5-world-3b/q4f16_1/vulkan"].status == "built"
    assert not list((tmp_path / "compile").glob(".tmp-*")), "a failed node leaves no temporary folder"


def test_a_node_interrupted_mid_build_leaves_no_cache_entry(tmp_path: Path) -> None:
    graph = _graph(("rwkv-5-world-3b/q4f16_1/cuda-sm80",))
    cache = NodeCache(tmp_path)
    node = graph.of_kind("fetch")[0]
    with pytest.raises(KeyboardInterrupt), cache.building(node) as (out, _meta):
        (out / "half").write_text("x")
        raise KeyboardInterrupt
    assert not cache.has(node)
    assert list((tmp_path / "fetch").iterdir()) == []


def test_a_cancelled_build_starts_nothing_more_and_stops_what_runs(tmp_path: Path) -> None:
    """What the main thread does after Ctrl-C or SIGTERM: the running steps' stop functions
    are called, nothing else starts, and the nodes never started say so."""
    import signal

    from factory.runners import Cancellation

    graph = _graph(("rwkv-5-world-3b/q4f16_1/*",))
    cancel = Cancellation()
    stopped: list[str] = []
    recorder = Recorder()

    def convert(node: Node, out: Path, meta: dict[str, Any]) -> str:
        token = cancel.register(lambda: stopped.append(node.id))
        cancel.request(signal.SIGTERM)  # as the handler does, from the main thread
        deadline = time.monotonic() + 10
        while not stopped and time.monotonic() < deadline:  # a step blocked until its container is removed
            time.sleep(0.01)
        cancel.unregister(token)
        raise FactoryError(f"{node.id} interrupted")

    handlers: dict[str, NodeHandler] = {
        **dict.fromkeys(("fetch", "tokenizer", "compile", "bundle"), recorder),
        "convert": convert,
    }
    executor = Executor(graph=graph, cache=NodeCache(tmp_path), handlers=handlers, jobs=4, cancel=cancel)
    outcomes = {o.node: o for o in executor.run()}
    convert_id = graph.of_kind("convert")[0].id
    assert stopped == [convert_id]
    assert outcomes[convert_id].status == "cancelled"
    assert not [c for c in recorder.calls if c.startswith(("compile:", "bundle:"))]
    assert {o.status for o in outcomes.values() if o.kind in ("compile", "bundle")} == {"cancelled"}
    assert cancel.register(lambda: None) is None, "once cancelled, no step may register (start)"


def test_the_order_comes_from_graphlib_and_respects_jobs(tmp_path: Path) -> None:
    graph = _graph(("rwkv-5-world-3b/*/*",))
    running = 0
    most = 0
    lock = threading.Lock()

    def slow(node: Node, out: Path, meta: dict[str, Any]) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return "ok"

    handlers = dict.fromkeys(("fetch", "tokenizer", "convert", "compile", "bundle"), slow)
    outcomes = Executor(graph=graph, cache=NodeCache(tmp_path), handlers=handlers, jobs=3).run()
    assert {o.status for o in outcomes} == {"built"}
    assert most == 3, "independent nodes run side by side, never more than --jobs"
