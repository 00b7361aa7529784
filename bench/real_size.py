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

# The parts, each its own module beside this one: real_size_meter.py (every container's wall
# time and peak memory), real_size_report.py (the report and its last line), real_size_llama.py
# (the llama.cpp anchor, `--llama-cpp`) and real_size_shared.py (what they all agree on).

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from real_size_shared import BENCH_LABEL, MODEL, REPO, TIMEOUT

sys.path.insert(0, str(REPO))

from real_size_llama import anchor_ratios, llama_anchor
from real_size_meter import ContainerMeter
from real_size_report import report

from factory.cells.gating import host_memory
from factory.checkpoints.example import RWKV6_1B6, TINY, Shape, write_checkpoint
from factory.toolchains.base import CONVERTED, MODEL_ROOT, OUT
from tests.support.hub import LocalHub, running_hub
from tests.support.run import factory
from tests.support.wheel import ensure_wheel_wheelhouse, sources_env, wheel_manifest

SHAPES = {"1b6": RWKV6_1B6, "tiny": TINY}
BUILT = re.compile(r"^\s*(?:built|failed) (\S+) \(([0-9.]+) s\)")


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


if __name__ == "__main__":
    main()
