"""Live progress of build steps: elapsed time, the last output line, what is queued;
a live table on a terminal, plain periodic lines elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from factory.cells.executor import Outcome
from factory.cells.progress import StepProgress, elapsed
from factory.plan.graph import Node


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _node(node_id: str) -> Node:
    return Node(id=node_id, kind=node_id.split(":", maxsplit=1)[0], key="k" * 64, deps=(), locked=True)  # type: ignore[arg-type]


def test_elapsed_reads_like_a_clock() -> None:
    assert [elapsed(s) for s in (3, 65, 3720.5)] == ["3s", "1m05s", "1h02m"]


def test_off_a_terminal_a_long_step_prints_a_line_now_and_then() -> None:
    out = io.StringIO()
    clock = Clock()
    progress = StepProgress(Console(file=out, width=300), every=60, clock=clock)
    assert not progress.live
    with progress:
        progress.started(_node("compile:m/q/t"))
        progress.queued(["bundle:m/q/t", "compile:m/q/u", "compile:m/q/v", "bundle:m/q/u"])
        progress.line("compile:m/q/t", "[12:00:01] lowering rwkv wkv kernels ")
        clock.now += 30
        progress.tick()
        assert out.getvalue() == "", "nothing before the interval"
        clock.now += 31
        progress.tick()
        progress.tick()
        clock.now += 3600
        progress.tick()
        progress.finished(Outcome(node="compile:m/q/t", kind="compile", status="built"))
        clock.now += 120
        progress.tick()
    lines = out.getvalue().splitlines()
    assert lines == [
        "running compile:m/q/t (1m01s): [12:00:01] lowering rwkv wkv kernels; "
        "queued 4: bundle:m/q/t, compile:m/q/u, compile:m/q/v and 1 more",
        "running compile:m/q/t (1h01m): [12:00:01] lowering rwkv wkv kernels; "
        "queued 4: bundle:m/q/t, compile:m/q/u, compile:m/q/v and 1 more",
    ]


def test_on_a_terminal_the_live_view_shows_each_step_its_time_and_last_line() -> None:
    out = io.StringIO()
    clock = Clock()
    console = Console(file=out, width=200, force_terminal=True)
    progress = StepProgress(console, clock=clock)
    assert progress.live
    progress.started(_node("convert:m/q"))
    clock.now += 5
    progress.started(_node("compile:m/q/t"))
    progress.line("convert:m/q", "converted 24 tensors")
    progress.line("compile:m/q/t", "")  # blank lines keep the last real one
    progress.queued(["bundle:m/q/t"])
    clock.now += 125
    render = io.StringIO()
    Console(file=render, width=200, no_color=True).print(progress)
    shown = render.getvalue()
    assert "convert:m/q" in shown and "2m10s" in shown and "converted 24 tensors" in shown
    assert "compile:m/q/t" in shown and "2m05s" in shown
    assert "queued 1: bundle:m/q/t" in shown
    with progress:
        progress.tick()  # the live display redraws itself; tick prints nothing
    assert "running " not in out.getvalue()
