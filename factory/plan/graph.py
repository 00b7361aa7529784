"""PURE: manifest + lock + selectors -> build graph.

No I/O here besides reading the files a toolchain's image and macOS prefix are
made of, to hash them (as toolchains/images/plan.py does): everything else a node's output
depends on arrives as arguments, so the graph can be printed, diffed and
tested without Docker or a network.

    fetch(model) -> convert(model, quant, toolchain) -> compile(..., target) -> bundle(cell)
    tokenizer(model) ------------------------------------------------------> bundle(cell)

Convert runs once per (model, quant, toolchain) and is shared by every target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal

from factory.buildkey import build_key
from factory.errors import UsageError
from factory.manifest.load import LoadedManifest
from factory.manifest.lock import Lock
from factory.manifest.matrix import Cell, expand_cells
from factory.manifest.model import Model, Toolchain
from factory.tokenizer.hf_json import JSON_RECIPE
from factory.toolchains import FLOWS, Unsupported
from factory.toolchains.base import (
    SOURCE_FORMATS,
    StepArgv,
    kernel_check_digest,
    needs_kernel_check,
    with_kernel_check,
)
from factory.toolchains.images.plan import image_content_hash, metal_prefix_hash

NodeKind = Literal["fetch", "tokenizer", "convert", "compile", "bundle"]
NODE_KINDS: tuple[NodeKind, ...] = ("fetch", "tokenizer", "convert", "compile", "bundle")


@dataclass(frozen=True, kw_only=True)
class Node:
    kind: NodeKind
    id: str
    key: str
    deps: tuple[str, ...]
    locked: bool
    """False when an input still floats (no lock entry); `factory build` refuses such nodes."""
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CellPlan:
    cell: Cell
    toolchain: str
    flow: str
    runner: str
    os: str
    arch: str
    library: str
    params_index: str
    bundle: str
    """Id of the cell's bundle node."""


@dataclass(frozen=True)
class BuildGraph:
    nodes: tuple[Node, ...]
    """In dependency order: every node comes after the nodes it depends on."""
    cells: tuple[CellPlan, ...]
    unresolved: tuple[str, ...]
    """Floating references the lock did not resolve."""

    def of_kind(self, kind: NodeKind) -> list[Node]:
        return [n for n in self.nodes if n.kind == kind]


def plan(loaded: LoadedManifest, lock: Lock, *, only: Sequence[str] = (), skip: Sequence[str] = ()) -> BuildGraph:
    manifest = loaded.manifest
    cells = select(expand_cells(manifest), only, skip)
    models = {m.name: m for m in manifest.models}
    nodes: dict[str, Node] = {}
    unresolved: set[str] = set()
    environments = _Environments(loaded)

    def add(node: Node) -> Node:
        return nodes.setdefault(node.id, node)

    cell_plans = []
    for cell in cells:
        model = models[cell.model]
        toolchain = manifest.toolchains[model.toolchain]
        flow = FLOWS[toolchain.flow]
        target = manifest.targets[cell.target]
        toolchain_inputs, toolchain_locked = _toolchain_identity(toolchain, loaded.file_digests, lock, unresolved)
        environment = environments.of(model.toolchain)

        fetch = add(_fetch_node(loaded, lock, model, flow.name, unresolved))

        tokenizers_cpp = (
            toolchain.tokenizers_cpp.model_dump()
            if toolchain.tokenizers_cpp
            else {"submodule_of": toolchain.mlc_llm.model_dump()}
        )
        source = model.tokenizer.model_dump()
        if model.tokenizer.path is not None:
            source["path"] = {"sha256": loaded.file_digests[model.tokenizer.path]}
        tokenizer = add(
            _node(
                "tokenizer",
                f"tokenizer:{model.name}",
                {"source": source, "runtime_encoder": tokenizers_cpp, "tokenizer_json": JSON_RECIPE},
                (),
                locked=True,
                attrs={
                    "model": model.name,
                    "vocab": model.tokenizer.vocab,
                    "vocab_path": model.tokenizer.path,
                    "tokenizers_cpp": effective_tokenizers_cpp(toolchain),
                },
            )
        )

        model_inputs = _model_inputs(model)
        convert = add(
            _node(
                "convert",
                f"convert:{model.name}/{cell.quant}@{model.toolchain}",
                {
                    "toolchain": toolchain_inputs,
                    "environment": environment.for_convert(),
                    "model": model_inputs,
                    "quant": cell.quant,
                },
                (fetch,),
                locked=toolchain_locked,
                # No runner here: one convert serves targets on every runner; the
                # executor finds its output by build key in the cache or the store.
                attrs={
                    "model": model.name,
                    "quant": cell.quant,
                    "toolchain": model.toolchain,
                    "flow": flow.name,
                    "steps": steps_view(flow.convert_steps(model, cell.quant, SOURCE_FORMATS[model.weight_format])),
                },
            )
        )

        argument = flow.target_argument(target)
        library = flow.library_name(cell.model, cell.quant, cell.target, target)
        # The manifest checks already rejected unsupported cells.
        assert not isinstance(argument, Unsupported) and not isinstance(library, Unsupported)
        target_inputs: dict[str, Any] = {**target.model_dump(mode="json"), "argument": argument, "library": library}
        if needs_kernel_check(target):
            target_inputs["kernel_check"] = kernel_check_digest()
        compile_steps = with_kernel_check(
            flow.compile_steps(model, cell.quant, cell.target, target, toolchain.build), target
        )
        compile_ = add(
            _node(
                "compile",
                f"compile:{cell.id}@{model.toolchain}",
                {
                    "toolchain": toolchain_inputs,
                    "environment": environment.for_runner(target.runner),
                    "model": model_inputs,
                    "quant": cell.quant,
                    "target": target_inputs,
                },
                (convert,),
                locked=toolchain_locked,
                attrs={
                    "model": model.name,
                    "quant": cell.quant,
                    "target": cell.target,
                    "toolchain": model.toolchain,
                    "flow": flow.name,
                    "runner": target.runner,
                    "os": target.os,
                    "arch": target.arch,
                    "target_argument": argument,
                    "library": library,
                    "steps": steps_view(compile_steps),
                },
            )
        )

        params_index = toolchain.params_index or flow.params_index
        bundle = add(
            _node(
                "bundle",
                f"bundle:{cell.id}",
                {"cell": cell.id, "flow": flow.name, "params_index": params_index, "library": library},
                (compile_, convert, tokenizer),
                locked=True,
                attrs={"model": model.name, "quant": cell.quant, "target": cell.target, "params_index": params_index},
            )
        )
        cell_plans.append(
            CellPlan(
                cell=cell,
                toolchain=model.toolchain,
                flow=flow.name,
                runner=target.runner,
                os=target.os,
                arch=target.arch,
                library=library,
                params_index=params_index,
                bundle=bundle.id,
            )
        )

    ordered = sorted(nodes.values(), key=lambda n: (NODE_KINDS.index(n.kind), n.id))
    return BuildGraph(nodes=tuple(ordered), cells=tuple(cell_plans), unresolved=tuple(sorted(unresolved)))


def steps_view(steps: Sequence[StepArgv]) -> list[dict[str, Any]]:
    """PURE: the exact commands a node runs (tags, archs, offload switches), for people and
    CI to read in `factory plan --format json`; the build key already covers their inputs."""
    return [{"name": s.name, "argv": list(s.argv), "env": dict(s.env)} for s in steps]


def effective_tokenizers_cpp(toolchain: Toolchain) -> str | None:
    """The tokenizers-cpp commit the toolchain's runtime carries (override, else mlc-llm's submodule)."""
    from factory.tokenizer.rwkv_world import MLC_LLM_TOKENIZERS_CPP

    if toolchain.tokenizers_cpp is not None:
        return toolchain.tokenizers_cpp.commit
    return MLC_LLM_TOKENIZERS_CPP.get(toolchain.mlc_llm.commit)


def select(cells: Sequence[Cell], only: Sequence[str], skip: Sequence[str]) -> list[Cell]:
    """Cells whose id `model/quant/target` matches an --only glob (all if none) and no --skip glob."""
    for pattern in only:
        if not any(fnmatchcase(c.id, pattern) for c in cells):
            raise UsageError(
                f"--only {pattern!r} matches no cell",
                hint="cell ids are MODEL/QUANT/TARGET globs, e.g. 'rwkv-5-world-*/q4f16_1/*'; "
                "`factory plan` lists them",
            )
    chosen = [
        c
        for c in cells
        if (not only or any(fnmatchcase(c.id, p) for p in only)) and not any(fnmatchcase(c.id, p) for p in skip)
    ]
    if not chosen:
        raise UsageError(
            "the selection is empty: no cell is left after --only/--skip",
            hint="loosen the globs; `factory plan` without selectors lists every cell",
        )
    return chosen


def _node(
    kind: NodeKind, node_id: str, inputs: Any, deps: Sequence[Node], *, locked: bool, attrs: Mapping[str, Any]
) -> Node:
    return Node(
        kind=kind,
        id=node_id,
        key=build_key(kind, inputs, (d.key for d in deps)),
        deps=tuple(d.id for d in deps),
        locked=locked and all(d.locked for d in deps),
        attrs=attrs,
    )


def _fetch_node(loaded: LoadedManifest, lock: Lock, model: Model, flow: str, unresolved: set[str]) -> Node:
    """A hub model is known by its locked commit; a local one by the content hash of its
    files (not its path: moving the folder rebuilds nothing)."""
    if model.local is not None:
        local = loaded.local_models[model.name]
        return _node(
            "fetch",
            f"fetch:{model.name}",
            {"local_sha256": local.digest, "flow": flow, "format": model.local.format},
            (),
            locked=True,
            attrs={
                "model": model.name,
                "local": str(local.folder),
                "sha256": local.digest,
                "revision": f"sha256:{local.digest}",
                "format": model.local.format,
            },
        )
    assert model.hf is not None  # the manifest checks demand exactly one source
    commit = lock.hf_commit(model.hf.repo, model.hf.revision)
    if commit is None:
        unresolved.add(f"hf {model.hf.repo}@{model.hf.revision}")
    return _node(
        "fetch",
        f"fetch:{model.name}",
        {"repo": model.hf.repo, "revision": model.hf.revision, "commit": commit, "flow": flow,
         "format": model.hf.format},
        (),
        locked=commit is not None,
        attrs={
            "model": model.name,
            "repo": model.hf.repo,
            "revision": commit or model.hf.revision,
            "format": model.hf.format,
        },
    )  # fmt: skip


def _model_inputs(model: Model) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "type": model.type,
        "conv_template": model.conv_template,
        "context_window": model.context_window,
        "overrides": list(model.overrides.enabled()),
    }
    if model.overrides.float32_layers:  # only then: every other model keeps its keys
        inputs["float32_layers"] = model.overrides.float32_layers
    return inputs


@dataclass(frozen=True, kw_only=True)
class _Environment:
    """Where a toolchain's steps run: its image content and its macOS prefix."""

    image: str
    """Hash of the image's Dockerfile, context files, patches and pins (no base: the
    base digest is part of the toolchain identity already)."""
    metal_prefix: str | None
    """The metal-runner prefix hash, when a host-runner target uses the toolchain."""

    def for_runner(self, runner: str) -> dict[str, str | None]:
        if runner == "host":
            return {"metal_prefix": self.metal_prefix}
        return {"image": self.image}

    def for_convert(self) -> dict[str, str | None]:
        # One convert serves every runner and runs on whichever the building machine
        # has (the container on Linux, the prefix on macOS): its key covers both.
        return {"image": self.image, "metal_prefix": self.metal_prefix}


class _Environments:
    """Per-toolchain environment hashes, computed once per plan (hashing reads files)."""

    def __init__(self, loaded: LoadedManifest) -> None:
        self.loaded = loaded
        self._seen: dict[str, _Environment] = {}
        manifest = loaded.manifest
        toolchain_of = {m.name: m.toolchain for m in manifest.models}
        # From the whole manifest, not the selection: a key never depends on --only.
        self._hosted = {
            toolchain_of[c.model] for c in expand_cells(manifest) if manifest.targets[c.target].runner == "host"
        }

    def of(self, name: str) -> _Environment:
        if name not in self._seen:
            self._seen[name] = _Environment(
                image=image_content_hash(self.loaded, name),
                metal_prefix=metal_prefix_hash(self.loaded, name) if name in self._hosted else None,
            )
        return self._seen[name]


def _toolchain_identity(
    toolchain: Toolchain, digests: Mapping[str, str], lock: Lock, unresolved: set[str]
) -> tuple[dict[str, Any], bool]:
    """What makes two toolchains build the same bytes: pins, options, base image
    digest and patch contents. The toolchain's name is deliberately left out."""
    identity = toolchain.model_dump(mode="json")
    identity["patches"] = [
        {"applies_to": p.applies_to, "provides": list(p.provides), "sha256": digests[p.path]} for p in toolchain.patches
    ]
    digest = lock.image_digest(toolchain.base_image)
    if digest is None:
        unresolved.add(f"image {toolchain.base_image}")
    identity["base_image_digest"] = digest
    return identity, digest is not None
