"""`factory run` drives a bundle with the program gating.token_runner names for its device
kind (the Relax VM for CPU, Vulkan and CUDA, the image's Chromium for WebGPU) and refuses a
kind it names none for. Nothing runs here: the runners are replaced by recorders; the real
runs are in tests/integration/test_mlc_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from factory.cells import run_bundle as run_module
from factory.cells.run_bundle import RunRequest, run_bundle
from factory.errors import FactoryError, InputError
from factory.in_toolchain import SCRIPTS_DIR
from tests.support.bundles import make_bundle

CPU = json.dumps({"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu", "mcpu": "x86-64"})


def _bundle(tmp_path: Path, device: str, quant: str = "q4f32_1") -> Path:
    suffix = "wasm" if device.startswith("webgpu") else "so"
    return make_bundle(tmp_path / "dist", quant=quant, target="t", device=device, megabytes=0.1, suffix=suffix)


@pytest.mark.parametrize(
    ("device", "script", "after"),
    [(CPU, "vm_script.py", ("cpu",)), ("vulkan:generic", "vm_script.py", ("vulkan",)),
     ("webgpu:generic", "browser_script.py", ())],
)  # fmt: skip
def test_on_the_host_the_kinds_token_runner_runs_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, script: str, after: tuple[str, ...]
) -> None:
    bundle = _bundle(tmp_path, device)
    ran: list[tuple[str, ...]] = []

    def run_process(argv: tuple[str, ...], **_: Any) -> Any:
        ran.append(tuple(argv))
        return SimpleNamespace(exit_code=3)

    monkeypatch.setattr(run_module, "run_process", run_process)
    with pytest.raises(FactoryError, match=r"did not run \(exit 3\)"):
        run_bundle(RunRequest(bundle=bundle, prompt="hi", tokens=2, raw=True, on_host=True))
    library = next(p.name for p in bundle.iterdir() if p.suffix in (".so", ".wasm"))
    assert ran[0][1:] == (str(SCRIPTS_DIR / script), "run", str(bundle), str(bundle / library), "hi", "2", *after)


def test_in_the_image_a_webgpu_bundle_runs_in_chromium_beside_the_scripts_it_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory.runners import container, engine
    from factory.toolchains.images import builder

    bundle = _bundle(tmp_path, "webgpu:generic")
    steps: list[Any] = []

    class Recorder:
        def __init__(self, client: object) -> None:
            pass

        def run(self, step: Any, keep: Any) -> Any:
            steps.append(step)
            return SimpleNamespace(exit_code=3)

    monkeypatch.setattr(engine, "docker_client", object)
    monkeypatch.setattr(builder, "local_image_id", lambda client, image: "sha256:0")
    monkeypatch.setattr(container, "ContainerRunner", Recorder)
    with pytest.raises(FactoryError, match=r"did not run \(exit 3\)"):
        run_bundle(RunRequest(bundle=bundle, prompt="hi", tokens=2, raw=True, image="toolchain:webgpu"))
    [step] = steps
    library = next(p.name for p in bundle.iterdir() if p.suffix == ".wasm")
    assert step.image == "toolchain:webgpu" and not step.needs_gpu
    assert step.argv == ("python", "/factory/browser_script.py", "run", "/bundle", f"/bundle/{library}", "hi", "2")
    assert {(m.source, m.target) for m in step.mounts} == {(bundle, "/bundle"), (SCRIPTS_DIR, "/factory")}


@pytest.mark.parametrize(
    ("device", "quant", "field", "says"),
    [("metal:m1", "q4f32_1", "compatibility.device", "a metal bundle: factory run runs CPU, Vulkan, CUDA and WebGPU"),
     ("webgpu:generic", "q4f16_1", "quant", "q4f16_1 needs WebGPU's shader-f16")],
)  # fmt: skip
def test_a_bundle_no_runner_can_drive_is_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, quant: str, field: str, says: str
) -> None:
    monkeypatch.setattr(run_module, "run_process", lambda *_, **__: pytest.fail("nothing may run"))
    with pytest.raises(InputError) as refused:
        run_bundle(RunRequest(bundle=_bundle(tmp_path, device, quant), prompt="hi", on_host=True))
    [problem] = refused.value.problems
    assert problem.field == field and says in problem.message and "run it with its runtime" in problem.fix
