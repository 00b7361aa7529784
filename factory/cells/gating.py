"""The gates a new bundle passes before it is accepted, wired to the build: layout and
params are checked here on the host; library, smoke and parity run factory scripts
inside the bundle's toolchain through its runner (factory/cells/gates.py judges the output)."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from factory.cells import gates, kernels
from factory.cells.context import BuildContext
from factory.devices.host_cpu import shortfall
from factory.manifest.model import Target
from factory.runners import Mount
from factory.store import bundle_folder as bundles
from factory.toolchains.base import MODEL_ROOT, needs_kernel_check

# The smoke run of CPU bundles: a fixed prompt in the conversation template's own
# shape (the Relax VM runner adds no roles), and a few greedy tokens.
SMOKE_PROMPT = "User: Tell me about the RWKV language model in one sentence.\n\nAssistant:"
SMOKE_TOKENS = 8
# Kinds whose runs need the host's GPU passed into the container. Vulkan runs on the
# driver the toolchain image carries (Mesa's lavapipe, on the CPU).
GPU_PASSTHROUGH = frozenset({"cuda", "metal"})
# WebGPU bundles run in the toolchain image's Chromium (factory/in_toolchain/browser_script.py)
# on SwiftShader, which has no shader-f16: only float32 activations run there.
BROWSER_SCRIPT = "/factory/browser_script.py"
VM_SCRIPT = "/factory/vm_script.py"
_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A bundle assembled in `folder`, waiting for its gates."""

    node_id: str
    folder: Path
    model: str
    model_type: str
    quant: str
    params_dir: str
    params_index: str
    library: str
    target: Target
    # The compile step's kernel check (GPU targets), None where there was none.
    kernel_check: dict[str, Any] | None = None

    @property
    def params(self) -> Path:
        return self.folder / self.params_dir if self.params_dir else self.folder

    def run(
        self, ctx: BuildContext, name: str, argv: tuple[str, ...], *, gpu: bool, extra: tuple[Mount, ...] = ()
    ) -> tuple[int, list[str]]:
        return ctx.in_toolchain(self.node_id, self.model, self.target, name, argv, self.folder, gpu=gpu, extra=extra)


def run_gates(ctx: BuildContext, c: Candidate) -> list[gates.GateResult]:
    """Every gate's result, in order: layout (alone when it fails), params, library, smoke, parity."""
    layout = gates.lint_layout(
        c.folder,
        params_dir=c.params_dir,
        params_index=c.params_index,
        library_name=c.library,
        library_suffix=c.target.library_suffix,
    )
    if layout.failed:
        return [layout]
    config = json.loads((c.params / bundles.CHAT_CONFIG).read_text())
    hint = gates.nan_hint(c.model, c.model_type, c.quant)
    results = [
        layout,
        gates.check_params(
            c.params, params_index=c.params_index, chat_config=config, quantization=c.quant, nan_hint=hint
        ),
        library_gate(ctx, c, config),
    ]
    settings = ctx.settings
    if settings.smoke or settings.require_smoke:
        if (browser := browser_blocker(c)) is not None:
            smoke = gates.no_device(c.target.device_kind, browser)
        elif has_device(c.target):
            smoke = smoke_gate(ctx, c, hint)
        else:
            smoke = gates.no_device(c.target.device_kind, device_reason(c.target))
    else:
        smoke = gates.not_run("smoke", "not asked for (--smoke)")
    if settings.require_smoke and smoke.status != "passed":
        smoke = gates.GateResult(
            "smoke",
            "failed",
            (f"--require-smoke: {smoke.details.get('reason', 'no smoke result')}", *smoke.problems),
            smoke.hint or f"run the build on a host with a {c.target.device_kind} device, or drop --require-smoke",
            smoke.details,
        )
    results.append(smoke)
    results.append(parity_gate(ctx, c))
    return results


def token_runner(kind: str) -> tuple[str, tuple[str, ...]] | None:
    """The in-image program that drives bundles of a device kind token by token, for the
    library, smoke and parity gates, and the device argument it takes: the image's
    Chromium for WebGPU, TVM's Relax VM for the VM devices; None for the others."""
    if kind == "webgpu":
        return BROWSER_SCRIPT, ()
    if kind in gates.VM_DEVICES:
        return VM_SCRIPT, (gates.VM_DEVICES[kind],)
    return None


def library_gate(ctx: BuildContext, c: Candidate, config: dict[str, Any]) -> gates.GateResult:
    """The library as its own toolchain loads it: `_metadata` and exported functions
    against config and params; a CUDA library must hold compiled GPU code."""
    library = c.folder / c.library
    if c.target.device_kind == "cuda" and (problem := gates.cuda_code_problem(library)):
        return gates.GateResult("library", "failed", (problem,), "rebuild in a toolchain whose TVM can run nvcc")
    if needs_kernel_check(c.target) and (refused := kernels.judge_kernels(c.library, c.kernel_check)):
        return refused
    # Libraries of kinds no runner drives still load in the Relax VM (metadata and functions).
    script = (token_runner(c.target.device_kind) or (VM_SCRIPT, ()))[0]
    code, lines = c.run(ctx, f"library {c.library}", (script, "library", f"/bundle/{c.library}"), gpu=False)
    probe = gates.parse_library(lines)
    if probe is None:
        reason = f"the toolchain could not load it (exit {code}): {lines[-1] if lines else 'no output'}"
        if c.target.device_kind in ("llvm", "webgpu"):
            tail = tuple(lines[-8:])
            return gates.GateResult("library", "failed", (reason, *tail), "the image's own runtime must load it")
        # A GPU library may need the device's driver just to load; that is not a verdict.
        return _with_kernel_figures(c, gates.not_run("library", reason))
    judged = gates.judge_library(
        c.library,
        probe.get("metadata", {}),
        chat_config=config,
        quantization=c.quant,
        records=gates.index_records(c.params / c.params_index),
        functions=probe.get("functions"),
        flow=ctx.loaded.manifest.toolchains[ctx.models[c.model].toolchain].flow,
    )
    return judged if judged.failed else _with_kernel_figures(c, judged)


def _with_kernel_figures(c: Candidate, result: gates.GateResult) -> gates.GateResult:
    """A GPU library's gate result with what its kernel check found (CPU results as they are)."""
    if not needs_kernel_check(c.target):
        return result
    return replace(result, details={**result.details, **kernels.kernel_details(c.kernel_check)})


def smoke_gate(ctx: BuildContext, c: Candidate, hint: str) -> gates.GateResult:
    """The fixed prompt through the bundle, in its toolchain, on the target's device:
    CPU bundles through TVM's Relax VM, GPU bundles through mlc-llm's runtime."""
    params = f"/bundle/{c.params_dir}" if c.params_dir else "/bundle"
    library = f"/bundle/{c.library}"
    kind = c.target.device_kind
    toolchain = ctx.loaded.manifest.toolchains[ctx.models[c.model].toolchain]
    runner = token_runner(kind)
    # CUDA bundles run in mlc-llm's native runtime where the toolchain has one (not the wheel's).
    if runner is not None and (kind != "cuda" or toolchain.is_wheel):
        script, device = runner
        argv: tuple[str, ...] = (script, "run", params, library, SMOKE_PROMPT, str(SMOKE_TOKENS), *device)
    else:
        argv = ("/factory/smoke_script.py", toolchain.flow, params, library, kind)
    code, lines = c.run(ctx, f"smoke {c.library}", argv, gpu=kind in GPU_PASSTHROUGH)
    figures = gates.parse_smoke(lines)
    if code != 0 or figures is None:
        return gates.GateResult("smoke", "failed", (f"the smoke run exited with {code}", *lines[-10:]), hint)
    return gates.judge_smoke(figures, hint=hint)


def _parity_blocker(ctx: BuildContext, c: Candidate) -> str | None:
    """Why the parity gate cannot run for this bundle here, or None."""
    target = c.target
    if not (ctx.settings.smoke or ctx.settings.require_smoke):
        return "not asked for (--smoke)"
    if ctx.loaded.manifest.toolchains[ctx.models[c.model].toolchain].flow == "legacy":
        return "legacy-flow libraries have no RNN-state functions the Relax VM runner can drive"
    if token_runner(target.device_kind) is None:
        return f"no runner in the image drives {target.device_kind} bundles token by token"
    if (browser := browser_blocker(c)) is not None:
        return browser
    if not has_device(target):
        return f"no {target.device_kind} device on this host: {device_reason(target)}"
    return reference_shortfall(ctx.model_dir(c.model), host_memory())


def browser_blocker(c: Candidate) -> str | None:
    """Why the image's browser cannot run this WebGPU bundle, or None (not WebGPU: None)."""
    return browser_refusal(c.target.device_kind, c.quant)


def browser_refusal(kind: str, quant: str) -> str | None:
    """Why the image's browser (token_runner's for WebGPU) cannot run a bundle of this kind
    and quantization, or None (not WebGPU: None); `factory run` asks it too."""
    if kind == "webgpu" and "f16" in quant:
        return f"{quant} needs WebGPU's shader-f16, which SwiftShader (the image's adapter) lacks"
    return None


def host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def checkpoint_parameters(folder: Path) -> tuple[int, int]:
    """(weights, of which the embedding's) of a checkpoint, from its safetensors headers
    (no tensor is read); a pickle checkpoint is counted as 2 bytes a weight, no embedding."""
    from safetensors import safe_open

    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        return sum(p.stat().st_size for p in folder.glob("pytorch_model*.bin")) // 2, 0
    total = embedding = 0
    for shard in shards:
        with safe_open(str(shard), framework="numpy") as opened:
            for name in opened.keys():  # noqa: SIM118 (safe_open is not a mapping)
                count = math.prod(opened.get_slice(name).get_shape())
                total += count
                embedding += count if name.endswith("embeddings.weight") else 0
    return total, embedding


def reference_shortfall(folder: Path, memory: int) -> str | None:
    """Why this host cannot hold the parity reference for the checkpoint in `folder`, or None."""
    from factory.cells import parity

    need = parity.reference_memory(*checkpoint_parameters(folder))
    if need <= memory:
        return None
    return (
        f"the float32 reference needs about {need / 1e9:.1f} GB for this checkpoint and this host has "
        f"{memory / 1e9:.1f} GB; run the gate on a host with more memory"
    )


def parity_gate(ctx: BuildContext, c: Candidate) -> gates.GateResult:
    """The bundle's next-token distributions against the RWKV reference implementation
    on the same checkpoint and tokens (factory/cells/parity.py has the figures and bounds)."""
    from factory.cells import parity
    from factory.in_toolchain.vm_script import Tokenizer

    blocker = _parity_blocker(ctx, c)
    if blocker is not None:
        return gates.not_run("parity", blocker)
    target = c.target
    tokens = Tokenizer(c.params / bundles.TOKENIZER).encode(parity.PARITY_TEXT)[: parity.PARITY_TOKENS]
    work = ctx.settings.work / "parity" / f"{c.model}-{c.quant}-{c.library}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "tokens.json").write_text(json.dumps(tokens))
    prefill = min(parity.PARITY_PREFILL, len(tokens))
    extra = (ctx.model_mount(c.model), Mount(source=work, target="/parity", read_only=False))
    params_in = f"/bundle/{c.params_dir}" if c.params_dir else "/bundle"
    logits = (params_in, f"/bundle/{c.library}", "/parity/tokens.json", "/parity/bundle.npy")
    runner = token_runner(target.device_kind)
    assert runner is not None  # _parity_blocker answered for kinds without one
    bundle_run = (runner[0], "logits", *logits, *runner[1], str(prefill))
    runs = (
        ("reference", ("/factory/reference_script.py", f"{MODEL_ROOT}/{c.model}",
                       "/parity/tokens.json", "/parity/reference.npy"), False),
        ("bundle", bundle_run, target.device_kind in GPU_PASSTHROUGH),
    )  # fmt: skip
    for label, argv, gpu in runs:
        code, lines = c.run(ctx, f"parity {label} {c.library}", argv, gpu=gpu, extra=extra)
        if code != 0:
            return gates.GateResult(
                "parity", "failed", (f"the {label} run exited with {code}", *lines[-8:]),
                "see the output; the toolchain needs torch and the rwkv package for the reference",
            )  # fmt: skip
    import numpy as np

    _, bound = parity.threshold_for(c.quant)
    reference = np.load(work / "reference.npy")
    margin = bound.tie_margin
    figures = parity.compare(reference, np.load(work / "bundle.npy"), kl_bound=bound.kl_max, tie_margin=margin)
    start = prefill - 1
    after_prefill = parity.compare(
        reference[start:],
        np.load(work / "bundle-prefill.npy"),
        kl_bound=bound.kl_max,
        tie_margin=margin,
        first_position=start,
    )
    passed, problems, details = parity.verdict(figures, c.quant, after_prefill)
    if not passed:
        hint = "the bundle does not compute what the checkpoint computes; check the params and the patches"
        return gates.GateResult("parity", "failed", tuple(problems), hint, details)
    return gates.GateResult("parity", "passed", details=details)


def gate_summary(result: gates.GateResult) -> str:
    """One gate in the build summary, with its figures where it has some."""
    details = result.details
    if result.gate == "parity" and result.status == "passed":
        prefill = details.get("prefill")
        after = f"; after prefill {prefill['kl_mean']:.2g}" if isinstance(prefill, dict) else ""
        paths = [details, prefill] if isinstance(prefill, dict) else [details]
        ties = sum(1 for path in paths for tie in path.get("near_ties") or () if not tie["agrees"])
        tied = f"; {ties} near-tie{'s' if ties > 1 else ''} flipped, not counted" if ties else ""
        return f"parity passed (KL mean {details['kl_mean']:.2g}, top-1 {details['top1']:.2f}{after}{tied})"
    if result.gate == "smoke" and result.status == "passed" and details.get("decode_tok_s"):
        return f"smoke passed ({details['prefill_tok_s']} / {details['decode_tok_s']} tok/s)"
    return f"{result.gate} {result.status}"


def has_device(target: Target) -> bool:
    kind = target.device_kind
    if kind == "cuda":
        return shutil.which("nvidia-smi") is not None
    if kind == "metal":
        return sys.platform == "darwin" and platform.machine() == "arm64"
    if kind == "llvm":
        host_os = {"linux": "linux", "darwin": "macos"}.get(sys.platform)
        same = host_os == target.os and _HOST_ARCH.get(platform.machine().lower()) == target.arch
        return same and _cpu_lacks(target) is None
    if kind in ("vulkan", "webgpu"):
        # A Vulkan toolchain image carries Mesa's lavapipe, a WebGPU one Chromium with
        # SwiftShader: a device wherever it runs.
        return target.runner == "container"
    return False


def _cpu_lacks(target: Target) -> str | None:
    """Why this CPU cannot execute the target's x86-64 level (AVX2 and so on), or None."""
    short = shortfall(json.dumps(target.device) if isinstance(target.device, dict) else target.device)
    if short is None:
        return None
    return (
        f"this CPU is x86-64 level {short.host}, the library needs level {short.needed} "
        f"({', '.join(short.missing)} missing)"
    )


def device_reason(target: Target) -> str:
    kind = target.device_kind
    if kind == "cuda":
        return "nvidia-smi not found"
    if kind == "metal":
        return "not an Apple Silicon Mac"
    if kind == "llvm" and (lacks := _cpu_lacks(target)) is not None:
        return lacks
    if kind == "llvm":
        return f"this host is {sys.platform}/{platform.machine()}, the library is for {target.os}/{target.arch}"
    if kind in ("vulkan", "webgpu"):
        return f"{kind} bundles are gated in their toolchain image; this target's runner is not a container"
    return f"smoke runs are not supported for {kind}"
