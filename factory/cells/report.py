"""The end-of-build summary: what was built, skipped and failed, and why."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from factory.cells.executor import Outcome
from factory.plan.graph import BuildGraph
from factory.store.bundle_folder import read_manifest
from factory.store.documents import BUNDLE_MANIFEST, DocumentError


def render_summary(graph: BuildGraph, outcomes: Sequence[Outcome], out: Path) -> Group:
    by_node = {o.node: o for o in outcomes}
    cells = Table("cell", "bundle", "gates", "detail", box=None, title="cells")
    unchecked = 0
    for cell in graph.cells:
        outcome = by_node.get(cell.bundle)
        status = outcome.status if outcome else "cached"
        detail, gate_text = "", ""
        if outcome and outcome.status in {"failed", "blocked", "cancelled"}:
            detail = outcome.detail.splitlines()[0] if outcome.detail else ""
        elif status in {"built", "cached"}:
            folder = out / f"{cell.cell.model}-{cell.cell.quant}-{cell.cell.target}"
            detail = str(folder)
            gate_text = gate_column(read_gates(folder))
            unchecked += gate_text != "all passed"
        cells.add_row(cell.cell.id, status, gate_text, detail)
    counts = Table("node kind", "built", "cached", "in-store", "failed", "blocked", box=None, title="nodes")
    for kind in ("fetch", "tokenizer", "convert", "compile", "bundle"):
        c = Counter(o.status for o in outcomes if o.kind == kind)
        counts.add_row(kind, *(str(c[s]) for s in ("built", "cached", "in-store", "failed", "blocked")))
    total = Counter(o.status for o in outcomes)
    line = Text(
        f"built {total['built']}, cached {total['cached']}, in store {total['in-store']}, "
        f"failed {total['failed']}, blocked {total['blocked']}"
        + (f", cancelled {total['cancelled']}" if total["cancelled"] else "")
    )
    if unchecked:
        line.append(f"; {unchecked} bundle(s) with gates that did not pass or did not run (see the gates column)")
    return Group(cells, counts, line)


def read_gates(folder: Path) -> Mapping[str, Any] | None:
    """The gate results recorded in a built bundle, or None if they cannot be read."""
    try:
        return read_manifest(folder).gates
    except DocumentError:
        return None


def gate_column(results: Mapping[str, Any] | None) -> str:
    """PURE: which gates a bundle did not pass, by status, with the reason a gate
    did not run; "all passed" only when every recorded gate passed."""
    if results is None:
        return f"unknown (no readable {BUNDLE_MANIFEST})"
    by_status: dict[str, list[str]] = {}
    for name in sorted(results):
        result = results[name]
        status = str(result.get("status", "unknown")) if isinstance(result, dict) else "unknown"
        if status == "passed":
            continue
        reason = result.get("reason") if isinstance(result, dict) else None
        by_status.setdefault(status, []).append(f"{name} ({reason})" if reason else name)
    if not results:
        return "none recorded"
    if not by_status:
        return "all passed"
    return "; ".join(f"{status}: {', '.join(names)}" for status, names in sorted(by_status.items()))


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """0 when every node succeeded; a failure's own code when all failures agree
    (4: only gates rejected bundles); 1 otherwise."""
    codes = {o.exit_code for o in outcomes if o.status == "failed"}
    if not codes:
        return 1 if any(o.status == "blocked" for o in outcomes) else 0
    return codes.pop() if len(codes) == 1 else 1
