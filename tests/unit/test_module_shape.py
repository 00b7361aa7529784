"""The code's shape, held by tests: small modules, and a command line that decides nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "factory"
MAX_LINES = 400
MODULES = sorted(PACKAGE.rglob("*.py"))
CLI_MODULES = sorted((PACKAGE / "cli").glob("*.py"))
BENCH = PACKAGE.parent / "bench"
BENCH_MODULES = sorted(BENCH.glob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_the_line_budget(module: Path) -> None:
    lines = len(module.read_text().splitlines())
    assert lines <= MAX_LINES, f"{module.relative_to(PACKAGE)} has {lines} lines; split it (budget {MAX_LINES})"


@pytest.mark.parametrize("module", BENCH_MODULES, ids=lambda p: p.name)
def test_no_bench_module_is_over_the_line_budget(module: Path) -> None:
    lines = len(module.read_text().splitlines())
    assert lines <= MAX_LINES, f"bench/{module.name} has {lines} lines; split it (budget {MAX_LINES})"


def _imported_names(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", CLI_MODULES, ids=lambda p: p.name)
def test_the_cli_leaves_store_policy_and_loading_to_the_factory(module: Path) -> None:
    """Which store a command uses, and how a manifest is read with its lock, are decided
    once (store/choice.py, manifest/locked.py); a command module that opens either itself has grown policy."""
    decisions = {"open_store", "load_manifest", "read_lock", "lock_path_for", "blob_cache", "prefix_root", "Console"}
    policy = decisions & _imported_names(module)
    allowed = {"render.py": {"Console"}}.get(module.name, set())
    assert policy <= allowed, f"cli/{module.name} imports {sorted(policy - allowed)}"


COMMAND_MODULES = [m for m in CLI_MODULES if m.name.endswith(("_command.py", "_commands.py"))]


@pytest.mark.parametrize("module", COMMAND_MODULES, ids=lambda p: p.name)
def test_commands_compose_no_text_of_their_own(module: Path) -> None:
    """What a command prints is composed in cli/render.py, so output changes in one place."""
    composed = [ast.unparse(n) for n in ast.walk(ast.parse(module.read_text())) if isinstance(n, ast.JoinedStr)]
    assert composed == [], f"cli/{module.name} formats text: {composed}; move it to cli/render.py"


def test_the_shape_test_sees_the_whole_package() -> None:
    assert len(MODULES) > 50 and len(CLI_MODULES) >= 8 and len(COMMAND_MODULES) >= 6
    assert len(BENCH_MODULES) >= 8 and {BENCH / "gpu_check.py", BENCH / "real_size.py"} <= set(BENCH_MODULES)
