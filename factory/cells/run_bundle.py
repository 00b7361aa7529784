"""`factory run BUNDLE`: a bundle, built or pulled, runs a prompt through the program that
drives its device kind token by token (gating.token_runner: TVM's Relax VM,
factory/in_toolchain/vm_script.py, for CPU, Vulkan and CUDA; Chromium,
browser_script.py, for WebGPU), in its toolchain's image when the engine has it, else with
this process's own TVM (`--on-host`). In the image a Vulkan bundle runs on the driver the
image carries (Mesa's lavapipe, on the CPU), a WebGPU one on the image's Chromium and
SwiftShader; a CUDA bundle gets the host's NVIDIA GPU. On the host each needs that
runtime and a driver (WebGPU: a Chromium, FACTORY_CHROMIUM).

The prompt is put into the bundle's conversation template (mlc-chat-config.json) the
way the template says, unless `--raw`.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from factory.cells import gates
from factory.cells.gating import browser_refusal, token_runner
from factory.devices.host_cpu import shortfall
from factory.errors import FactoryError, InputError, Problem
from factory.in_toolchain import SCRIPTS_DIR
from factory.process import run as run_process
from factory.runners import Mount, Step
from factory.store.bundle_folder import CHAT_CONFIG, read_manifest
from factory.store.documents import BUNDLE_MANIFEST, BundleManifest
from factory.toolchains.base import SCRIPTS_MOUNT


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    bundle: Path
    prompt: str
    tokens: int = 16
    raw: bool = False
    on_host: bool = False
    image: str | None = None


@dataclass(frozen=True)
class RunResult:
    figures: gates.SmokeFigures
    verdict: gates.GateResult


def _problem(path: Path, field: str, message: str, fix: str) -> InputError:
    return InputError([Problem(file=str(path), field=field, message=message, fix=fix)])


@dataclass(frozen=True)
class _Layout:
    manifest: BundleManifest
    kind: str
    params_dir: str
    """Relative to the bundle."""
    library: str
    script: str
    """The token runner, as its path in the image (under SCRIPTS_MOUNT)."""
    device: tuple[str, ...]
    """The arguments after the runner's `run PARAMS LIBRARY PROMPT TOKENS`."""


def _layout(bundle: Path) -> _Layout:
    path = bundle / BUNDLE_MANIFEST
    if not path.is_file():
        raise _problem(path, "", "not a factory bundle (no factory-bundle.json)", "give a folder `factory pull` made")
    manifest = read_manifest(bundle, fix="pull or build the bundle again")
    files = {f.role: f.path for f in manifest.files if f.role in {"chat-config", "library"}}
    device = manifest.compatibility.device
    kind = json.loads(device).get("kind") if device.startswith("{") else device.split(":", 1)[0]
    runner = token_runner(kind)
    if runner is None:
        raise _problem(
            path, "compatibility.device", f"a {kind} bundle: factory run runs CPU, Vulkan, CUDA and WebGPU bundles",
            f"run it with its runtime: {manifest.run}",
        )  # fmt: skip
    if kind != "llvm" and manifest.compatibility.flow != "current":
        raise _problem(
            path, "compatibility.flow", f"a {manifest.compatibility.flow}-flow {kind} bundle has no RNN-state "
            "functions the runner drives", f"run it with its runtime: {manifest.run}",
        )  # fmt: skip
    if (refusal := browser_refusal(kind, manifest.quant)) is not None:
        raise _problem(path, "quant", refusal, f"run it with its runtime: {manifest.run}")
    _check_cpu_level(path, manifest)
    if "chat-config" not in files or "library" not in files:
        raise _problem(path, "files", "lists no chat config or no library", "pull or build the bundle again")
    params_dir = str(Path(files["chat-config"]).parent)
    return _Layout(manifest, kind, params_dir, files["library"], *runner)


def _check_cpu_level(path: Path, manifest: BundleManifest) -> None:
    """Refuse an x86-64 library built for instructions this CPU lacks: it would die with
    SIGILL somewhere inside the first call instead of saying why."""
    short = shortfall(manifest.compatibility.device)
    if short is None:
        return
    mcpu = json.loads(manifest.compatibility.device).get("mcpu")
    raise _problem(
        path, "compatibility.device",
        f"compiled for {mcpu} (x86-64 level {short.needed}); this CPU is level {short.host} and lacks "
        + ", ".join(short.missing),
        f"pull a target this CPU runs: factory pull {manifest.model} -q {manifest.quant} -t auto",
    )  # fmt: skip


def templated(prompt: str, config: dict[str, Any]) -> str:
    """PURE: one user turn in the conversation template, ending where the assistant speaks."""
    template = config.get("conv_template") or {}
    roles = template.get("roles") or {"user": "User", "assistant": "Assistant"}
    seps = template.get("seps") or ["\n\n"]
    sep = template.get("role_content_sep", ": ")
    empty = str(template.get("role_empty_sep", ": ")).rstrip()
    return f"{roles['user']}{sep}{prompt}{seps[0]}{roles['assistant']}{empty}"


def run_bundle(request: RunRequest, on_line: Any = None) -> RunResult:
    bundle = request.bundle.resolve()
    layout = _layout(bundle)
    params = bundle / layout.params_dir
    config = json.loads((params / CHAT_CONFIG).read_text())
    prompt = request.prompt if request.raw else templated(request.prompt, config)
    tail = (prompt, str(request.tokens), *layout.device)
    lines: list[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    if request.on_host:
        script = SCRIPTS_DIR / PurePosixPath(layout.script).relative_to(SCRIPTS_MOUNT)
        argv = (sys.executable, str(script), "run", str(params), str(bundle / layout.library), *tail)
        code = run_process(argv, on_line=keep, check=False).exit_code
    else:
        image = request.image or layout.manifest.provenance.get("image")
        if not image:
            raise _problem(
                bundle / BUNDLE_MANIFEST, "provenance.image", "names no toolchain image",
                "pass --image REF, or --on-host to use this machine's TVM",
            )  # fmt: skip
        if layout.kind == "cuda" and shutil.which("nvidia-smi") is None:
            raise FactoryError(
                f"{bundle.name} is a CUDA bundle and this host has no NVIDIA GPU (nvidia-smi not found)",
                hint="run it on a host with an NVIDIA GPU and the NVIDIA container toolkit",
            )
        code = _in_container(image, bundle, layout, tail, keep)
    figures = gates.parse_smoke(lines)
    if figures is None:
        raise FactoryError(
            f"the bundle did not run (exit {code}): {lines[-1] if lines else 'no output'}",
            hint="see the output above; --on-host uses this machine's TVM instead of the toolchain image",
        )
    return RunResult(figures, gates.judge_smoke(figures, hint="the bundle's logits are not usable; rebuild it"))


def _in_container(image: str, bundle: Path, layout: _Layout, tail: tuple[str, ...], keep: Any) -> int:
    from factory.runners.container import ContainerRunner
    from factory.runners.engine import docker_client
    from factory.toolchains.images.builder import local_image_id

    client = docker_client()
    if local_image_id(client, image) is None:
        raise FactoryError(
            f"the toolchain image {image} is not in this engine",
            hint="build it with `factory images build -m MANIFEST`, pull it, or pass --on-host",
        )
    params_dir = layout.params_dir
    params = f"/bundle/{params_dir}".rstrip("/.") if params_dir not in ("", ".") else "/bundle"
    step = Step(
        name=f"run {bundle.name}",
        image=image,
        argv=("python", layout.script, "run", params, f"/bundle/{layout.library}", *tail),
        # The whole folder: browser_script.py imports vm_script.py and serves the page beside it.
        mounts=(Mount(source=bundle, target="/bundle"), Mount(source=SCRIPTS_DIR, target=SCRIPTS_MOUNT)),
        needs_gpu=layout.kind == "cuda",
    )
    return ContainerRunner(client).run(step, keep).exit_code
