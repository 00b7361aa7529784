"""Expanding a manifest into cells: every model x quantization x target the
matrix rules keep. Pure; shared by the manifest checks and the planner."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from factory.manifest.model import Manifest, MatrixRule


@dataclass(frozen=True, order=True)
class Cell:
    model: str
    quant: str
    target: str

    @property
    def id(self) -> str:
        return f"{self.model}/{self.quant}/{self.target}"


def rule_matches(rule: MatrixRule, model: str, quant: str, target: str) -> bool:
    return fnmatchcase(model, rule.model) and fnmatchcase(quant, rule.quant) and fnmatchcase(target, rule.target)


def expand_cells(manifest: Manifest) -> list[Cell]:
    """Cells in manifest order: a cell is kept unless an exclude rule matches it
    and no include rule re-admits it."""
    cells = []
    for model in manifest.models:
        for quant in manifest.quantizations:
            for target in manifest.targets:
                excluded = any(rule_matches(r, model.name, quant, target) for r in manifest.matrix.exclude)
                included = any(rule_matches(r, model.name, quant, target) for r in manifest.matrix.include)
                if not excluded or included:
                    cells.append(Cell(model.name, quant, target))
    return cells
