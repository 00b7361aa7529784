"""`factory build` as one call: plan the selected cells, build what the node cache
and the store lack, then publish the accepted bundles when a store is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from factory.cells import BuildSettings, execute
from factory.cells.context import bundle_name
from factory.cells.executor import Outcome
from factory.cells.report import exit_code
from factory.manifest.locked import load_locked
from factory.plan.graph import BuildGraph
from factory.plan.graph import plan as make_plan
from factory.store.backends import open_store
from factory.store.index import published_build_keys
from factory.store.publish import PublishReport, publish


@dataclass(frozen=True)
class BuildRequest:
    matrix: Path
    settings: BuildSettings
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    store: str | None = None
    """Skip cells it already holds and publish accepted bundles to it."""
    endpoint_url: str | None = None
    index: bool = True
    """With a store: also update its index (release build jobs leave that to `factory release`)."""


@dataclass(frozen=True)
class MatrixBuild:
    graph: BuildGraph
    outcomes: tuple[Outcome, ...]
    store_url: str | None = None
    published: PublishReport | None = None

    @property
    def exit_code(self) -> int:
        return exit_code(self.outcomes)

    def failures(self) -> list[str]:
        return [o.detail for o in self.outcomes if o.status == "failed"]


def build_matrix(
    request: BuildRequest,
    *,
    log: Callable[[str], None],
    on_event: Callable[[Outcome], None],
    on_built: Callable[[MatrixBuild], None] = lambda _b: None,
) -> MatrixBuild:
    """Build, then (with a store) publish. `on_built` sees the cells' outcomes before
    the publish starts, so a summary is shown even when the publish then fails."""
    loaded, lock = load_locked(request.matrix, require_locked=True)
    graph = make_plan(loaded, lock, only=request.only, skip=request.skip)
    store = open_store(request.store, endpoint_url=request.endpoint_url) if request.store else None
    published = published_build_keys(store) if store else set()
    outcomes = execute(
        loaded, lock, graph, request.settings, log=log, on_event=on_event, in_store=lambda n: n.key in published
    )
    built = MatrixBuild(graph=graph, outcomes=tuple(outcomes))
    on_built(built)
    report = None
    if store is not None:
        # Accepted bundles are published even when other cells failed: they stand on their own.
        by_id = {n.id: n for n in graph.nodes}
        out = request.settings.out
        ready = [
            out / bundle_name(by_id[o.node]) for o in outcomes if o.kind == "bundle" and o.status in {"built", "cached"}
        ]
        if ready:
            report = publish(store, ready, index=request.index)
    return replace(built, store_url=store.url if store else None, published=report)
