"""`factory build`: what each node kind does, wired to the executor.

fetch      huggingface_hub snapshot at the locked commit (host)
tokenizer  tokenizer_model from the vocab + the conformance check (host)
convert    the flow's convert steps in the toolchain (container or host runner)
compile    the flow's compile steps for one target (container or host runner)
bundle     assemble, gate, describe; then materialize under --out
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, gates
from . import bundle as bundles
from .errors import FactoryError
from .executor import Executor, NodeCache, Outcome
from .lock import Lock
from .manifest.load import LoadedManifest
from .plan import BuildGraph, Node
from .process import display
from .runners import Mount, Runner, Step
from .toolchains import FLOWS
from .toolchains.base import CONVERTED, MODEL_ROOT, OUT, StepArgv


class StepFailed(FactoryError):
    exit_code = 1


class RunnerUnavailable(FactoryError):
    exit_code = 1


@dataclass(frozen=True, kw_only=True)
class BuildSettings:
    work: Path
    out: Path
    jobs: int = 2
    smoke: bool = False
    require_smoke: bool = False
    registry: str | None = None
    """A registry caching toolchain images by content tag (pulled before building one)."""


class Toolchains:
    """Runners and images for toolchains, made on first use and shared by every node."""

    def __init__(
        self, loaded: LoadedManifest, lock: Lock, log: Callable[[str], None], registry: str | None = None
    ) -> None:
        self.loaded, self.lock, self.log, self.registry = loaded, lock, log, registry
        self._client: Any = None
        self._images: dict[str, tuple[str, str]] = {}

    def _engine(self) -> Any:
        if self._client is None:
            from .engine import docker_client

            self._client = docker_client()
        return self._client

    def image(self, toolchain: str) -> tuple[str, str]:
        """(reference, image id) of the toolchain's image, built if the engine lacks it."""
        if toolchain not in self._images:
            from .images import BuildExtras, BuildLog, ensure_image, plan_for_engine

            client = self._engine()
            plan = plan_for_engine(client, self.loaded, toolchain, self.lock)
            outcome = ensure_image(client, plan, BuildExtras(), BuildLog(line=self.log), self.registry)
            self._images[toolchain] = (outcome.ref, outcome.image_id)
        return self._images[toolchain]

    def runner(self, kind: str, toolchain: str) -> tuple[Runner, str, str]:
        """(runner, image ref, image id) for a step of `toolchain` on a `kind` runner."""
        if kind == "container":
            from .runners.container import ContainerRunner

            ref, image_id = self.image(toolchain)
            return ContainerRunner(self._engine()), ref, image_id
        if sys.platform != "darwin":
            raise RunnerUnavailable(
                f"toolchain {toolchain}: host (macOS metal-runner) steps cannot run on {sys.platform}",
                hint="build these cells on a macOS arm64 runner (the release workflow's metal job), "
                "or leave them out with --skip",
            )
        from .image_plan import plan_metal_prefix
        from .paths import prefix_root
        from .runners.host import HostRunner

        prefix = plan_metal_prefix(self.loaded, toolchain)
        return HostRunner(prefix_root() / prefix.hash), "", f"metal-prefix:{prefix.hash}"


def _convert_runner_kind() -> str:
    # One conversion serves every target; it runs where this machine can run steps.
    return "host" if sys.platform == "darwin" else "container"


class CellBuilder:
    def __init__(
        self, loaded: LoadedManifest, lock: Lock, graph: BuildGraph, settings: BuildSettings, log: Callable[[str], None]
    ) -> None:
        self.loaded, self.lock, self.graph, self.settings, self.log = loaded, lock, graph, settings, log
        self.cache = NodeCache(settings.work / "nodes")
        self.toolchains = Toolchains(loaded, lock, log, settings.registry)
        self.by_id = {n.id: n for n in graph.nodes}
        self.models = {m.name: m for m in loaded.manifest.models}

    # -- helpers ---------------------------------------------------------------
    def _dep(self, node: Node, kind: str) -> Node:
        return next(self.by_id[d] for d in node.deps if self.by_id[d].kind == kind)

    def _model_dir(self, model: str) -> Path:
        fetch = self.by_id[f"fetch:{model}"]
        return self.cache.path(fetch) / "model" / model

    def _run_steps(
        self, node: Node, steps: tuple[StepArgv, ...], runner_kind: str, mounts: tuple[Mount, ...], out: Path
    ) -> tuple[str, str]:
        toolchain = str(node.attrs["toolchain"])
        runner, image, image_id = self.toolchains.runner(runner_kind, toolchain)
        # Beside the node cache, not in the node's folder: a failed node's folder is discarded.
        log_path = self.settings.work / "logs" / f"{node.kind}-{node.key[:16]}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as log_file:
            for argv in steps:
                step = Step(
                    name=f"{node.id} {argv.name}",
                    image=image,
                    argv=argv.argv,
                    mounts=(*mounts, Mount(source=out, target=OUT, read_only=False)),
                    workdir=OUT,
                    env=dict(argv.env),
                )
                self.log(f"{node.id}: {display(argv.argv[:3])} ...")
                log_file.write(f"+ {display(argv.argv)}\n")

                def keep(line: str) -> None:
                    log_file.write(line + "\n")

                result = runner.run(step, keep)
                if not result.ok:
                    tail = "\n    ".join(result.tail[-15:])
                    raise StepFailed(
                        f"{node.id}: {argv.name} exited with {result.exit_code}:\n    {tail}",
                        hint=f"the full log is {log_path}; rerun the build to reproduce",
                    )
        return image, image_id

    # -- node kinds ------------------------------------------------------------
    def fetch(self, node: Node, out: Path, meta: dict[str, Any]) -> str:
        from .fetch import fetch_snapshot

        model = str(node.attrs["model"])
        source_format = fetch_snapshot(str(node.attrs["repo"]), str(node.attrs["revision"]), out / "model" / model)
        meta["source_format"] = source_format
        meta["commit"] = node.attrs["revision"]
        return source_format

    def tokenizer(self, node: Node, out: Path, meta: dict[str, Any]) -> str:
        from . import rwkv_world_tokenizer as tok

        vocab_rel = node.attrs.get("vocab_path")
        vocab = self.loaded.root / str(vocab_rel) if vocab_rel else tok.upstream_vocab_path()
        commit = node.attrs.get("tokenizers_cpp")
        encoder = tok.runtime_encoder(str(commit)) if commit else "longest-prefix"
        blob = tok.pack(tok.parse_vocab(vocab))
        report = tok.check_tokenizer(blob, encoder=encoder)
        if not report.passed:
            raise tok.explain_failure(report, f"tokenizers-cpp {commit or 'unknown'} (model {node.attrs['model']})")
        tok.write_tokenizer_model(tok.unpack(blob), out / bundles.TOKENIZER)
        meta["check"] = report.summary()
        meta["encoder"] = encoder
        return report.summary()

    def convert(self, node: Node, out: Path, meta: dict[str, Any]) -> str:
        model = self.models[str(node.attrs["model"])]
        flow = FLOWS[str(node.attrs["flow"])]
        fetch = self._dep(node, "fetch")
        source_format = self.cache.meta(fetch)["source_format"]
        steps = flow.convert_steps(model, str(node.attrs["quant"]), source_format)
        mounts = (Mount(source=self._model_dir(model.name), target=f"{MODEL_ROOT}/{model.name}"),)
        image, image_id = self._run_steps(node, steps, _convert_runner_kind(), mounts, out)
        meta.update(image=image, image_id=image_id, argv=[list(s.argv) for s in steps])
        return f"{len(steps)} step(s)"

    def compile(self, node: Node, out: Path, meta: dict[str, Any]) -> str:
        model = self.models[str(node.attrs["model"])]
        flow = FLOWS[str(node.attrs["flow"])]
        quant, target_name = str(node.attrs["quant"]), str(node.attrs["target"])
        target = self.loaded.manifest.targets[target_name]
        convert = self._dep(node, "convert")
        converted = self.cache.path(convert) / flow.converted_params(model.name, quant)
        steps = flow.compile_steps(model, quant, target_name, target)
        mounts = (
            Mount(source=self._model_dir(model.name), target=f"{MODEL_ROOT}/{model.name}"),
            Mount(source=converted, target=CONVERTED),
        )
        image, image_id = self._run_steps(node, steps, str(node.attrs["runner"]), mounts, out)
        library = out / flow.compiled_library(model.name, quant, target_name, target)
        if not library.is_file():
            raise StepFailed(f"{node.id}: the compile steps wrote no {library.relative_to(out)}")
        meta.update(image=image, image_id=image_id, argv=[list(s.argv) for s in steps])
        return library.name

    def bundle(self, node: Node, out: Path, meta: dict[str, Any]) -> str:
        model = self.models[str(node.attrs["model"])]
        quant, target_name = str(node.attrs["quant"]), str(node.attrs["target"])
        target = self.loaded.manifest.targets[target_name]
        compile_node, convert_node = self._dep(node, "compile"), self._dep(node, "convert")
        tokenizer_node, fetch_node = self._dep(node, "tokenizer"), self._dep(convert_node, "fetch")
        flow = FLOWS[str(compile_node.attrs["flow"])]
        toolchain_name = str(compile_node.attrs["toolchain"])
        toolchain = self.loaded.manifest.toolchains[toolchain_name]
        params_index = str(node.attrs["params_index"])
        library_name = str(compile_node.attrs["library"])
        params_dir = flow.bundle_params_dir()
        bundle_dir = out / "bundle"
        bundles.assemble(
            bundle_dir,
            params_source=self.cache.path(convert_node) / flow.converted_params(model.name, quant),
            params_dir=params_dir,
            params_index=params_index,
            library=self.cache.path(compile_node) / flow.compiled_library(model.name, quant, target_name, target),
            library_name=library_name,
            tokenizer=self.cache.path(tokenizer_node) / bundles.TOKENIZER,
        )
        results = self._gates(bundle_dir, model.name, model.type, quant, params_dir, params_index, library_name, target)
        failed = [r for r in results if r.failed]
        gate_json = {r.gate: r.as_json() for r in results}
        if failed:
            lines = "\n    ".join(p for r in failed for p in r.problems)
            raise gates.GateFailure(
                f"{node.id}: rejected by the {', '.join(r.gate for r in failed)} gate(s):\n    {lines}",
                hint=failed[0].hint,
            )
        compile_meta = self.cache.meta(compile_node)
        cell = {
            "model": model.name,
            "quant": quant,
            "target": target_name,
            "name": f"{model.name}/{quant}/{target_name}",
        }
        manifest = bundles.bundle_manifest(
            cell=cell,
            files=bundles.describe(bundle_dir, params_index, library_name),
            compatibility={
                "flow": flow.name,
                "params_index": params_index,
                "mlc_llm": toolchain.mlc_llm.commit,
                "tvm": toolchain.tvm.commit,
                "device": compile_node.attrs["target_argument"],
                "library": library_name,
            },
            provenance={
                "toolchain": toolchain_name,
                "pins": {
                    "tvm": toolchain.tvm.model_dump(),
                    "mlc_llm": toolchain.mlc_llm.model_dump(),
                    "tokenizers_cpp": tokenizer_node.attrs.get("tokenizers_cpp"),
                    "build": toolchain.build.model_dump(),
                    "cuda_version": toolchain.cuda_version,
                    "base_image": toolchain.base_image,
                    "base_image_digest": self.lock.image_digest(toolchain.base_image),
                },
                "image": compile_meta.get("image"),
                "image_id": compile_meta.get("image_id"),
                "model": {"repo": model.hf.repo, "revision": model.hf.revision, "commit": fetch_node.attrs["revision"]},
                "factory_version": __version__,
                "build_key": node.key,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "release": self.loaded.manifest.release.model_dump(),
            },
            gates=gate_json,
            run=bundles.run_command(flow.name, params_dir, library_name, target.device_kind),
        )
        bundles.write_manifest(bundle_dir, manifest)
        self.materialize(node, bundle_dir)
        return ", ".join(f"{r.gate} {r.status}" for r in results)

    def _gates(
        self,
        bundle_dir: Path,
        model_name: str,
        model_type: str,
        quant: str,
        params_dir: str,
        params_index: str,
        library_name: str,
        target: Any,
    ) -> list[gates.GateResult]:
        layout = gates.lint_layout(
            bundle_dir,
            params_dir=params_dir,
            params_index=params_index,
            library_name=library_name,
            library_suffix=target.library_suffix,
        )
        if layout.failed:
            return [layout]
        params = bundle_dir / params_dir if params_dir else bundle_dir
        config = json.loads((params / bundles.CHAT_CONFIG).read_text())
        results = [
            layout,
            gates.check_params(
                params,
                params_index=params_index,
                chat_config=config,
                quantization=quant,
                nan_hint=gates.nan_hint(model_name, model_type, quant),
            ),
            gates.check_library(
                bundle_dir / library_name,
                chat_config=config,
                quantization=quant,
                records=gates.index_records(params / params_index),
            ),
        ]
        if (self.settings.smoke or self.settings.require_smoke) and _has_device(target.device_kind):
            smoke = self._smoke(bundle_dir, params_dir, library_name, target, model_name, model_type, quant)
        else:
            smoke = gates.no_device(target.device_kind, _device_reason(target.device_kind))
        if self.settings.require_smoke and smoke.status != "passed":
            smoke = gates.GateResult(
                "smoke",
                "failed",
                (f"--require-smoke: {smoke.details.get('reason', 'no smoke result')}",),
                f"run the build on a host with a {target.device_kind} device, or drop --require-smoke",
                smoke.details,
            )
        results.append(smoke)
        return results

    def _smoke(
        self,
        bundle_dir: Path,
        params_dir: str,
        library_name: str,
        target: Any,
        model_name: str,
        model_type: str,
        quant: str,
    ) -> gates.GateResult:
        """The fixed prompt through the bundle, in its toolchain, on the target's device."""
        model = self.models[model_name]
        toolchain = model.toolchain
        flow = self.loaded.manifest.toolchains[toolchain].flow
        runner, image, _ = self.toolchains.runner(target.runner, toolchain)
        script = Path(__file__).with_name("smoke_script.py")
        params = f"/bundle/{params_dir}" if params_dir else "/bundle"
        step = Step(
            name=f"smoke {model_name}/{quant}",
            image=image,
            argv=("python", "/factory/smoke_script.py", flow, params, f"/bundle/{library_name}", target.device_kind),
            mounts=(
                Mount(source=bundle_dir, target="/bundle"),
                Mount(source=script, target="/factory/smoke_script.py"),
            ),
            needs_gpu=True,
        )
        lines: list[str] = []
        result = runner.run(step, lines.append)
        figures = gates.parse_smoke(lines)
        hint = gates.nan_hint(model_name, model_type, quant)
        if not result.ok or figures is None:
            tail = tuple(lines[-10:])
            return gates.GateResult("smoke", "failed", (f"the smoke run exited with {result.exit_code}", *tail), hint)
        return gates.judge_smoke(figures, hint=hint)

    def cached_bundle(self, node: Node) -> None:
        """A cached bundle is accepted again only if it still meets this run's demands."""
        source = self.cache.path(node) / "bundle"
        if self.settings.require_smoke:
            smoke = bundles.read_manifest(source).get("gates", {}).get("smoke", {})
            if smoke.get("status") != "passed":
                raise gates.GateFailure(
                    f"{node.id}: rejected by the smoke gate: --require-smoke, and the cached bundle's smoke "
                    f"run did not pass ({smoke.get('reason') or smoke.get('status')})",
                    hint="run the build on a host with the target's device, or drop --require-smoke",
                )
        self.materialize(node, source)

    def materialize(self, node: Node, source: Path) -> None:
        """Copy (hard links where possible) a bundle to --out, atomically."""
        dest = self.settings.out / bundle_name(node)
        if (dest / bundles.BUNDLE_MANIFEST).is_file():
            current = bundles.read_manifest(dest).get("provenance", {}).get("build_key")
            if current == node.key:
                return

        def fill(tmp: Path) -> None:
            for path in sorted(source.rglob("*")):
                if path.is_file():
                    bundles.link_or_copy(path, tmp / path.relative_to(source))

        bundles.replace_folder(dest, fill)


def bundle_name(node: Node) -> str:
    return f"{node.attrs['model']}-{node.attrs['quant']}-{node.attrs['target']}"


def _has_device(kind: str) -> bool:
    if kind == "cuda":
        return shutil.which("nvidia-smi") is not None
    if kind == "metal":
        return sys.platform == "darwin" and platform.machine() == "arm64"
    return False


def _device_reason(kind: str) -> str:
    if kind == "cuda":
        return "nvidia-smi not found"
    if kind == "metal":
        return "not an Apple Silicon Mac"
    return f"smoke runs are not supported for {kind}"


def execute(
    loaded: LoadedManifest,
    lock: Lock,
    graph: BuildGraph,
    settings: BuildSettings,
    *,
    log: Callable[[str], None],
    on_event: Callable[[Outcome], None] = lambda _o: None,
    in_store: Callable[[Node], bool] = lambda _n: False,
) -> list[Outcome]:
    builder = CellBuilder(loaded, lock, graph, settings, log)
    executor = Executor(
        graph=graph,
        cache=builder.cache,
        handlers={
            "fetch": builder.fetch,
            "tokenizer": builder.tokenizer,
            "convert": builder.convert,
            "compile": builder.compile,
            "bundle": builder.bundle,
        },
        jobs=settings.jobs,
        in_store=in_store,
        after_cached=builder.cached_bundle,
        on_event=on_event,
    )
    return executor.run()
