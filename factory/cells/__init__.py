"""The cells of a build: their steps, gates and bundles (`factory build`, `factory run`),
one small function per node kind, walked by the executor.

steps.py        fetch, tokenizer, convert, compile
bundle_step.py  bundle: assemble, gate, describe, lay out under --out
gating.py       the gates: layout and params on the host; library, smoke and parity
                as factory scripts inside the toolchain, through its runner
context.py      what the steps share: settings, runners and images, the node cache
interrupt.py    Ctrl-C and SIGTERM: cancel, stop the running containers, exit 130/143
progress.py     live progress of running steps (rich on a terminal, plain lines elsewhere)
executor.py     walks the graph once: skip what is cached, run the rest in parallel
gates.py        the gates' pure judgements; parity.py the parity arithmetic
fetch.py        a model snapshot from the hub at its locked commit
report.py       the end-of-build summary; matrix.py plan, execute, then publish
run_bundle.py   `factory run`: a bundle through its kind's token runner in its toolchain

The top of the pipeline below the CLI. May import every layer but the CLI: the shared
modules, manifest, toolchains, runners, tokenizer, devices, plan, store, trust, clients
and in_toolchain.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from factory.cells import steps
from factory.cells.bundle_step import bundle, cached_bundle
from factory.cells.context import (
    BuildContext,
    BuildSettings,
    RunnerUnavailable,
    StepFailed,
    bundle_name,
    patches_digest,
)
from factory.cells.executor import Executor, NodeHandler, Outcome
from factory.cells.interrupt import BuildInterrupted, signals_cancel
from factory.cells.progress import StepProgress
from factory.manifest.load import LoadedManifest
from factory.manifest.lock import Lock
from factory.plan.graph import BuildGraph, Node
from factory.runners import Cancellation

__all__ = [
    "BuildInterrupted",
    "BuildSettings",
    "RunnerUnavailable",
    "StepFailed",
    "bundle_name",
    "execute",
    "patches_digest",
]


def execute(
    loaded: LoadedManifest,
    lock: Lock,
    graph: BuildGraph,
    settings: BuildSettings,
    *,
    log: Callable[[str], None],
    on_event: Callable[[Outcome], None] = lambda _o: None,
    in_store: Callable[[Node], bool] = lambda _n: False,
    progress: StepProgress | None = None,
) -> list[Outcome]:
    """Build what the graph needs; raises BuildInterrupted (exit 130/143) after a signal,
    once every running step has been stopped."""
    cancel = Cancellation()
    progress = progress or StepProgress(Console(stderr=True))
    ctx = BuildContext(loaded, lock, graph, settings, log, cancel=cancel, sink=progress)

    def step(function: Callable[[BuildContext, Node, Path, dict[str, Any]], str]) -> NodeHandler:
        return lambda node, out, meta: function(ctx, node, out, meta)

    executor = Executor(
        graph=graph,
        cache=ctx.cache,
        handlers={
            "fetch": step(steps.fetch),
            "tokenizer": step(steps.tokenizer),
            "convert": step(steps.convert),
            "compile": step(steps.compile),
            "bundle": step(bundle),
        },
        jobs=settings.jobs,
        in_store=in_store,
        after_cached=lambda node: cached_bundle(ctx, node),
        on_event=on_event,
        cancel=cancel,
        watch=progress,
    )
    with signals_cancel(cancel), progress:
        outcomes = executor.run()
    if cancel.signum is not None:
        raise BuildInterrupted(cancel.signum)
    return outcomes
