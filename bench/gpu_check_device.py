"""The GPU check's side on the GPU machine (bench/gpu_check.py `check` and `vm`): unpack the
carried blobs and runtime, run vm_script's smoke and logits runs for each bundle through the
carried runtime-only TVM, and judge them with the carried parity.py. Carried to the GPU
machine: the standard library, numpy (imported when a bundle's logits are compared) and its
siblings gpu_check_shared.py and gpu_check_report.py; nothing of the factory package."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from gpu_check_report import SUMMARY, Outcome
from gpu_check_shared import CONFIG, MIB, RUNTIME_TAR, SIDECARS, Refusal, parse_devices

# --------------------------------------------------------------------------- check


def _gunzip(source: Path, dest: Path) -> str:
    """Unpack source into dest; its sha256."""
    digest = hashlib.sha256()
    with gzip.open(source, "rb") as f, dest.open("wb") as g:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
            g.write(block)
    return digest.hexdigest()


def _module_from(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _extract_runtime(tar_path: Path, into: Path) -> Path:
    with tarfile.open(tar_path) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python before 3.11.4: our own archive, regular files only
            tar.extractall(into)
    return into


def _materialize(folder: Path, blobs: Path, bundle: dict[str, Any]) -> Path:
    """The bundle as a folder of hard links to the unpacked blobs (not symbolic links: TVM
    resolves those and takes a library's format from the blob's name, which has no suffix)."""
    root = folder / str(bundle["name"])
    for rel, sha in bundle["files"].items():
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(blobs / sha, link)
        except OSError:
            shutil.copyfile(blobs / sha, link)
    return root


def _unpack_blobs(base: Path, bundles: list[dict[str, Any]], into: Path) -> list[str]:
    """Every blob the bundles use, unpacked into `into`; the shas missing or not matching."""
    into.mkdir(parents=True)
    bad = []
    for sha in sorted({s for b in bundles for s in b["files"].values()}):
        path = base / "blobs" / f"{sha}.gz"
        if not path.is_file() or _gunzip(path, into / sha) != sha:
            bad.append(sha)
    return bad


class Runner:
    """Starts vm_script through `gpu_check.py vm` with the carried runtime, under one deadline."""

    def __init__(self, base: Path, runtime: Path, ffi: str, deadline: float, per_run_s: float) -> None:
        self.base, self.runtime, self.ffi = base, runtime, ffi
        self.deadline, self.per_run_s = deadline, per_run_s
        env = dict(os.environ)
        lib = runtime / "tvm" / "lib"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
        env.setdefault("MESA_SHADER_CACHE_DIR", str(runtime.parent / "mesa-shader-cache"))
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env

    def run(self, device: str, *argv: str) -> tuple[int, list[str], float]:
        left = self.deadline - time.monotonic()
        if left < 5:
            return 124, ["the check's deadline passed before this run"], 0.0
        command = [
            sys.executable, str(self.base / "gpu_check.py"), "vm", "--runtime", str(self.runtime),
            "--device", device, "--ffi", self.ffi, "--", str(self.base / "vm_script.py"), *argv,
        ]  # fmt: skip
        started = time.monotonic()
        try:
            done = subprocess.run(
                command, env=self.env, capture_output=True, text=True, timeout=min(left, self.per_run_s), check=False
            )
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return 124, [*out.splitlines()[-5:], f"timed out after {time.monotonic() - started:.0f} s"], 0.0
        lines = (done.stdout + done.stderr).splitlines()
        return done.returncode, lines, time.monotonic() - started


def _marked(lines: list[str], mark: str) -> dict[str, Any] | None:
    for line in reversed(lines):
        if line.startswith(mark):
            value: dict[str, Any] = json.loads(line[len(mark) :])
            return value
    return None


def _tail(lines: list[str], count: int = 3) -> str:
    useful = [line.strip() for line in lines if line.strip() and not line.startswith("GPU-CHECK-TVM")]
    return " | ".join(useful[-count:])[-600:]


def check_bundle(bundle: dict[str, Any], config: dict[str, Any], base: Path, tmp: Path, runner: Runner) -> Outcome:
    import numpy as np

    parity = sys.modules["gpu_check_parity"]
    outcome = Outcome(bundle["name"])
    problems: list[str] = []
    root = _materialize(tmp / "bundles", tmp / "blobs", bundle)
    params = str(root / bundle["params_dir"]) if bundle["params_dir"] not in ("", ".") else str(root)
    library = str(root / bundle["library"])
    device = bundle["device"]
    model = config["models"][bundle["model"]]
    tokens = json.loads((base / model["tokens"]).read_text())
    prefill = min(parity.PARITY_PREFILL, len(tokens))
    out_npy = tmp / f"{bundle['name']}.npy"
    # Smoke first: its line names the device, and a bundle that cannot run fails here.
    smoke = config["smoke"]
    code, lines, _ = runner.run(device, "run", params, library, smoke["prompt"], str(smoke["tokens"]), device)
    figures = _marked(lines, "FACTORY-SMOKE ")
    if code != 0 or figures is None:
        problems.append(f"smoke run exited {code}: {_tail(lines)}")
    else:
        named = figures.get("device")
        outcome.device_name = device if named in (None, "", "None") else str(named)
        outcome.prefill_tok_s, outcome.decode_tok_s = figures.get("prefill_tok_s"), figures.get("decode_tok_s")
        if not figures.get("logits_ok"):
            problems.append(f"logits have shape {figures.get('logits_shape')}, the vocab {figures.get('vocab_size')}")
        if figures.get("finite") is False:
            problems.append("the logits contain NaN/Inf")
        if not figures.get("generated_tokens"):
            problems.append("the model produced no output")
    if problems and figures is None:
        outcome.problems = tuple(problems)
        return outcome  # it did not run at all: the logits run would fail the same way
    code, lines, _ = runner.run(
        device, "logits", params, library, str(base / model["tokens"]), str(out_npy), device, str(prefill)
    )
    prefill_npy = Path(str(out_npy)[: -len(".npy")] + "-prefill.npy")
    if code != 0 or not out_npy.is_file() or not prefill_npy.is_file():
        problems.append(f"logits run exited {code}: {_tail(lines)}")
    else:
        reference_npy = tmp / f"{bundle['model']}-reference.npy"
        if not reference_npy.is_file():
            _gunzip(base / model["reference"], reference_npy)
        reference = np.load(reference_npy)
        _, bound = parity.threshold_for(bundle["quant"])
        try:
            outcome.figures = parity.compare(reference, np.load(out_npy), kl_bound=bound.kl_max)
            start = prefill - 1
            outcome.prefill = parity.compare(
                reference[start:], np.load(prefill_npy), kl_bound=bound.kl_max, first_position=start
            )
            _, found, _ = parity.verdict(outcome.figures, bundle["quant"], outcome.prefill)
            problems += [f"parity: {p}" for p in found]
        except ValueError as e:
            problems.append(f"parity: {e}")
    outcome.problems = tuple(problems)
    outcome.passed = not problems
    return outcome


def read_config(directory: str) -> tuple[Path, dict[str, Any]]:
    """The carried folder and its gpu-check.json."""
    base = Path(directory).resolve()
    config_path = base / CONFIG
    if not config_path.is_file():
        raise Refusal(f"--dir {base}: no {CONFIG} (write the folder with `gpu_check.py prepare`)")
    config: dict[str, Any] = json.loads(config_path.read_text())
    return base, config


def unpack(
    base: Path, config: dict[str, Any], entries: list[dict[str, Any]], tmp: Path, deadline: float, per_run_s: float
) -> Runner:
    """The blobs `entries` (bundles or speed cells) use and the runtime, unpacked into tmp; their runner."""
    bad = _unpack_blobs(base, entries, tmp / "blobs")
    if bad:
        raise Refusal(f"{len(bad)} blobs are missing or do not match their sha256 (first {bad[0]})")
    runtime = _extract_runtime(base / RUNTIME_TAR, tmp / "runtime")
    return Runner(base, runtime, config["runtime"]["ffi"], deadline, per_run_s)


def check(args: argparse.Namespace) -> int:
    started = time.monotonic()
    base, config = read_config(args.dir)
    devices = parse_devices(args.devices)
    bundles = [b for b in config["bundles"] if b["device"] in devices]
    if not bundles:
        print(f"{SUMMARY}passed=0 failed=0 (no {'/'.join(devices)} bundles in {base})")
        return 2
    _module_from(base / "parity.py", "gpu_check_parity")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as temp:
        tmp = Path(temp)
        runner = unpack(base, config, bundles, tmp, started + args.deadline_s, args.run_s)
        outcomes = []
        for bundle in bundles:
            outcome = check_bundle(bundle, config, base, tmp, runner)
            print(outcome.line(), flush=True)
            outcomes.append(outcome)
    failed = sum(not o.passed for o in outcomes)
    print(f"{SUMMARY}passed={len(outcomes) - failed} failed={failed} devices={','.join(devices)} "
          f"seconds={time.monotonic() - started:.0f}")  # fmt: skip
    return 1 if failed else 0


# --------------------------------------------------------------------------- vm


def vm(args: argparse.Namespace) -> int:
    """Import the carried TVM runtime-only, load the device's runtime, run vm_script."""
    import ctypes
    import runpy

    runtime = Path(args.runtime).resolve()
    lib = runtime / "tvm" / "lib"
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    os.environ["TVM_DEVICE_BACKEND_AUTOLOAD"] = "0"
    sys.path.insert(0, str(runtime))
    try:
        ffi = importlib.import_module("tvm_ffi")
    except ImportError as e:
        sys.exit(f"no tvm_ffi for this Python ({sys.version.split()[0]}): install the carried wheel ({e})")
    version = getattr(ffi, "__version__", "?")
    if args.ffi and version != args.ffi:
        sys.exit(f"tvm_ffi {version} is here, the carried TVM runtime was built for {args.ffi}")
    tvm = importlib.import_module("tvm")
    loaded = Path(tvm.base._LOADED_LIBS["tvm_runtime"]._name).resolve()
    if loaded.parent != lib or not tvm.base._RUNTIME_ONLY:
        sys.exit(f"TVM loaded {loaded} (runtime-only: {tvm.base._RUNTIME_ONLY}), not the carried runtime in {lib}")
    for name in ("tvm_runtime_extra", *SIDECARS[args.device]):
        path = lib / f"lib{name}.so"
        try:
            tvm.base._LOADED_LIBS[name] = ctypes.CDLL(str(path), ctypes.RTLD_LOCAL)
        except OSError as e:
            if name != "tvm_runtime_extra":
                sys.exit(f"cannot load {path.name} for {args.device}: {e}")
    if not hasattr(tvm, "relax"):
        relax = types.ModuleType("tvm.relax")
        relax.VirtualMachine = importlib.import_module("tvm.runtime.vm").VirtualMachine  # type: ignore[attr-defined]
        sys.modules["tvm.relax"] = relax
        setattr(tvm, "relax", relax)  # noqa: B010
    info = {"tvm": str(tvm.__version__), "ffi": version, "runtime": str(loaded), "python": sys.version.split()[0]}
    print("GPU-CHECK-TVM " + json.dumps(info), file=sys.stderr, flush=True)
    script, *rest = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")
    return 0
