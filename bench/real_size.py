"""Benchmark (not a test): one RWKV-6 model at a real size, built by the factory end to
end and by the bare mlc-llm commands in the same run, on the same checkpoint.

    .venv/bin/python bench/real_size.py [--shape 1b6] [--quant q4f16_1 --quant q4f32_1]
        [--target cpu-x86_64 --target cpu-x86_64-v3 --target vulkan-x86_64 --target cuda-sm80] [--work DIR]

The checkpoint is synthetic with the exact shape of RWKV-6 World 1B6 (24 layers, 2048
wide, vocab 65536, fp16 safetensors; `--shape tiny` is the tests' 2-layer one), made of
exact 4-bit groups so the parity gate keeps its meaning, and served by a local Hugging
Face hub (olah). `factory build --smoke` builds every quant x target cell with its
gates; then the same image runs the bare `mlc_llm convert_weight` / `gen_config` /
`compile` with the arguments the factory used, and huggingface_hub fetches the same
revision. Every container's wall time and peak memory come from the Docker engine (its
events, and its stats: cgroup v1 reports the kernel's own maximum, page cache the step
wrote included; v2 a 1 s sample).

With `--llama-cpp`, llama.cpp is the CPU anchor: the `llama-cpp-python` source package
from PyPI (or the sdist given) vendors llama.cpp with its RWKV-6 support; its
`llama-bench` and `llama-quantize` are built from that source with cmake, its own
`convert_hf_to_gguf.py` (in `.venv-llama`, with PyTorch's CPU build) converts the same
checkpoint to f16, `llama-quantize` makes Q4_0 (4-bit groups of 32 with one scale each:
the nearest to q4f16_1/q4f32_1), and llama-bench's prefill (64 tokens) and decode (32)
tok/s print beside the factory CPU bundles' smoke figures, as ratios. `--anchor-only`
runs just that against a finished `--work` folder.

The report's last line (the last of all without `--llama-cpp`, whose figures follow it) reads exactly:

    overhead=R factory=F bare=B gates=G peak-gate=P

R is the factory's fetch + tokenizer + convert + compile seconds over the bare commands'
(goal: at most 1.10; the tokenizer node, which the bare flow lacks, counts against it),
G the gates' seconds (reported on their own), P their largest container's peak memory
in MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from factory.cells.gating import host_memory  # noqa: E402
from factory.cells.report import read_gates  # noqa: E402
from factory.checkpoints.example import RWKV6_1B6, TINY, Shape, write_checkpoint  # noqa: E402
from factory.process import run as run_process  # noqa: E402
from factory.runners.container import STEP_LABEL  # noqa: E402
from factory.toolchains.base import CONVERTED, MODEL_ROOT, OUT  # noqa: E402
from tests.support.hub import LocalHub, running_hub  # noqa: E402
from tests.support.run import factory  # noqa: E402
from tests.support.wheel import ensure_wheel_wheelhouse, sources_env, wheel_manifest  # noqa: E402

SHAPES = {"1b6": RWKV6_1B6, "tiny": TINY}
BENCH_LABEL = "org.factory.bench"
MODEL = "rwkv-6-world-bench"
BUILT = re.compile(r"^\s*(?:built|failed) (\S+) \(([0-9.]+) s\)")
TIMEOUT = 6 * 3600
LLAMA_VERSION = "0.3.36"
LLAMA_VENV = REPO / ".venv-llama"
# convert_hf_to_gguf.py's own requirements at that version, with the CPU torch these machines hold.
LLAMA_CONVERT = ("torch==2.13.0", "transformers==4.57.6", "sentencepiece>=0.1.98,<0.3.0", "protobuf>=4.21.0,<5.0.0")


@dataclass
class Usage:
    seconds: float = 0.0
    peak: int = 0
    started: float = 0.0


@dataclass
class ContainerMeter:
    """Wall time and peak memory of every container carrying one of our labels."""

    client: Any
    record: Path | None = None
    """Where each container's figures are appended as a JSON line when it ends, so a run
    that dies later keeps what it measured."""
    usage: dict[str, Usage] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)

    @contextmanager
    def watching(self) -> Iterator[ContainerMeter]:
        events = self.client.events(decode=True, filters={"type": "container", "event": ["start", "die"]})
        follower = threading.Thread(target=self._follow, args=(events,), daemon=True)
        follower.start()
        try:
            yield self
        finally:
            time.sleep(1)
            events.close()
            follower.join(timeout=10)
            for thread in self._threads:
                thread.join(timeout=10)

    def _follow(self, events: Any) -> None:
        try:
            for event in events:
                labels = event.get("Actor", {}).get("Attributes", {})
                name = labels.get(STEP_LABEL) or labels.get(BENCH_LABEL)
                if not name:
                    continue
                stamp = int(event.get("timeNano", 0)) / 1e9
                if event.get("Action") == "start":
                    self.usage[name] = Usage(started=stamp)
                    thread = threading.Thread(target=self._sample, args=(event["Actor"]["ID"], name), daemon=True)
                    self._threads.append(thread)
                    thread.start()
                elif event.get("Action") == "die" and name in self.usage:
                    usage = self.usage[name]
                    usage.seconds = stamp - usage.started
                    if self.record is not None:
                        # The peak is the last sample's (cgroup v1's maximum is cumulative).
                        line = {"container": name, "seconds": round(usage.seconds, 1), "peak_bytes": usage.peak}
                        with self.record.open("a") as out:
                            out.write(json.dumps(line) + "\n")
        except Exception:  # the stream is closed on exit
            return

    def _sample(self, container: str, name: str) -> None:
        try:
            for stats in self.client.api.stats(container, stream=True, decode=True):
                memory = stats.get("memory_stats") or {}
                seen = max(int(memory.get("max_usage") or 0), int(memory.get("usage") or 0))
                self.usage[name].peak = max(self.usage[name].peak, seen)
                if not memory and self.usage[name].seconds:
                    return
        except Exception:  # the container is gone
            return


def mib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB" if size else "n/a"


def checks(shape: Shape, work: Path, targets: list[str]) -> list[str]:
    """What this machine cannot do, in words, before anything runs."""
    params = parameter_count(shape)
    problems = []
    # The checkpoint (2 bytes a weight) is written once, then held by the hub's repo, its git
    # objects, the factory's cache and the bare fetch; each 4-bit conversion (about 0.6 bytes
    # a weight) twice more, by the factory and by the bare commands.
    disk = 5 * 2 * params + 2 * 2 * params
    free = shutil.disk_usage(work).free
    if disk > free:
        problems.append(f"disk: about {disk / 1e9:.1f} GB needed in {work}, {free / 1e9:.1f} GB free")
    memory = host_memory()
    # The parity gate's reference holds every weight in float32.
    if 4 * params > memory * 0.8:
        problems.append(f"memory: the fp32 reference needs {4 * params / 1e9:.1f} GB of {memory / 1e9:.1f} GB")
    if "cuda-sm80" in targets:
        print("note: cuda-sm80 compiles here (nvcc from PyPI); its smoke and parity need a CUDA device")
    return problems


def parameter_count(shape: Shape) -> int:
    """Weights of an RWKV-6 checkpoint of this shape (the vectors are a rounding error)."""
    hidden, inner = shape.hidden, shape.intermediate
    # Time mix: r k v g o (5 squares) and the LoRAs; channel mix: key, value and receptance.
    per_layer = 5 * hidden * hidden + hidden * (160 + 64) + 5 * 32 * hidden + 64 * hidden
    per_layer += 2 * hidden * inner + hidden * hidden
    return 2 * 65536 * hidden + shape.layers * per_layer


def factory_build(root: Path, manifest: Path, hub: LocalHub, meter: ContainerMeter) -> dict[str, float]:
    """`factory build --smoke`, one node at a time (as the bare commands run): node -> seconds."""
    since = time.time()
    with meter.watching():
        done = factory(
            "build", "-m", str(manifest), "--work", "work", "--out", "dist", "-j", "1", "--smoke",
            # A Hugging Face cache of its own: a warm user cache would make its fetch free.
            env={**hub.env(), "HF_HUB_CACHE": str(root / "factory-hf-cache")}, cwd=root, timeout=TIMEOUT,
        )  # fmt: skip
    # 4: a gate refused a bundle. That is a result here (printed below), not a broken run.
    if done.returncode not in (0, 4):
        raise SystemExit(f"factory build failed ({done.returncode}):\n{done.stderr[-4000:]}")
    print(f"factory build: {time.time() - since:.0f} s")
    nodes = {}
    for line in (done.stdout + done.stderr).splitlines():
        if match := BUILT.match(line):
            nodes[match.group(1)] = float(match.group(2))
        if ("parity" in line and "built bundle:" in line) or "rejected by" in line or line.startswith("    "):
            print("  " + line.strip())
    return nodes


def bare_commands(root: Path, hub: LocalHub, commit: str, meter: ContainerMeter, client: Any) -> dict[str, float]:
    """The same work without the factory: huggingface_hub's download, then the mlc_llm
    commands with the argv the factory recorded for each node (node.json), in the same image."""
    from huggingface_hub import snapshot_download

    bare = root / "bare"
    model = bare / "model" / MODEL
    since = time.perf_counter()
    # A cache of its own: the factory's fetch filled the user's Hugging Face cache.
    snapshot_download(
        f"bench/{MODEL}", revision=commit, local_dir=model, cache_dir=bare / "hf-cache", endpoint=hub.endpoint
    )
    seconds = {"fetch": time.perf_counter() - since}
    nodes = root / "work" / "nodes"
    user = f"{os.getuid()}:{os.getgid()}"
    with meter.watching():
        for kind in ("convert", "compile"):
            for meta_path in sorted((nodes / kind).glob("*/node.json")):
                meta = json.loads(meta_path.read_text())
                # convert:MODEL/QUANT@TOOLCHAIN, compile:MODEL/QUANT/TARGET@TOOLCHAIN
                cell = meta["node"].split(":", 1)[1].split("@")[0].split("/")
                out = bare / kind / "-".join(cell)
                out.mkdir(parents=True, exist_ok=True)
                # Writable, as a user's download is: convert_weight writes a safetensors index there.
                volumes = {
                    str(model): {"bind": f"{MODEL_ROOT}/{MODEL}", "mode": "rw"},
                    str(out): {"bind": OUT, "mode": "rw"},
                }
                if kind == "compile":
                    converted = bare / "convert" / f"{cell[0]}-{cell[1]}"
                    volumes[str(converted)] = {"bind": CONVERTED, "mode": "ro"}
                for recorded in meta["argv"]:
                    argv = recorded[recorded.index("mlc_llm") :]  # without the factory's kernel check
                    label = f"bare {kind} {'/'.join(cell)} {argv[1]}"
                    since = time.perf_counter()
                    container = client.containers.run(
                        meta["image"], argv, user=user, volumes=volumes, working_dir=OUT, network_mode="none",
                        environment={"HOME": "/tmp"}, labels={BENCH_LABEL: label}, detach=True,
                    )  # fmt: skip
                    status = container.wait(timeout=TIMEOUT)
                    logs = container.logs().decode(errors="replace")
                    container.remove(force=True)
                    if status.get("StatusCode") != 0:
                        raise SystemExit(f"{label} failed:\n{logs[-3000:]}")
                    seconds[label] = time.perf_counter() - since
    return seconds


def llama_anchor(sdist: str, work: Path, checkpoint: Path) -> dict[str, tuple[float, float]]:
    """{GGUF type: (prefill tok/s, decode tok/s)} of llama.cpp built from the sdist on this checkpoint."""
    from factory.tokenizer.rwkv_world import VOCAB_NAME, upstream_vocab_path

    where = work / "llama"
    where.mkdir(exist_ok=True)
    if sdist == "pypi":
        run_process([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={LLAMA_VERSION}", "-d", str(where)])  # fmt: skip
        sdist = str(next(where.glob("llama_cpp_python-*.tar.gz")))
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        if not (where / top).is_dir():
            archive.extractall(where, filter="data")
    source = where / top / "vendor" / "llama.cpp"
    build = source / "build"
    cache = build / "CMakeCache.txt"
    if cache.is_file() and f"CMAKE_HOME_DIRECTORY:INTERNAL={source}\n" not in cache.read_text():
        shutil.rmtree(build)  # configured for a folder that was moved: cmake refuses to reuse it
    since = time.perf_counter()
    options = ("TESTS", "EXAMPLES", "SERVER")
    run_process(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
                "-DLLAMA_CURL=OFF", *(f"-DLLAMA_BUILD_{o}=OFF" for o in options)])  # fmt: skip
    run_process(
        ["cmake", "--build", str(build), "--target", "llama-bench", "llama-quantize", "-j", str(os.cpu_count())]
    )
    print(f"llama.cpp {top}: built in {time.perf_counter() - since:.0f} s")
    python = LLAMA_VENV / "bin" / "python"
    if not python.exists():
        run_process([sys.executable, "-m", "venv", str(LLAMA_VENV)])
        run_process([str(python), "-m", "pip", "install", "--quiet", "--find-links", "/opt/wheels", *LLAMA_CONVERT])
    run_process([str(python), "-m", "pip", "install", "--quiet", str(source / "gguf-py")])
    # The converter reads RWKV World's vocabulary beside the weights, as the RWKV repos ship it.
    model = where / "model"
    model.mkdir(exist_ok=True)
    for path in [*checkpoint.iterdir(), upstream_vocab_path()]:
        link = model / path.name
        if link.is_symlink() and not link.exists():
            link.unlink()  # left from a work folder that was moved
        if not link.exists():
            link.symlink_to(path.resolve())
    assert (model / VOCAB_NAME).exists()
    ggufs = {"f16": where / "model-f16.gguf", "Q4_0": where / "model-q4_0.gguf"}
    since = time.perf_counter()
    run_process([str(python), str(source / "convert_hf_to_gguf.py"), str(model), "--outtype", "f16",
                "--outfile", str(ggufs["f16"])])  # fmt: skip
    run_process([str(build / "bin" / "llama-quantize"), str(ggufs["f16"]), str(ggufs["Q4_0"]), "Q4_0"])
    print(f"llama.cpp: convert_hf_to_gguf + llama-quantize Q4_0 {time.perf_counter() - since:.0f} s")
    figures = {}
    for kind, gguf in ggufs.items():
        done = subprocess.run(
            [str(build / "bin" / "llama-bench"), "-m", str(gguf), "-p", "64", "-n", "32", "-t", str(os.cpu_count()),
             "-r", "3", "-o", "json"],
            capture_output=True, text=True, check=True, timeout=TIMEOUT,
        )  # fmt: skip
        rows = json.loads(done.stdout)
        prefill = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
        decode = next(r["avg_ts"] for r in rows if r["n_gen"] > 0)
        figures[kind] = (float(prefill), float(decode))
        print(f"llama.cpp {kind}: prefill {prefill:.2f} tok/s (64 tokens), decode {decode:.2f} tok/s (32 tokens)")
    return figures


def anchor_ratios(figures: dict[str, tuple[float, float]], work: Path, quants: list[str], targets: list[str]) -> None:
    """Each factory CPU bundle's smoke figures over llama.cpp's nearest type (Q4_0)."""
    base_prefill, base_decode = figures["Q4_0"]
    for target in (t for t in targets if t.startswith("cpu-")):
        for quant in quants:
            gates = read_gates(work / "dist" / f"{MODEL}-{quant}-{target}")
            if gates is None:
                print(f"{quant} {target}: no bundle (a gate refused it)")
                continue
            smoke = gates.get("smoke", {})
            if smoke.get("status") != "passed":
                print(f"{quant} {target}: no smoke figures ({smoke.get('reason', smoke.get('status'))})")
                continue
            print(
                f"factory {quant} {target} / llama.cpp Q4_0: decode {smoke['decode_tok_s'] / base_decode:.2f}x, "
                f"prefill {smoke['prefill_tok_s'] / base_prefill:.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1b6")
    parser.add_argument("--quant", action="append", help="default: q4f16_1 and q4f32_1")
    parser.add_argument("--target", action="append", help="default: CPU, CPU v3, Vulkan, CUDA sm_80")
    parser.add_argument("--work", type=Path, help="a folder to keep everything in (default: a temporary one)")
    parser.add_argument("--llama-cpp", metavar="SDIST", help="the llama-cpp-python sdist, or `pypi` to download it")
    parser.add_argument("--anchor-only", action="store_true", help="only the llama.cpp anchor, on a finished --work")
    args = parser.parse_args()
    import docker

    shape = SHAPES[args.shape]
    quants = args.quant or ["q4f16_1", "q4f32_1"]
    targets = args.target or ["cpu-x86_64", "cpu-x86_64-v3", "vulkan-x86_64", "cuda-sm80"]
    work = args.work or Path(tempfile.mkdtemp(prefix="factory-real-size-", dir=os.environ.get("TMPDIR")))
    work.mkdir(parents=True, exist_ok=True)
    if args.anchor_only:
        anchor_ratios(llama_anchor(args.llama_cpp or "pypi", work, work / "checkpoint"), work, quants, targets)
        return
    if problems := checks(shape, work, targets):
        raise SystemExit("this machine cannot run the benchmark: " + "; ".join(problems))
    client = docker.from_env(timeout=600)
    # olah holds a multi-GB file in memory and can pause for longer than huggingface_hub's
    # 10 s read timeout (measured: a 3.2 GB fetch died at 3.09 GB); both sides get the same.
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "600")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "600")
    meter = ContainerMeter(client, record=work / "containers.jsonl")

    since = time.perf_counter()
    files = write_checkpoint(work / "checkpoint", 6, shape)
    size = sum(p.stat().st_size for p in files)
    print(f"checkpoint: {shape} {size / 1e9:.2f} GB in {time.perf_counter() - since:.0f} s")
    (work / "hub").mkdir(exist_ok=True)
    with running_hub(work / "hub") as hub:
        since = time.perf_counter()
        commit = hub.commit(f"bench/{MODEL}", {p.name: p for p in files})
        print(f"hub commit: {time.perf_counter() - since:.0f} s")
        model = {"name": MODEL, "hf": {"repo": f"bench/{MODEL}", "revision": commit}, "type": "rwkv6-world"}
        manifest = work / "real-size.yaml"
        manifest.write_text(yaml.safe_dump(wheel_manifest([model], quants, targets, name="real-size"), sort_keys=False))
        locked = factory("lock", "-m", str(manifest), "--local-images", env=hub.env(), cwd=work)
        if locked.returncode != 0:
            raise SystemExit(locked.stderr)
        sources = sources_env()
        since = time.perf_counter()
        image = factory(
            "images", "build", "-m", str(manifest), "--wheelhouse", str(ensure_wheel_wheelhouse()), "--offline",
            env=sources, cwd=work, timeout=TIMEOUT,
        )  # fmt: skip
        if image.returncode != 0:
            raise SystemExit(image.stderr[-4000:])
        print(f"toolchain image: {time.perf_counter() - since:.0f} s (cached after the first run)")
        nodes = factory_build(work, manifest, hub, meter)
        bare = bare_commands(work, hub, commit, meter, client)
    # The report first: the anchor builds llama.cpp, and a failure there must not take an
    # hour of measurements with it (it did once).
    report(nodes, bare, meter, targets, quants, work)
    if args.llama_cpp:
        anchor_ratios(llama_anchor(args.llama_cpp, work, work / "checkpoint"), work, quants, targets)


def report(
    nodes: dict[str, float],
    bare: dict[str, float],
    meter: ContainerMeter,
    targets: list[str],
    quants: list[str],
    work: Path,
) -> None:
    print(f"{'step':<64} {'seconds':>8} {'peak':>10}")
    for name, usage in sorted(meter.usage.items()):
        print(f"{name:<64} {usage.seconds:8.1f} {mib(usage.peak):>10}")
    for name, seconds in sorted(nodes.items()):
        print(f"{'node ' + name:<64} {seconds:8.1f}")
    # The tokenizer node counts on the factory's side: the bare flow has no such step.
    ours = sum(s for n, s in nodes.items() if n.split(":")[0] in ("fetch", "tokenizer", "convert", "compile"))
    theirs = sum(bare.values())
    gates = sum(s for n, s in nodes.items() if n.startswith("bundle:"))
    # The gates' containers (smoke, library, parity bundle and reference) are the rest.
    steps = ("convert:", "compile:", "bare ")
    gate_peak = max((u.peak for n, u in meter.usage.items() if not n.startswith(steps)), default=0)
    print(f"factory fetch+tokenizer+convert+compile {ours:.1f} s, bare {theirs:.1f} s (fetch {bare['fetch']:.1f} s)")
    for target in targets:
        for quant in quants:
            gate = read_gates(work / "dist" / f"{MODEL}-{quant}-{target}")
            if gate is None:
                print(f"{quant} {target}: no bundle (a gate refused it, see above)")
                continue
            smoke, parity = gate.get("smoke", {}), gate.get("parity", {})
            figures = (
                f"decode {smoke['decode_tok_s']:.2f} tok/s, prefill {smoke['prefill_tok_s']:.2f} tok/s"
                if smoke.get("status") == "passed"
                else f"smoke {smoke.get('status')} ({smoke.get('reason', '')})"
            )
            kl = (
                f"parity KL mean {parity['kl_mean']:.2e} top-1 {parity['top1']:.2f}"
                if "kl_mean" in parity
                else (f"parity {parity.get('status')}")
            )
            print(f"{quant} {target}: {figures}; {kl}")
    print(
        f"overhead={ours / theirs:.2f} factory={ours:.1f} bare={theirs:.1f} "
        f"gates={gates:.1f} peak-gate={gate_peak >> 20}"
    )


if __name__ == "__main__":
    main()
