"""The end-of-build summary: what was built, skipped and failed, and why."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .executor import Outcome
from .plan import BuildGraph


def render_summary(graph: BuildGraph, outcomes: Sequence[Outcome], out: Path) -> Group:
    by_node = {o.node: o for o in outcomes}
    cells = Table("cell", "bundle", "detail", box=None, title="cells")
    for cell in graph.cells:
        outcome = by_node.get(cell.bundle)
        status = outcome.status if outcome else "cached"
        detail = ""
        if outcome and outcome.status in {"failed", "blocked", "cancelled"}:
            detail = outcome.detail.splitlines()[0] if outcome.detail else ""
        elif status in {"built", "cached"}:
            detail = str(out / f"{cell.cell.model}-{cell.cell.quant}-{cell.cell.target}")
        cells.add_row(cell.cell.id, status, detail)
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
    return Group(cells, counts, line)


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """0 when every node succeeded; a failure's own code when all failures agree
    (4: only gates rejected bundles); 1 otherwise."""
    codes = {o.exit_code for o in outcomes if o.status == "failed"}
    if not codes:
        return 1 if any(o.status == "blocked" for o in outcomes) else 0
    return codes.pop() if len(codes) == 1 else 1
