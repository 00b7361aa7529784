"""`factory build`: what each node kind does, wired to the executor.

fetch      huggingface_hub snapshot at the locked commit (host)
tokenizer  tokenizer_model from the vocab + the conformance check (host)
convert    the flow's convert steps in the toolchain (container or host runner)
compile    the flow's compile steps for one target (container or host runner)
bundle     assemble, gate, describe; then materialize under --out
"""

from __future__ import annotations

import hashlib
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
from .manifest.model import Target, Toolchain
from .plan import BuildGraph, Node
from .process import display
from .runners import Mount, Runner, Step
from .toolchains import FLOWS
from .toolchains.base import CONVERTED, MODEL_ROOT, OUT, SOURCE_FORMATS, StepArgv


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
    mlc_llm_source: Path | None = None
    """A local mlc-llm archive or checkout for wheel toolchain images."""


class Toolchains:
    """Runners and images for toolchains, made on first use and shared by every node."""

    def __init__(
        self,
        loaded: LoadedManifest,
        lock: Lock,
        log: Callable[[str], None],
        registry: str | None = None,
        mlc_llm_source: Path | None = None,
    ) -> None:
        self.loaded, self.lock, self.log, self.registry = loaded, lock, log, registry
        self.mlc_llm_source = mlc_llm_source
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
            extras = BuildExtras(mlc_llm_source=self.mlc_llm_source) if self.mlc_llm_source else BuildExtras()
            outcome = ensure_image(client, plan, extras, BuildLog(line=self.log), self.registry)
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
        self.toolchains = Toolchains(loaded, lock, log, settings.registry, settings.mlc_llm_source)
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

        model = self.models[str(node.attrs["model"])]
        index = self.loaded.manifest.models.index(model)
        fetch_snapshot(
            model.hf.repo, str(node.attrs["revision"]), out / "model" / model.name, model.hf.format,
            field=f"models[{index}].hf.format",
        )  # fmt: skip
        meta["source_format"] = SOURCE_FORMATS[model.hf.format]
        meta["commit"] = node.attrs["revision"]
        return model.hf.format

    def tokenizer(self, node: Node, out: Path, meta: dict[str, Any]) -> str:
        from . import rwkv_world_tokenizer as tok

        vocab_rel = node.attrs.get("vocab_path")
        vocab = self.loaded.root / str(vocab_rel) if vocab_rel else tok.upstream_vocab_path()
        commit = node.attrs.get("tokenizers_cpp")
        encoder = tok.runtime_encoder(str(commit) if commit else None, context=f"model {node.attrs['model']}")
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
        steps = flow.convert_steps(model, str(node.attrs["quant"]), SOURCE_FORMATS[model.hf.format])
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
        build = self.loaded.manifest.toolchains[str(node.attrs["toolchain"])].build
        steps = flow.compile_steps(model, quant, target_name, target, build)
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
                "tvm": toolchain.tvm_identity,
                "patches": patches_digest(self.loaded, toolchain),
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
        return ", ".join(_gate_summary(r) for r in results)

    def _gates(
        self,
        bundle_dir: Path,
        model_name: str,
        model_type: str,
        quant: str,
        params_dir: str,
        params_index: str,
        library_name: str,
        target: Target,
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
        hint = gates.nan_hint(model_name, model_type, quant)
        results = [
            layout,
            gates.check_params(
                params, params_index=params_index, chat_config=config, quantization=quant, nan_hint=hint
            ),
            self._library(bundle_dir, library_name, model_name, target, config, quant, params / params_index),
        ]
        if self.settings.smoke or self.settings.require_smoke:
            if _has_device(target):
                smoke = self._smoke(bundle_dir, params_dir, library_name, target, model_name, hint)
            else:
                smoke = gates.no_device(target.device_kind, _device_reason(target))
        else:
            smoke = gates.not_run("smoke", "not asked for (--smoke)")
        if self.settings.require_smoke and smoke.status != "passed":
            smoke = gates.GateResult(
                "smoke",
                "failed",
                (f"--require-smoke: {smoke.details.get('reason', 'no smoke result')}", *smoke.problems),
                smoke.hint or f"run the build on a host with a {target.device_kind} device, or drop --require-smoke",
                smoke.details,
            )
        results.append(smoke)
        results.append(self._parity(bundle_dir, params_dir, library_name, target, model_name, quant))
        return results

    def _parity(
        self, bundle_dir: Path, params_dir: str, library_name: str, target: Target, model_name: str, quant: str
    ) -> gates.GateResult:
        """The bundle's next-token distributions against the RWKV reference implementation
        on the same checkpoint and tokens (factory/parity.py has the figures and bounds)."""
        from . import parity
        from .vm_script import Tokenizer

        model = self.models[model_name]
        if self.loaded.manifest.toolchains[model.toolchain].flow == "legacy":
            return gates.not_run(
                "parity", "legacy-flow libraries have no RNN-state functions the Relax VM runner can drive"
            )
        if target.device_kind not in ("llvm", "cuda"):
            return gates.not_run("parity", f"the Relax VM runner does not drive {target.device_kind} devices")
        if not _has_device(target):
            return gates.not_run("parity", f"no {target.device_kind} device on this host: {_device_reason(target)}")
        params = bundle_dir / params_dir if params_dir else bundle_dir
        tokens = Tokenizer(params / bundles.TOKENIZER).encode(parity.PARITY_TEXT)[: parity.PARITY_TOKENS]
        work = self.settings.work / "parity" / f"{model_name}-{quant}-{library_name}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        (work / "tokens.json").write_text(json.dumps(tokens))
        extra = (
            Mount(source=self._model_dir(model_name), target=f"{MODEL_ROOT}/{model_name}"),
            Mount(source=work, target="/parity", read_only=False),
        )
        device = "cuda" if target.device_kind == "cuda" else "cpu"
        params_in = f"/bundle/{params_dir}" if params_dir else "/bundle"
        runs = (
            ("reference", ("/factory/reference_script.py", f"{MODEL_ROOT}/{model_name}",
                           "/parity/tokens.json", "/parity/reference.npy"), False),
            ("bundle", ("/factory/vm_script.py", "logits", params_in, f"/bundle/{library_name}",
                        "/parity/tokens.json", "/parity/bundle.npy", device), device == "cuda"),
        )  # fmt: skip
        for label, argv, gpu in runs:
            code, lines = self._in_toolchain(
                model_name, target, f"parity {label} {library_name}", argv, bundle_dir, gpu=gpu, extra=extra
            )
            if code != 0:
                return gates.GateResult(
                    "parity", "failed", (f"the {label} run exited with {code}", *lines[-8:]),
                    "see the output; the toolchain needs torch and the rwkv package for the reference",
                )  # fmt: skip
        import numpy as np

        _, bound = parity.threshold_for(quant)
        figures = parity.compare(np.load(work / "reference.npy"), np.load(work / "bundle.npy"), kl_bound=bound.kl_max)
        passed, problems, details = parity.verdict(figures, quant)
        if not passed:
            hint = "the bundle does not compute what the checkpoint computes; check the params and the patches"
            return gates.GateResult("parity", "failed", tuple(problems), hint, details)
        return gates.GateResult("parity", "passed", details=details)

    def _in_toolchain(
        self,
        model_name: str,
        target: Target,
        name: str,
        argv: tuple[str, ...],
        bundle_dir: Path,
        *,
        gpu: bool,
        extra: tuple[Mount, ...] = (),
    ) -> tuple[int, list[str]]:
        """Run a factory script against a bundle inside the model's toolchain, on the target's runner."""
        runner, image, _ = self.toolchains.runner(target.runner, self.models[model_name].toolchain)
        here = Path(__file__).parent
        scripts = ("vm_script.py", "smoke_script.py", "reference_script.py")
        step = Step(
            name=name,
            image=image,
            argv=("python", *argv),
            mounts=(
                Mount(source=bundle_dir, target="/bundle"),
                *(Mount(source=here / script, target=f"/factory/{script}") for script in scripts),
                *extra,
            ),
            needs_gpu=gpu,
        )
        lines: list[str] = []
        result = runner.run(step, lines.append)
        return result.exit_code, lines

    def _library(
        self,
        bundle_dir: Path,
        library_name: str,
        model_name: str,
        target: Target,
        config: dict[str, Any],
        quant: str,
        index: Path,
    ) -> gates.GateResult:
        """The library as its own toolchain loads it: `_metadata` and exported functions
        against config and params; a CUDA library must hold compiled GPU code."""
        library = bundle_dir / library_name
        if target.device_kind == "cuda" and (problem := gates.cuda_code_problem(library)):
            return gates.GateResult("library", "failed", (problem,), "rebuild in a toolchain whose TVM can run nvcc")
        code, lines = self._in_toolchain(
            model_name, target, f"library {library_name}",
            ("/factory/vm_script.py", "library", f"/bundle/{library_name}"), bundle_dir, gpu=False,
        )  # fmt: skip
        probe = gates.parse_library(lines)
        if probe is None:
            reason = f"the toolchain could not load it (exit {code}): {lines[-1] if lines else 'no output'}"
            if target.device_kind == "llvm":
                tail = tuple(lines[-8:])
                return gates.GateResult("library", "failed", (reason, *tail), "a CPU library must load on a CPU")
            # A GPU library may need the device's driver just to load; that is not a verdict.
            return gates.not_run("library", reason)
        return gates.judge_library(
            library_name,
            probe.get("metadata", {}),
            chat_config=config,
            quantization=quant,
            records=gates.index_records(index),
            functions=probe.get("functions"),
        )

    def _smoke(
        self, bundle_dir: Path, params_dir: str, library_name: str, target: Target, model_name: str, hint: str
    ) -> gates.GateResult:
        """The fixed prompt through the bundle, in its toolchain, on the target's device:
        CPU bundles through TVM's Relax VM, GPU bundles through mlc-llm's runtime."""
        params = f"/bundle/{params_dir}" if params_dir else "/bundle"
        library = f"/bundle/{library_name}"
        if target.device_kind == "llvm":
            argv: tuple[str, ...] = ("/factory/vm_script.py", "run", params, library, SMOKE_PROMPT, str(SMOKE_TOKENS))
        else:
            flow = self.loaded.manifest.toolchains[self.models[model_name].toolchain].flow
            argv = ("/factory/smoke_script.py", flow, params, library, target.device_kind)
        code, lines = self._in_toolchain(
            model_name, target, f"smoke {library_name}", argv, bundle_dir, gpu=target.device_kind != "llvm"
        )
        figures = gates.parse_smoke(lines)
        if code != 0 or figures is None:
            return gates.GateResult("smoke", "failed", (f"the smoke run exited with {code}", *lines[-10:]), hint)
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


def _gate_summary(result: gates.GateResult) -> str:
    """One gate in the build summary, with its figures where it has some."""
    details = result.details
    if result.gate == "parity" and result.status == "passed":
        return f"parity passed (KL mean {details['kl_mean']:.2g}, top-1 {details['top1']:.2f})"
    if result.gate == "smoke" and result.status == "passed" and details.get("decode_tok_s"):
        return f"smoke passed ({details['prefill_tok_s']} / {details['decode_tok_s']} tok/s)"
    return f"{result.gate} {result.status}"


def patches_digest(loaded: LoadedManifest, toolchain: Toolchain) -> str | None:
    """One sha256 over the toolchain's patches (target and content, in order), or None
    without patches: a patched mlc-llm is a different compiler, and the key says so."""
    if not toolchain.patches:
        return None
    lines = "".join(f"{p.applies_to} {loaded.file_digests[p.path]}\n" for p in toolchain.patches)
    return hashlib.sha256(lines.encode()).hexdigest()


def bundle_name(node: Node) -> str:
    return f"{node.attrs['model']}-{node.attrs['quant']}-{node.attrs['target']}"


# The smoke run of CPU bundles: a fixed prompt in the conversation template's own
# shape (the Relax VM runner adds no roles), and a few greedy tokens.
SMOKE_PROMPT = "User: Tell me about the RWKV language model in one sentence.\n\nAssistant:"
SMOKE_TOKENS = 8
_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}


def _has_device(target: Target) -> bool:
    kind = target.device_kind
    if kind == "cuda":
        return shutil.which("nvidia-smi") is not None
    if kind == "metal":
        return sys.platform == "darwin" and platform.machine() == "arm64"
    if kind == "llvm":
        host_os = {"linux": "linux", "darwin": "macos"}.get(sys.platform)
        return host_os == target.os and _HOST_ARCH.get(platform.machine().lower()) == target.arch
    return False


def _device_reason(target: Target) -> str:
    kind = target.device_kind
    if kind == "cuda":
        return "nvidia-smi not found"
    if kind == "metal":
        return "not an Apple Silicon Mac"
    if kind == "llvm":
        return f"this host is {sys.platform}/{platform.machine()}, the library is for {target.os}/{target.arch}"
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
