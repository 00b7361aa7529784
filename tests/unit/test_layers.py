"""The layers hold: lower layers never import higher ones, the top level holds only what
every layer shares, and the pure plan brings nothing with side effects along."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.layers import LAYERS, SIDE_EFFECTS, check_layers, layer_of, modules_of

REPO = Path(__file__).resolve().parents[2]


def test_the_factory_respects_its_layers() -> None:
    problems = check_layers(REPO)
    assert not problems, "\n".join(map(str, problems))


def test_the_top_level_holds_only_the_shared_modules() -> None:
    top = {m for m in modules_of(REPO) if m.count(".") == 1 and (REPO / (m.replace(".", "/") + ".py")).is_file()}
    shared = set(LAYERS[0][1]) - {"factory"}
    assert top == shared | {"factory.__main__"}


def test_a_module_gets_the_most_specific_layer() -> None:
    names = [name for name, _ in LAYERS]
    assert names[layer_of("factory.manifest.model") or 0] == "vocabulary"
    assert names[layer_of("factory.manifest.load") or 0] == "manifest"
    assert names[layer_of("factory.toolchains.images.plan") or 0] == "toolchain images"
    assert names[layer_of("factory.toolchains.current") or 0] == "flows, runners, tokenizer"
    assert names[layer_of("factory.store.documents.index") or 0] == "store vocabulary"
    assert names[layer_of("factory.store.pull") or 0] == "store"
    assert names[layer_of("factory.trust.policy") or 0] == "trust"
    assert layer_of("factory.newthing") is None


def _tree(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "factory", tmp_path / "factory", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _append(path: Path, text: str) -> int:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, text, ""]))
    return len(lines) + 1


def test_a_store_module_importing_the_cells_fails_the_check(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    line = _append(root / "factory/store/publish.py", "from factory.cells.gates import parse_smoke_line")
    problems = check_layers(root)
    assert [str(p) for p in problems] == [
        f"factory/store/publish.py:{line}: factory.store.publish imports factory.cells.gates: "
        "layer 'store' may not import layer 'cells' above it"
    ]


def test_storage_knows_nothing_of_its_clients_and_trust_nothing_of_storage_operations(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    _append(root / "factory/store/pull.py", "from factory.clients.mlc_repo import DEFAULT_ORG")
    _append(root / "factory/trust/policy.py", "from factory.store.index import read_index")
    found = {(p.importer, p.imported, p.why) for p in check_layers(root)}
    assert found == {
        (
            "factory.store.pull",
            "factory.clients.mlc_repo",
            "layer 'store' may not import layer 'clients' above it",
        ),
        ("factory.trust.policy", "factory.store.index", "layer 'trust' may not import layer 'store' above it"),
    }


def test_relative_and_lazy_imports_count_too(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    _append(root / "factory/plan/views.py", "def later() -> None:\n    from ..cli import app  # noqa")
    _append(root / "factory/manifest/model.py", "from . import lock")
    found = {(p.importer, p.imported) for p in check_layers(root)}
    assert found == {
        ("factory.plan.views", "factory.cli.app"),
        ("factory.manifest.model", "factory.manifest.lock"),
    }


def test_an_in_toolchain_script_may_not_import_the_factory(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    _append(root / "factory/in_toolchain/vm_script.py", "from factory.errors import FactoryError")
    problems = check_layers(root)
    assert [(p.importer, p.imported) for p in problems] == [("factory.in_toolchain.vm_script", "factory.errors")]
    assert "import nothing" in problems[0].why


def test_a_module_outside_every_layer_fails_the_check(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "factory/helpers.py").write_text('"""misc"""\n')
    assert [p.importer for p in check_layers(root)] == ["factory.helpers"]


def test_the_plan_imports_nothing_with_side_effects() -> None:
    probe = (
        "import sys, factory.plan.graph, factory.plan.views; "
        f"print(sorted(m for m in sys.modules if any(m == s or m.startswith(s + '.') for s in {SIDE_EFFECTS!r})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
