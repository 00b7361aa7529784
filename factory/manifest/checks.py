"""Rules that relate the manifest's parts to each other and to upstream facts.

Each rule reports a Finding (path, message, fix); the loader turns paths into
file lines. All findings are collected, so one run lists every problem.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlparse

from factory.manifest.findings import Finding
from factory.manifest.matrix import expand_cells, rule_matches
from factory.manifest.model import NAME_RE, PATCHED_MODEL_TYPES, Manifest, Model, WeightFormat
from factory.manifest.toolchain_checks import project_file, toolchain_findings
from factory.manifest.weights import WEIGHT_PATTERNS, local_files, other_format
from factory.toolchains import FLOWS, Unsupported

# Which runner serves which device kinds. The container runner is Docker on
# Linux; the host runner is the macOS metal-runner prefix.
RUNNER_SERVES: dict[tuple[str, str], frozenset[str]] = {
    ("container", "linux"): frozenset({"cuda", "vulkan", "webgpu", "llvm"}),
    ("host", "macos"): frozenset({"metal"}),
}
# The toolchain build switch a device kind needs.
BACKEND_SWITCH = {"cuda": "cuda", "vulkan": "vulkan", "webgpu": "webgpu", "metal": "metal", "llvm": "llvm"}
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NAME_FIX = "use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit (e.g. rwkv-4-world-1b5)"


def check_manifest(manifest: Manifest, root: Path) -> list[Finding]:
    findings: list[Finding] = []
    for rule in (_names, _models, _quantization_names, _targets, toolchain_findings, _matrix_rules, _store):
        findings.extend(rule(manifest, root))
    if not findings:
        # Cell rules assume every reference resolves.
        findings.extend(_cells(manifest))
    return findings


def _bad_name(name: str) -> bool:
    return not NAME_RE.match(name) or ".." in name or len(name) > 64


def _suggest(value: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, sorted(known), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _names(m: Manifest, root: Path) -> Iterator[Finding]:
    for name in m.toolchains:
        if _bad_name(name):
            yield Finding(("toolchains", name), f"toolchain name {name!r} is not a safe folder name", _NAME_FIX)
    for name in m.targets:
        if _bad_name(name):
            yield Finding(("targets", name), f"target name {name!r} is not a safe folder name", _NAME_FIX)
    seen: dict[str, int] = {}
    for i, model in enumerate(m.models):
        if _bad_name(model.name):
            yield Finding(("models", i, "name"), f"model name {model.name!r} is not a safe folder name", _NAME_FIX)
        if model.name in seen:
            yield Finding(
                ("models", i, "name"),
                f"duplicate model name {model.name!r} (also models[{seen[model.name]}])",
                "give each model a unique name",
            )
        seen.setdefault(model.name, i)
    if _bad_name(m.release.name):
        yield Finding(("release", "name"), f"release name {m.release.name!r} is not a safe folder name", _NAME_FIX)
    for field, values in (("models", m.models), ("quantizations", m.quantizations), ("targets", m.targets)):
        if not values:
            yield Finding((field,), f"{field} is empty", f"list at least one entry under {field}")


def _hf_source(i: int, repo: str, revision: str) -> Iterator[Finding]:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
        valid = repo.count("/") == 1
    except HFValidationError:
        valid = False
    if not valid:
        yield Finding(
            ("models", i, "hf", "repo"),
            f"{repo!r} is not a Hugging Face repo id",
            "write it as ORG/NAME, e.g. RWKV/rwkv-4-world-1b5",
        )
    if not revision or any(c.isspace() for c in revision) or ".." in revision:
        yield Finding(
            ("models", i, "hf", "revision"),
            f"{revision!r} is not a usable git revision",
            "use a branch, tag or 40-hex commit, e.g. main",
        )


def _local_source(root: Path, i: int, path: str, weight_format: WeightFormat) -> Iterator[Finding]:
    """A local model folder must hold what a conversion reads: config.json and weights."""
    folder = root / path
    where = ("models", i, "local", "path")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        yield Finding(
            where,
            f"{path!r} ({folder}) {what}",
            "make an example model there with `factory example-model " + path + "`, or point path at a folder "
            "with config.json and weights (relative paths start at the manifest's root)",
        )
        return
    config = folder / "config.json"
    try:
        if not isinstance(json.loads(config.read_text(encoding="utf-8")), dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        yield Finding(where, f"{folder} has no config.json", "use a model folder in transformers layout")
        return
    except (OSError, ValueError) as exc:
        yield Finding(where, f"{config} is not a JSON object ({exc})", "restore the model's config.json")
        return
    if local_files(folder, weight_format) is None:
        other = other_format(weight_format)
        has_other = local_files(folder, other) is not None
        yield Finding(
            ("models", i, "local", "format"),
            f"{folder} has no {weight_format} weights ({', '.join(WEIGHT_PATTERNS[weight_format])})",
            f"set format: {other}" if has_other else "put the model's *.safetensors or pytorch_model*.bin files there",
        )


def _models(m: Manifest, root: Path) -> Iterator[Finding]:
    for i, model in enumerate(m.models):
        if (model.hf is None) == (model.local is None):
            both = model.hf is not None
            yield Finding(
                ("models", i),
                f"model {model.name!r} names {'both hf and local' if both else 'no weights: neither hf nor local'}",
                "give exactly one: hf: {repo: ORG/NAME} for a Hugging Face repo, or local: {path: FOLDER} "
                "for a folder with config.json and weights",
            )
        if model.hf is not None:
            yield from _hf_source(i, model.hf.repo, model.hf.revision)
        if model.local is not None:
            yield from _local_source(root, i, model.local.path, model.local.format)
        toolchain = m.toolchains.get(model.toolchain)
        if toolchain is None:
            yield Finding(
                ("models", i, "toolchain"),
                f"unknown toolchain {model.toolchain!r}",
                _suggest(model.toolchain, m.toolchains)
                + "define it under toolchains, or use one of: "
                + ", ".join(sorted(m.toolchains)),
            )
            continue
        flow = FLOWS[toolchain.flow]
        if flow.model_quantizations(model.type) is None:
            able = sorted(name for name, f in FLOWS.items() if f.model_quantizations(model.type) is not None)
            yield Finding(
                ("models", i, "type"),
                f"toolchain {model.toolchain!r} uses the {flow.name} flow, which cannot build {model.type} "
                f"models (mlc-llm at {flow.read_at[:8]})",
                f"put this model on a toolchain with flow: {' or '.join(able)}",
            )
            continue
        problem = flow.check_model(model)
        if problem is not None:
            yield Finding(("models", i, "name"), problem.message, problem.fix)
        yield from _patch_provisions(m, i, model)
        if model.tokenizer.path is not None:
            yield from project_file(
                root.resolve(),
                model.tokenizer.path,
                ("models", i, "tokenizer", "path"),
                "vocab",
                "vocab/rwkv_vocab.txt",
            )


def _patch_provisions(m: Manifest, index: int, model: Model) -> Iterator[Finding]:
    """What the model needs from its toolchain's patches: a model type upstream lacks, overrides."""
    toolchain = m.toolchains[model.toolchain]
    needed = PATCHED_MODEL_TYPES.get(model.type) if toolchain.flow == "current" else None
    if needed is not None and not any(needed in patch.model_types for patch in toolchain.patches):
        yield Finding(
            ("models", index, "type"),
            f"{model.type} needs the mlc-llm model type {needed!r}, which upstream mlc-llm does not have "
            f"and no patch of toolchain {model.toolchain!r} adds",
            f"add `{{path: images/wheel/patches/{needed}-model.patch, model_types: [{needed}]}}` to the toolchain's "
            "patches (a wheel toolchain), or use another model type",
        )
    provided = {o for patch in toolchain.patches for o in patch.provides}
    for override in model.overrides.enabled():
        if override not in provided:
            yield Finding(
                ("models", index, "overrides", override),
                f"no patch of toolchain {model.toolchain!r} provides {override} (upstream mlc-llm never added it)",
                f"add a patch with `provides: [{override}]` to the toolchain, or turn the override off",
            )


def _quantization_names(m: Manifest, root: Path) -> Iterator[Finding]:
    known = frozenset().union(*(f.cli_quantizations for f in FLOWS.values()))
    seen: set[str] = set()
    for i, quant in enumerate(m.quantizations):
        if quant in seen:
            yield Finding(("quantizations", i), f"duplicate quantization {quant!r}", "list each quantization once")
        seen.add(quant)
        if quant not in known:
            yield Finding(
                ("quantizations", i),
                f"unknown quantization {quant!r}: no pinned mlc-llm knows it",
                _suggest(quant, known) + "use a name from mlc-llm, e.g. q0f16, q4f16_1, q4f32_1",
            )


def _targets(m: Manifest, root: Path) -> Iterator[Finding]:
    for name, target in m.targets.items():
        served = RUNNER_SERVES.get((target.runner, target.os))
        if served is None:
            able = ", ".join(f"runner: {r} with os: {o}" for r, o in RUNNER_SERVES)
            yield Finding(
                ("targets", name, "runner"),
                f"no runner serves runner: {target.runner} on os: {target.os}",
                f"use {able}",
            )
        elif target.device_kind not in served:
            able = ", ".join(f"{kind} on {r}/{o}" for (r, o), kinds in RUNNER_SERVES.items() for kind in sorted(kinds))
            yield Finding(
                ("targets", name, "device"),
                f"no runner serves a {target.device_kind!r} device on runner: {target.runner}, os: {target.os}",
                f"pick a runner and os that serve it ({able})",
            )
        if target.device_kind == "webgpu" and target.suffix != "wasm":
            # mlc-llm's WebGPU build links a .wasm and asserts the output's suffix.
            yield Finding(
                ("targets", name, "suffix"),
                "a webgpu library is a WebAssembly module that browsers load",
                "set suffix: wasm",
            )


def _matrix_rules(m: Manifest, root: Path) -> Iterator[Finding]:
    model_names = [model.name for model in m.models]
    for kind in ("exclude", "include"):
        for i, rule in enumerate(getattr(m.matrix, kind)):
            if not any(
                rule_matches(rule, model, quant, target)
                for model in model_names
                for quant in m.quantizations
                for target in m.targets
            ):
                yield Finding(
                    ("matrix", kind, i),
                    f"this {kind} rule matches no cell "
                    f"(model={rule.model!r}, quant={rule.quant!r}, target={rule.target!r})",
                    "fix the globs against the names under models, quantizations and targets, or drop the rule",
                )


def _store(m: Manifest, root: Path) -> Iterator[Finding]:
    url = urlparse(m.store)
    if url.scheme == "s3":
        if not _S3_BUCKET.match(url.netloc):
            yield Finding(("store",), f"{m.store!r} has no valid bucket name", "write it as s3://BUCKET/PREFIX")
    elif url.scheme not in ("", "file"):
        yield Finding(
            ("store",),
            f"unsupported store scheme {url.scheme!r}",
            "use file://PATH, a plain path, or s3://BUCKET/PREFIX (any S3-compatible server via AWS_ENDPOINT_URL)",
        )


def _cells(m: Manifest) -> Iterator[Finding]:
    models = {model.name: model for model in m.models}
    quant_index = {q: i for i, q in enumerate(m.quantizations)}
    reported: set[tuple[str, ...]] = set()
    for cell in expand_cells(m):
        model = models[cell.model]
        toolchain = m.toolchains[model.toolchain]
        flow = FLOWS[toolchain.flow]
        target = m.targets[cell.target]
        exclude_hint = f"or add {{model: {cell.model}, quant: {cell.quant}, target: {cell.target}}} to matrix.exclude"
        supported = flow.model_quantizations(model.type) or frozenset()
        if cell.quant not in flow.cli_quantizations or cell.quant not in supported:
            quant_key = ("quant", cell.model, cell.quant)
            if quant_key not in reported:
                reported.add(quant_key)
                why = (
                    f"mlc-llm at {flow.read_at[:8]} does not know quantization {cell.quant!r}"
                    if cell.quant not in flow.cli_quantizations
                    else f"the {flow.name} flow cannot apply {cell.quant!r} to {model.type}"
                )
                yield Finding(
                    ("quantizations", quant_index[cell.quant]),
                    f"{why} (model {cell.model!r}, toolchain {model.toolchain!r})",
                    f"exclude it for this model, e.g. {{model: {cell.model}, quant: {cell.quant}}} "
                    "under matrix.exclude; "
                    f"supported: {', '.join(sorted(supported))}",
                )
            continue
        switch = BACKEND_SWITCH[target.device_kind]
        if not getattr(toolchain.build, switch):
            backend_key = ("backend", model.toolchain, cell.target)
            if backend_key not in reported:
                reported.add(backend_key)
                yield Finding(
                    ("targets", cell.target, "device"),
                    f"toolchain {model.toolchain!r} is not built with {switch}, so it cannot serve target "
                    f"{cell.target!r} (model {cell.model!r})",
                    f"set toolchains.{model.toolchain}.build.{switch}: true, {exclude_hint}",
                )
            continue
        for answer in (
            flow.target_argument(target),
            flow.library_name(cell.model, cell.quant, cell.target, target),
        ):
            if isinstance(answer, Unsupported):
                target_key = ("target", model.toolchain, cell.target, answer.message)
                if target_key not in reported:
                    reported.add(target_key)
                    yield Finding(
                        ("targets", cell.target),
                        f"toolchain {model.toolchain!r} ({flow.name} flow) cannot serve target "
                        f"{cell.target!r}: {answer.message}",
                        f"{answer.fix}, {exclude_hint}",
                    )
