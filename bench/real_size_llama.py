"""The real-size benchmark's llama.cpp anchor (bench/real_size.py, `--llama-cpp`): llama.cpp
built from the llama-cpp-python sdist, the same checkpoint converted to f16 and quantized to
Q4_0, llama-bench's figures, and the factory CPU bundles' smoke figures over them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from real_size_shared import MODEL, REPO, TIMEOUT

from factory.cells.report import read_gates
from factory.process import run as run_process

LLAMA_VERSION = "0.3.36"
LLAMA_VENV = REPO / ".venv-llama"
# convert_hf_to_gguf.py's own requirements at that version, with the CPU torch these machines hold.
LLAMA_CONVERT = ("torch==2.13.0", "transformers==4.57.6", "sentencepiece>=0.1.98,<0.3.0", "protobuf>=4.21.0,<5.0.0")


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
