"""The webgpu target's planning: how it compiles, which of its bundles the image's browser
can gate, and what a bundle says about running it. The browser itself runs in the mlc tests."""

from __future__ import annotations

from pathlib import Path

from factory.cells.gating import Candidate, browser_blocker, device_reason, has_device
from factory.devices.runtime import runtime_words
from factory.manifest.model import BuildOptions, Model, Target
from factory.store.bundle_folder import run_command
from factory.toolchains import FLOWS

WEBGPU = Target.model_validate({"device": "webgpu:generic", "suffix": "wasm", "runner": "container", "os": "linux"})
MODEL = Model.model_validate(
    {"name": "rwkv-6-world-tiny", "hf": {"repo": "a/b"}, "type": "rwkv6-world", "toolchain": "t"}
)


def _candidate(quant: str, target: Target = WEBGPU) -> Candidate:
    return Candidate(
        node_id="bundle:x", folder=Path("/nowhere"), model=MODEL.name, model_type="rwkv6", quant=quant,
        params_dir="", params_index="tensor-cache.json", library=f"x-{quant}-webgpu.wasm", target=target,
    )  # fmt: skip


def test_a_webgpu_compile_links_a_wasm_with_the_images_web_runtime_and_keeps_its_js_runtime() -> None:
    step, runtime = FLOWS["current"].compile_steps(MODEL, "q4f32_1", "webgpu", WEBGPU, BuildOptions(webgpu=True))
    assert step.argv[step.argv.index("--device") + 1] == "webgpu:generic"
    assert step.argv[step.argv.index("--output") + 1].endswith("/rwkv-6-world-tiny-q4f32_1-webgpu.wasm")
    # mlc-llm finds TVM's objects under $TVM_HOME/web/dist/wasm and its own under
    # $MLC_LLM_SOURCE_DIR/web/dist/wasm, where images/wheel/webgpu/build.sh puts them.
    assert step.env == {"TVM_HOME": "/opt/factory/webgpu/tvm", "MLC_LLM_SOURCE_DIR": "/opt/mlc-llm"}
    build = Path(__file__).resolve().parents[2] / "images" / "wheel" / "webgpu" / "build.sh"
    text = build.read_text()
    assert '"${out}/tvm/web/dist/wasm"' in text and '"${mlc}/web/dist/wasm"' in text
    # The JS runtime build.sh bundles from the same TVM sources goes beside the library.
    assert runtime.argv == ("cp", "/opt/factory/webgpu/tvmjs.js", "/out/rwkv-6-world-tiny-q4f32_1-webgpu.tvmjs.js")
    assert '--outfile="${out}/tvmjs.js"' in text
    assert "/opt/mlc-llm /opt/factory/webgpu" in (build.parent.parent / "Dockerfile").read_text()
    cpu = Target.model_validate({"device": "llvm", "runner": "container", "os": "linux"})
    [plain] = FLOWS["current"].compile_steps(MODEL, "q4f32_1", "cpu", cpu, BuildOptions(webgpu=True))
    assert "TVM_HOME" not in plain.env


def test_the_images_browser_gates_float32_webgpu_bundles_and_says_why_not_float16() -> None:
    assert has_device(WEBGPU)
    assert browser_blocker(_candidate("q4f32_1")) is None and browser_blocker(_candidate("q0f32")) is None
    for quant in ("q4f16_1", "q0f16"):
        reason = browser_blocker(_candidate(quant))
        assert reason is not None and "shader-f16" in reason and quant in reason
    cpu = Target.model_validate({"device": "llvm", "runner": "container", "os": "linux"})
    assert browser_blocker(_candidate("q4f16_1", cpu)) is None
    on_host = WEBGPU.model_copy(update={"runner": "host"})
    assert not has_device(on_host) and "toolchain image" in device_reason(on_host)


def test_a_webgpu_bundle_says_how_a_browser_gets_it_and_which_web_runtime_it_needs() -> None:
    command = run_command("current", "", "m-q4f32_1-webgpu.wasm", "webgpu")
    assert "WebLLM" in command and "{bundle}/m-q4f32_1-webgpu.wasm" in command
    words = runtime_words({"flow": "current", "tvm": "apache-tvm==0.26.0", "tvm_web": "c7b458e9" + "0" * 32})
    assert "with TVM's web runtime built from apache/tvm c7b458e9" in words
