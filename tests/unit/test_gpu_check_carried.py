"""bench/gpu_check.py's folder carries the code `check` and `vm` run with on the GPU machine,
which has the standard library and numpy but no factory and none of the modules that stay
here (gpu_check_pack.py, gpu_check_runtime.py). What the carried modules import must travel
with them; a folder with only the carried code must start. No GPU, TVM or docker needed."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

from gpu_check_pack import CARRIED, carry_code  # noqa: E402

# What the GPU machine's Python has besides the carried modules and the standard library.
THERE = {"numpy"}
# The command line imports the pack in `prepare` alone, which runs here.
HERE_ONLY = {"gpu_check.py": {"gpu_check_pack"}}


def _imported(module: Path, *, lazy: bool = True) -> set[str]:
    """The top-level names of the modules `module` imports: everywhere, or (lazy=False) at its top level."""
    tree = ast.parse(module.read_text())
    names: set[str] = set()
    for node in ast.walk(tree) if lazy else tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_carried_modules_import_only_what_the_gpu_machine_has() -> None:
    carried = {Path(name).stem for name in CARRIED}
    assert "gpu_check" in carried and "gpu_check_pack" not in carried
    for name in CARRIED:
        outside = _imported(BENCH / name) - carried - THERE - set(sys.stdlib_module_names)
        assert outside <= HERE_ONLY.get(name, set()), f"bench/{name} imports {sorted(outside)}, not carried"
        assert not outside & _imported(BENCH / name, lazy=False), f"bench/{name} imports {sorted(outside)} on load"


def test_a_folder_with_only_the_carried_code_starts(tmp_path: Path) -> None:
    carry_code(tmp_path)
    assert (tmp_path / "vm_script.py").read_bytes() == (REPO / "factory/in_toolchain/vm_script.py").read_bytes()
    assert (tmp_path / "parity.py").read_bytes() == (REPO / "factory/cells/parity.py").read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "gpu_check.py"), "check", "--dir", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: --dir {tmp_path}: no gpu-check.json (write the folder with `gpu_check.py prepare`)\n"
