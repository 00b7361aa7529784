"""A prepared GPU check (not a test): smoke and parity of a factory build's CUDA and Vulkan
bundles on a machine with a GPU that has no network, no factory and no TVM of its own (the
device tool's H200: Python 3.12 with numpy and msgpack, NVIDIA's driver, 64 MiB of files in).

    .venv/bin/python bench/gpu_check.py prepare --dist DIST --work WORK --out DIR \\
        [--image IMAGE] [--ffi-wheel WHEEL] [--debs FOLDER] [--devices cuda,vulkan] [--quants Q,..] [--limit-mib 64]
    python3 DIR/gpu_check.py check --dir DIR [--devices cuda,vulkan] [--deadline-s 420]
    bash DIR/run.sh

`prepare` runs here. From a `factory build --out DIST --work WORK --smoke` it writes DIR:

- `blobs/SHA256.gz`: every file of the selected bundles, once (content-addressed: a CUDA and
  a Vulkan bundle of one model and quantization share their params) and gzipped (libraries
  shrink about 4x), checked against the sha256 in each bundle's factory-bundle.json;
  `gpu-check.json` lists the bundles' files.
- `parity/MODEL/tokens.json` and `reference.npy.gz`: the parity gate's tokens and the RWKV
  reference's logits for them (WORK/parity/MODEL-QUANT-LIBRARY/; they depend on the model
  only, so one bundle's, the CPU one's where there is one, serves every bundle of it).
- `vm_script.py` and `parity.py`: copies of factory/in_toolchain/vm_script.py (the runner the
  gates use) and factory/cells/parity.py (the gate's figures and bounds), unchanged.
- `tvm-runtime.tar.gz`: apache-tvm's Python package from the bundles' toolchain image
  (its .py files) with the runtime libraries only (libtvm_runtime, _extra, _cuda, _vulkan;
  never the 256 MB libtvm_compiler.so), and the image's libcudart.so.13, which
  libtvm_runtime_cuda.so links. TVM imports runtime-only with TVM_USE_RUNTIME_LIB=1.
- `wheels/`: the apache-tvm-ffi wheel (the image's version) for the check machine's Python
  (`--python`, 3.12 by default), downloaded with pip unless `--ffi-wheel` names one.
- `debs/`: the .deb files of `--debs` (the Vulkan loader: libvulkan1 and glvnd, for a
  machine that has NVIDIA's Vulkan driver but no loader).
- `gpu_check.py` (this file) with the modules it imports there (gpu_check_shared.py,
  gpu_check_device.py, gpu_check_report.py), and `run.sh`, the one command for the GPU machine.

It refuses (exit 2) a DIR over `--limit-mib` (what the device tool carries), and prints the size;
`--quants` narrows the bundles (each quantization's params are a blob of their own, the
references one per model) when a build's every GPU bundle would not fit.

`check` runs there (or here, or in the toolchain image): for each selected bundle, vm_script's
`logits` (token by token, then a prefill of PARITY_PREFILL tokens and the rest decoded, as
the parity gate runs it) and `run` (the smoke gate's prompt, greedy decode), both through
TVM's Relax VM on the bundle's device, with the carried runtime-only TVM (`vm`, below); the
logits against the reference with parity.py's compare and verdict, the smoke figures judged
as the smoke gate does. One line per bundle:

    GPU-CHECK NAME device="..." kl_mean=.. kl_max=.. top1=.. first_divergence=..
        prefill_kl_mean=.. prefill_kl_max=.. prefill_tok_s=.. decode_tok_s=.. passed|failed[: why]

and a last line `GPU-CHECK-SUMMARY passed=N failed=M`. Exit 1 if any failed, 2 if there was
nothing to check. Nothing of the factory package is imported there: only the standard
library, numpy and what DIR carries.

Speed cells (bench/gpu_check_speed.py; `--speed-models rwkv-4-world-7b` with `--speed-quants`
and `--speed-target`, or `--speed-bundles NAME,..` of --dist): a model too big to carry goes as
its library, mlc-chat-config.json, tokenizer_model and tensor-cache.json, no params. The
7B-shaped model is built here in the toolchain image from its config.json alone, with the
manifest's gen_config and compile argv, its index written from the quantized model definition
(gpu_check_index.py, in the image). `speed` runs there (run.sh runs it after each device's
`check`): each cell's index held to its library's params, the device probed, the params written
with synthetic values (gpu_check_speed_device.py), then vm_script's `run` of a ~130-token
prompt and --speed-tokens decoded, one line per cell:

    GPU-CHECK-SPEED NAME device="..." params_mib=.. synth_s=.. prompt_tokens=.. decoded=..
        prefill_tok_s=.. decode_tok_s=.. finite=.. seed_prefill_tok_s=.. seed_decode_tok_s=..
        prefill_vs_seed=.. decode_vs_seed=.. seed_device="..." ran|failed: why

and `GPU-CHECK-SPEED-SUMMARY ran=N failed=M`. The figures are vm_script's (one prefill call,
each decode step timed, with the host copies of its embedding and logits), not mlc-llm's engine.

`vm` (internal) is how `check` starts vm_script: it imports the carried TVM runtime-only
(TVM_USE_RUNTIME_LIB=1; TVM_DEVICE_BACKEND_AUTOLOAD=0, since runtime-only TVM loads no
device runtime and an image's own TVM plugins must not load), checks that the carried
libtvm_runtime.so is the one loaded, loads the device's runtime library (as `import tvm`
does when its compiler is there), gives `tvm.relax` its one runtime piece the script uses
(`VirtualMachine`, which tvm.relax re-exports from tvm.runtime.vm), and runs the script.
"""

# The parts, each its own module beside this one: gpu_check_pack.py (`prepare`: the folder to
# carry) with gpu_check_runtime.py (the TVM runtime and tvm-ffi wheel it carries), which run
# here only; gpu_check_device.py (`check` and `vm`: what runs on the GPU machine) and
# gpu_check_report.py (the result lines), which the folder carries with gpu_check_shared.py
# and this file (gpu_check_pack.CARRIED).

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpu_check_device import check, vm
from gpu_check_shared import DEFAULT_DEVICES, LIMIT_MIB, SIDECARS, Refusal
from gpu_check_speed_device import speed

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the folder to carry (here)")
    p.add_argument("--dist", required=True, help="a factory build's --out folder")
    p.add_argument("--work", required=True, help="that build's --work folder (parity tokens and references)")
    p.add_argument("--out", required=True, help="the folder to write (replaced if gpu_check.py wrote it before)")
    p.add_argument("--devices", default=",".join(DEFAULT_DEVICES), help="bundles of these devices (cuda,vulkan,cpu)")
    p.add_argument("--quants", default="", help="only bundles of these quantizations (default: every one)")
    p.add_argument("--image", help="the toolchain image to take TVM's runtime from (default: the bundles')")
    p.add_argument("--ffi-wheel", help="the apache-tvm-ffi wheel for --python (default: pip download)")
    p.add_argument("--python", default="3.12", help="the check machine's Python (for the tvm-ffi wheel)")
    p.add_argument("--debs", help="a folder of .deb files to carry (the Vulkan loader)")
    p.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help="refuse a folder larger than this")
    p.add_argument("--smoke-tokens", type=int, default=32, help="tokens the smoke run decodes")
    p.add_argument("--run-rel", help="the folder's path from the repository root, for the printed command")
    p.add_argument("--cuda-s", type=int, default=200, help="run.sh: the CUDA check's deadline")
    p.add_argument("--vulkan-s", type=int, default=260, help="run.sh: the Vulkan check's deadline")
    p.add_argument("--speed-models", default="", help="speed cells: these models at their real shape (SHAPES)")
    p.add_argument("--speed-quants", default="q4f16_1,q0f16", help="the speed models' quantizations")
    p.add_argument("--speed-target", default="cuda-sm90", help="the speed models' target (a manifest target)")
    p.add_argument("--manifest", default=str(REPO / "manifests" / "world.yaml"), help="where the speed models are")
    p.add_argument("--speed-bundles", default="", help="speed cells: these bundles of --dist, without their params")
    p.add_argument("--speed-tokens", type=int, default=128, help="tokens a speed cell decodes")
    p.add_argument("--speed-s", type=int, default=300, help="run.sh: each device's speed cells' deadline")
    c = sub.add_parser("check", help="run and compare the bundles (there)")
    c.add_argument("--dir", required=True)
    c.add_argument("--devices", default=",".join(DEFAULT_DEVICES))
    c.add_argument("--deadline-s", type=float, default=420, help="stop starting runs after this many seconds")
    c.add_argument("--run-s", type=float, default=180, help="the longest one vm_script run may take")
    s = sub.add_parser("speed", help="write the speed cells' params and time them (there)")
    s.add_argument("--dir", required=True)
    s.add_argument("--devices", default=",".join(DEFAULT_DEVICES))
    s.add_argument("--deadline-s", type=float, default=300, help="stop starting runs after this many seconds")
    s.add_argument("--run-s", type=float, default=280, help="the longest one run (params loaded, then timed) may take")
    s.add_argument("--work", help="where to write the params (default: the system's temporary folder)")
    v = sub.add_parser("vm", help="(internal) run vm_script with the carried runtime-only TVM")
    v.add_argument("--runtime", required=True)
    v.add_argument("--device", required=True, choices=sorted(SIDECARS))
    v.add_argument("--ffi", default="")
    v.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            from gpu_check_pack import prepare  # here only: the carried folder has no gpu_check_pack.py

            return prepare(args)
        if args.command == "check":
            return check(args)
        if args.command == "speed":
            return speed(args)
        return vm(args)
    except Refusal as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
