"""The end-of-build summary says, per cell, which gates did not pass or did not run."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from factory.cells.executor import Outcome
from factory.cells.report import gate_column, read_gates, render_summary
from factory.manifest.load import load_manifest
from factory.manifest.lock import Lock
from factory.plan.graph import plan
from factory.store.bundle_folder import bundle_manifest, write_manifest
from tests.conftest import WORLD


def _text(renderable: object) -> str:
    console = Console(width=400, record=True)
    console.print(renderable)
    return console.export_text()


def test_the_summary_names_gates_that_did_not_run_or_pass(tmp_path: Path) -> None:
    graph = plan(load_manifest(WORLD), Lock(), only=["rwkv-5-world-3b/q4f16_1/cuda-*"])
    checked, unchecked = graph.cells
    gates = {
        checked.cell.id: {"layout": {"status": "passed"}, "smoke": {"status": "passed"}},
        unchecked.cell.id: {
            "layout": {"status": "passed"},
            "smoke": {"status": "not-run", "reason": "no cuda device on this host"},
            "parity": {"status": "not-run", "reason": "not asked for"},
        },
    }
    for cell in graph.cells:
        folder = tmp_path / f"{cell.cell.model}-{cell.cell.quant}-{cell.cell.target}"
        folder.mkdir()
        manifest = bundle_manifest(
            cell={"model": cell.cell.model, "quant": cell.cell.quant, "target": cell.cell.target, "name": cell.cell.id},
            files=[],
            compatibility={"flow": "current", "device": "cuda"},
            provenance={"build_key": cell.bundle},
            gates=gates[cell.cell.id],
            run="mlc_llm chat {bundle}",
        )
        write_manifest(folder, manifest)
    # A manifest the summary cannot read says so rather than passing.
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "factory-bundle.json").write_text(json.dumps({"gates": {}}))
    assert read_gates(tmp_path / "unreadable") is None
    outcomes = [Outcome(node=c.bundle, kind="bundle", status="built") for c in graph.cells]
    text = _text(render_summary(graph, outcomes, tmp_path))
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip().startswith("rwkv-")}
    assert "all passed" in rows[checked.cell.id]
    assert "not-run: parity (not asked for), smoke (no cuda device on this host)" in rows[unchecked.cell.id]
    assert "1 bundle(s) with gates that did not pass or did not run" in text


def test_gate_column_keeps_statuses_apart() -> None:
    assert gate_column({"a": {"status": "passed"}}) == "all passed"
    assert gate_column({"a": {"status": "failed"}, "b": {"status": "not-run"}}) == "failed: a; not-run: b"
    assert gate_column({}) == "none recorded"
    assert gate_column(None).startswith("unknown")
