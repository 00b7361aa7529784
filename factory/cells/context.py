"""What every step of a build shares: settings, the toolchains' runners and images, the
node cache, and the two ways a step runs things in a toolchain (its flow's argv, or a
factory script against a bundle)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory.cells.executor import NodeCache, Watch
from factory.errors import FactoryError
from factory.in_toolchain import SCRIPTS_DIR
from factory.manifest.load import LoadedManifest
from factory.manifest.lock import Lock
from factory.manifest.model import Target, Toolchain
from factory.plan.graph import BuildGraph, Node
from factory.process import display
from factory.runners import Cancellation, Mount, Runner, Step
from factory.toolchains.base import MODEL_ROOT, OUT, StepArgv

if TYPE_CHECKING:
    from factory.toolchains.images.builder import BuildExtras


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
    wheelhouse: Path | None = None
    offline: bool = False
    """Where pip finds wheels for a toolchain image this build makes, and whether only there."""

    def image_extras(self) -> BuildExtras:
        from factory.toolchains.images.builder import BuildExtras, check_extras

        extras = BuildExtras(wheelhouse=self.wheelhouse, offline=self.offline)
        if self.mlc_llm_source is not None:
            extras = replace(extras, mlc_llm_source=self.mlc_llm_source)
        check_extras(extras)
        return extras


class LineSink(Watch):
    """A Watch that also hears each step's output lines (live progress implements it)."""

    def line(self, node_id: str, text: str) -> None:
        """One line a step of `node_id` printed."""


class Toolchains:
    """Runners and images for toolchains, made on first use and shared by every node."""

    def __init__(
        self,
        loaded: LoadedManifest,
        lock: Lock,
        log: Callable[[str], None],
        cancel: Cancellation,
        registry: str | None = None,
        extras: BuildExtras | None = None,
    ) -> None:
        self.loaded, self.lock, self.log, self.registry = loaded, lock, log, registry
        self.cancel, self.extras = cancel, extras
        self._client: Any = None
        self._images: dict[str, tuple[str, str]] = {}

    def _engine(self) -> Any:
        if self._client is None:
            from factory.runners.engine import docker_client

            self._client = docker_client()
        return self._client

    def image(self, toolchain: str) -> tuple[str, str]:
        """(reference, image id) of the toolchain's image, built if the engine lacks it."""
        if toolchain not in self._images:
            from factory.toolchains.images.builder import BuildExtras, BuildLog, ensure_image, plan_for_engine

            client = self._engine()
            plan = plan_for_engine(client, self.loaded, toolchain, self.lock)
            outcome = ensure_image(client, plan, self.extras or BuildExtras(), BuildLog(line=self.log), self.registry)
            self._images[toolchain] = (outcome.ref, outcome.image_id)
        return self._images[toolchain]

    def runner(self, kind: str, toolchain: str) -> tuple[Runner, str, str]:
        """(runner, image ref, image id) for a step of `toolchain` on a `kind` runner."""
        if kind == "container":
            from factory.runners.container import ContainerRunner

            ref, image_id = self.image(toolchain)
            return ContainerRunner(self._engine(), cancel=self.cancel), ref, image_id
        if sys.platform != "darwin":
            raise RunnerUnavailable(
                f"toolchain {toolchain}: host (macOS metal-runner) steps cannot run on {sys.platform}",
                hint="build these cells on a macOS arm64 runner (the release workflow's metal job), "
                "or leave them out with --skip",
            )
        from factory.paths import prefix_root
        from factory.runners.host import HostRunner
        from factory.toolchains.images.plan import plan_metal_prefix

        prefix = plan_metal_prefix(self.loaded, toolchain)
        return HostRunner(prefix_root() / prefix.hash, cancel=self.cancel), "", f"metal-prefix:{prefix.hash}"


# Where a Vulkan run sees the work folder's Mesa shader cache.
MESA_CACHE = "/mesa-cache"


class BuildContext:
    """One build's shared state; the step functions take it as their first argument."""

    def __init__(
        self,
        loaded: LoadedManifest,
        lock: Lock,
        graph: BuildGraph,
        settings: BuildSettings,
        log: Callable[[str], None],
        *,
        cancel: Cancellation | None = None,
        sink: LineSink | None = None,
    ) -> None:
        self.loaded, self.lock, self.graph, self.settings, self.log = loaded, lock, graph, settings, log
        self.cancel = cancel or Cancellation()
        self.sink = sink or LineSink()
        self.cache = NodeCache(settings.work / "nodes")
        self.toolchains = Toolchains(loaded, lock, log, self.cancel, settings.registry, settings.image_extras())
        self.by_id = {n.id: n for n in graph.nodes}
        self.models = {m.name: m for m in loaded.manifest.models}

    def dep(self, node: Node, kind: str) -> Node:
        return next(self.by_id[d] for d in node.deps if self.by_id[d].kind == kind)

    def model_dir(self, model: str) -> Path:
        """The fetched checkpoint. Models of one source (the same files, or one repo at one
        revision) have fetch nodes of one key, so one output serves them all, written under
        the name of the model whose fetch ran: the folder it holds is the checkpoint."""
        base = self.cache.path(self.by_id[f"fetch:{model}"]) / "model"
        named = base / model
        if named.is_dir() or not base.is_dir():
            return named
        folders = [p for p in base.iterdir() if p.is_dir()]
        return folders[0] if len(folders) == 1 else named

    def model_mount(self, model: str) -> Mount:
        return Mount(source=self.model_dir(model), target=f"{MODEL_ROOT}/{model}")

    def run_steps(
        self, node: Node, steps: tuple[StepArgv, ...], runner_kind: str, mounts: tuple[Mount, ...], out: Path
    ) -> tuple[str, str]:
        """Run a flow's steps for `node` with `out` mounted read-write; a failure raises StepFailed."""
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
                    self.sink.line(node.id, line)

                result = runner.run(step, keep)
                if not result.ok:
                    tail = "\n    ".join(result.tail[-15:])
                    raise StepFailed(
                        f"{node.id}: {argv.name} exited with {result.exit_code}:\n    {tail}",
                        hint=f"the full log is {log_path}; rerun the build to reproduce",
                    )
        return image, image_id

    def in_toolchain(
        self,
        node_id: str,
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
        env: dict[str, str] = {}
        if target.device_kind == "vulkan":
            # Mesa compiles each shader once and caches it: in the work folder, not in a home.
            cache = self.settings.work / "mesa-shader-cache"
            cache.mkdir(parents=True, exist_ok=True)
            extra = (*extra, Mount(source=cache, target=MESA_CACHE, read_only=False))
            env["MESA_SHADER_CACHE_DIR"] = MESA_CACHE
        step = Step(
            name=name,
            image=image,
            argv=("python", *argv),
            mounts=(
                Mount(source=bundle_dir, target="/bundle"),
                Mount(source=SCRIPTS_DIR, target="/factory"),
                *extra,
            ),
            env=env,
            needs_gpu=gpu,
        )
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            self.sink.line(node_id, line)

        result = runner.run(step, keep)
        return result.exit_code, lines


def patches_digest(loaded: LoadedManifest, toolchain: Toolchain) -> str | None:
    """One sha256 over the toolchain's patches (target and content, in order), or None
    without patches: a patched mlc-llm is a different compiler, and the key says so."""
    if not toolchain.patches:
        return None
    lines = "".join(f"{p.applies_to} {loaded.file_digests[p.path]}\n" for p in toolchain.patches)
    return hashlib.sha256(lines.encode()).hexdigest()


def bundle_name(node: Node) -> str:
    return f"{node.attrs['model']}-{node.attrs['quant']}-{node.attrs['target']}"
