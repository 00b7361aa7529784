"""The last step of a cell: assemble the bundle from its convert, compile and tokenizer
nodes, gate it, describe it in factory-bundle.json, and lay it out under --out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from factory import __version__
from factory.cells import gates
from factory.cells.context import BuildContext, bundle_name, patches_digest
from factory.cells.gating import Candidate, device_reason, gate_summary, has_device, run_gates
from factory.plan.graph import Node
from factory.store import bundle_folder as bundles
from factory.store.documents import BUNDLE_MANIFEST, DocumentError
from factory.toolchains import FLOWS
from factory.toolchains.base import web_runtime_name
from factory.toolchains.images.plan import wheel_tvm_sources


def bundle(ctx: BuildContext, node: Node, out: Path, meta: dict[str, Any]) -> str:
    model = ctx.models[str(node.attrs["model"])]
    quant, target_name = str(node.attrs["quant"]), str(node.attrs["target"])
    target = ctx.loaded.manifest.targets[target_name]
    compile_node, convert_node = ctx.dep(node, "compile"), ctx.dep(node, "convert")
    tokenizer_node = ctx.dep(node, "tokenizer")
    flow = FLOWS[str(compile_node.attrs["flow"])]
    compiled = ctx.cache.path(compile_node)
    candidate = Candidate(
        node_id=node.id,
        folder=out / "bundle",
        model=model.name,
        model_type=model.type,
        quant=quant,
        params_dir=flow.bundle_params_dir(),
        params_index=str(node.attrs["params_index"]),
        library=str(compile_node.attrs["library"]),
        target=target,
        kernel_check=ctx.cache.meta(compile_node).get("kernel_check"),
    )
    bundles.assemble(
        candidate.folder,
        params_source=ctx.cache.path(convert_node) / flow.converted_params(model.name, quant),
        params_dir=candidate.params_dir,
        params_index=candidate.params_index,
        library=compiled / flow.compiled_library(model.name, quant, target_name, target),
        library_name=candidate.library,
        tokenizer_dir=ctx.cache.path(tokenizer_node),
        # The legacy runtime (mlc_chat at b44cdc53) would also load tokenizer.json first,
        # with a tokenizers crate of 2023 nobody has checked it against: it keeps its own file.
        tokenizer_files=bundles.TOKENIZER_FILES if flow.name == "current" else (bundles.TOKENIZER,),
        web_runtime=compiled / web_runtime_name(candidate.library) if target.device_kind == "webgpu" else None,
    )
    results = run_gates(ctx, candidate)
    failed = [r for r in results if r.failed]
    if failed:
        lines = "\n    ".join(p for r in failed for p in r.problems)
        raise gates.GateFailure(
            f"{node.id}: rejected by the {', '.join(r.gate for r in failed)} gate(s):\n    {lines}",
            hint=failed[0].hint,
        )
    manifest = bundles.bundle_manifest(
        cell={
            "model": model.name,
            "quant": quant,
            "target": target_name,
            "name": f"{model.name}/{quant}/{target_name}",
        },
        files=bundles.describe(candidate.folder, candidate.params_index, candidate.library),
        compatibility=_compatibility(ctx, compile_node, candidate),
        provenance=_provenance(ctx, node, compile_node, tokenizer_node),
        gates={r.gate: r.as_json() for r in results},
        run=bundles.run_command(flow.name, candidate.params_dir, candidate.library, target.device_kind),
    )
    bundles.write_manifest(candidate.folder, manifest)
    materialize(ctx, node, candidate.folder)
    return ", ".join(gate_summary(r) for r in results)


def _compatibility(ctx: BuildContext, compile_node: Node, c: Candidate) -> dict[str, Any]:
    """What a client matches against its runtime."""
    toolchain = ctx.loaded.manifest.toolchains[str(compile_node.attrs["toolchain"])]
    compatibility = {
        "flow": str(compile_node.attrs["flow"]),
        "params_index": c.params_index,
        "mlc_llm": toolchain.mlc_llm.commit,
        "tvm": toolchain.tvm_identity,
        "patches": patches_digest(ctx.loaded, toolchain),
        "device": compile_node.attrs["target_argument"],
        "library": c.library,
    }
    sources = dict(wheel_tvm_sources(toolchain))
    if c.target.device_kind == "vulkan" and "tvm" in sources:
        # The wheel's Vulkan runtime is built beside it: a runtime must carry the same one.
        compatibility["tvm_vulkan"] = sources["tvm"].commit
    if c.target.device_kind == "webgpu" and "tvm" in sources:
        # The .wasm carries TVM's web runtime: the JS runtime that loads it must be the same commit's.
        compatibility["tvm_web"] = sources["tvm"].commit
    return compatibility


def _provenance(ctx: BuildContext, node: Node, compile_node: Node, tokenizer_node: Node) -> dict[str, Any]:
    """Where the bundle came from. Its identity is `build_key`; `built_at` (like the image id
    of a locally built image) differs between machines and is never compared."""
    toolchain_name = str(compile_node.attrs["toolchain"])
    toolchain = ctx.loaded.manifest.toolchains[toolchain_name]
    model = ctx.models[str(node.attrs["model"])]
    fetch_node = ctx.dep(ctx.dep(node, "convert"), "fetch")
    compile_meta = ctx.cache.meta(compile_node)
    return {
        "toolchain": toolchain_name,
        "pins": {
            "tvm": toolchain.tvm.model_dump(),
            "mlc_llm": toolchain.mlc_llm.model_dump(),
            "tokenizers_cpp": tokenizer_node.attrs.get("tokenizers_cpp"),
            "build": toolchain.build.model_dump(),
            "cuda_version": toolchain.cuda_version,
            "base_image": toolchain.base_image,
            "base_image_digest": ctx.lock.image_digest(toolchain.base_image),
        },
        "image": compile_meta.get("image"),
        "image_id": compile_meta.get("image_id"),
        "model": (
            {"repo": model.hf.repo, "revision": model.hf.revision, "commit": fetch_node.attrs["revision"]}
            if model.hf is not None
            # Else its content hash and the folder relative to the manifest's root, never an
            # absolute path: the builder's own folders stay out of published bundles.
            else {
                "local": portable_path(ctx.loaded.root, model.local.path if model.local else None),
                "sha256": fetch_node.attrs["sha256"],
            }
        ),
        **({"float32_layers": model.overrides.float32_layers} if model.overrides.float32_layers else {}),
        "factory_version": __version__,
        "build_key": node.key,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "release": ctx.loaded.manifest.release.model_dump(),
    }


def portable_path(root: Path, path: str | None) -> str | None:
    """A local model folder as a published bundle names it: relative to the manifest's root;
    one outside the root (an absolute path elsewhere, or up through '..') by its folder name."""
    if path is None:
        return None
    root = root.resolve()
    folder = (root / path).resolve()
    return folder.relative_to(root).as_posix() if folder.is_relative_to(root) else folder.name


def cached_bundle(ctx: BuildContext, node: Node) -> None:
    """A cached bundle is accepted again only if it still meets this run's demands."""
    source = ctx.cache.path(node) / "bundle"
    if ctx.settings.require_smoke:
        smoke = bundles.read_manifest(source).gates.get("smoke", {})
        if smoke.get("status") != "passed":
            target = ctx.loaded.manifest.targets[str(node.attrs["target"])]
            # Why it cannot pass here: this host's device, else what the cached run said.
            why = (
                f"no {target.device_kind} device on this host: {device_reason(target)}"
                if not has_device(target)
                else smoke.get("reason") or smoke.get("status")
            )
            raise gates.GateFailure(
                f"{node.id}: rejected by the smoke gate: --require-smoke, and the cached bundle's smoke "
                f"run did not pass ({why})",
                hint="run the build on a host with the target's device (with --smoke), or drop --require-smoke",
            )
    materialize(ctx, node, source)


def materialize(ctx: BuildContext, node: Node, source: Path) -> None:
    """Copy (hard links where possible) a bundle to --out, atomically."""
    dest = ctx.settings.out / bundle_name(node)
    if (dest / BUNDLE_MANIFEST).is_file():
        try:
            current = bundles.read_manifest(dest).build_key
        except DocumentError:
            current = None  # a damaged copy in --out: replaced below
        if current == node.key:
            return

    def fill(tmp: Path) -> None:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                bundles.link_or_copy(path, tmp / path.relative_to(source))

    bundles.replace_folder(dest, fill)
