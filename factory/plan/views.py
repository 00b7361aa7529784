"""Ways to print a build graph: a table for people, JSON for machines, and the
matrix object GitHub Actions consumes. Pure: each returns data or a renderable."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from factory.buildkey import RECIPE_VERSION
from factory.plan.graph import NODE_KINDS, BuildGraph, CellPlan

PLAN_SCHEMA = 1

# GitHub-hosted runner labels per (os, arch) a target names.
RUNS_ON = {
    ("linux", "x86_64"): "ubuntu-24.04",
    ("linux", "arm64"): "ubuntu-24.04-arm",
    ("macos", "arm64"): "macos-14",
    ("macos", "x86_64"): "macos-13",
}


def to_json(graph: BuildGraph) -> dict[str, Any]:
    nodes = {n.id: n for n in graph.nodes}
    return {
        "plan_schema": PLAN_SCHEMA,
        "recipe": RECIPE_VERSION,
        "unresolved": list(graph.unresolved),
        "counts": dict(Counter(n.kind for n in graph.nodes)),
        "cells": [
            {
                "id": c.cell.id,
                "model": c.cell.model,
                "quant": c.cell.quant,
                "target": c.cell.target,
                "toolchain": c.toolchain,
                "flow": c.flow,
                "runner": c.runner,
                "os": c.os,
                "arch": c.arch,
                "library": c.library,
                "params_index": c.params_index,
                "bundle": c.bundle,
                "key": nodes[c.bundle].key,
            }
            for c in graph.cells
        ],
        "nodes": [
            {"kind": n.kind, "id": n.id, "key": n.key, "deps": list(n.deps), "locked": n.locked, **n.attrs}
            for n in graph.nodes
        ],
    }


def render_json(graph: BuildGraph) -> str:
    return json.dumps(to_json(graph), indent=2, sort_keys=False) + "\n"


@dataclass(frozen=True, order=True)
class JobGroup:
    """One CI job: cells sharing a toolchain, a runner and a model, so the
    model's convert steps run once and are reused by every target in the job."""

    toolchain: str
    runner: str
    os: str
    arch: str
    model: str


def github_matrix(graph: BuildGraph) -> dict[str, Any]:
    groups: dict[JobGroup, list[CellPlan]] = {}
    flows: dict[str, str] = {}
    for c in graph.cells:
        groups.setdefault(JobGroup(c.toolchain, c.runner, c.os, c.arch, c.cell.model), []).append(c)
        flows[c.toolchain] = c.flow
    include = []
    for group in sorted(groups):
        include.append(
            {
                "name": f"{group.model} · {group.toolchain} · {group.os}-{group.arch}",
                "toolchain": group.toolchain,
                "flow": flows[group.toolchain],
                "runner": group.runner,
                "os": group.os,
                "arch": group.arch,
                "runs_on": RUNS_ON[(group.os, group.arch)],
                "model": group.model,
                "cells": " ".join(c.cell.id for c in groups[group]),
            }
        )
    return {"include": include}


def render_github(graph: BuildGraph) -> str:
    return json.dumps(github_matrix(graph), separators=(",", ":")) + "\n"


def render_table(graph: BuildGraph) -> Group:
    keys = {n.id: n for n in graph.nodes}
    table = Table(title="Build plan", title_justify="left")
    for column in ("cell", "toolchain", "flow", "runner", "library", "key"):
        table.add_column(column, no_wrap=column in ("cell", "key"))
    for c in graph.cells:
        node = keys[c.bundle]
        key = node.key[:12] + ("" if node.locked else "*")
        table.add_row(c.cell.id, c.toolchain, c.flow, f"{c.runner}/{c.os}-{c.arch}", c.library, key)
    counts = Counter(n.kind for n in graph.nodes)
    summary = Text(f"{len(graph.cells)} cells; nodes: " + ", ".join(f"{counts[k]} {k}" for k in NODE_KINDS))
    parts: list[Any] = [table, summary]
    if graph.unresolved:
        parts.append(
            Text(
                "* unlocked: builds refuse these until `factory lock` resolves: " + ", ".join(graph.unresolved),
                style="yellow",
            )
        )
    return Group(*parts)
