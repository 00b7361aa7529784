"""The GPU check's speed cells on the GPU machine (bench/gpu_check.py `speed`): a library, its
chat config, tokenizer and tensor-cache index, without params (a 7B bundle's params cannot
travel in the device tool's 64 MiB). Here the params are written from the index with synthetic
values (speed does not depend on them), then vm_script's `run` gives prefill and decode tok/s,
printed beside the figures the cell names for comparison (the seed article's, for RWKV-4 World
7B on an A800). Carried to the GPU machine: the standard library, numpy, and its siblings."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from gpu_check_device import Runner, _marked, _materialize, _tail, read_config, unpack
from gpu_check_shared import MIB, Refusal, parse_devices

SPEED = "GPU-CHECK-SPEED "
SPEED_SUMMARY = "GPU-CHECK-SPEED-SUMMARY "
POOL_BYTES = 8 * MIB
# Float params get small values (|x| <= 0.02): a model of them stays finite through its
# layers more often than one of random bit patterns; packed integers get random bits.
FLOAT_SCALE = 0.02
FLOATS = {"float16": "float16", "float32": "float32", "float64": "float64"}


def _pools(seed: int) -> dict[str, bytes]:
    import numpy as np

    rng = np.random.default_rng(seed)
    pools = {"bits": rng.bytes(POOL_BYTES)}
    for dtype in FLOATS:
        count = POOL_BYTES // np.dtype(dtype).itemsize
        pools[dtype] = rng.uniform(-FLOAT_SCALE, FLOAT_SCALE, count).astype(dtype).tobytes()
    return pools


def _fill(out: BinaryIO, pool: bytes, nbytes: int, start: int) -> None:
    """nbytes of the pool, cycling from `start` (so equal tensors do not get equal bytes)."""
    view = memoryview(pool)
    position = start % len(pool)
    left = nbytes
    while left:
        chunk = view[position : position + min(left, len(pool) - position)]
        out.write(chunk)
        left -= len(chunk)
        position = 0


def index_shards(index: dict[str, Any]) -> Iterator[tuple[str, int, list[dict[str, Any]]]]:
    """PURE: (dataPath, nbytes, records) of each shard, checked for a layout TVM loads:
    each record inside its shard, in order, without overlaps; a refusal names what is wrong."""
    for number, shard in enumerate(index.get("records", [])):
        path, nbytes = shard.get("dataPath"), shard.get("nbytes")
        if not isinstance(path, str) or "/" in path or path.startswith(".") or not isinstance(nbytes, int):
            raise Refusal(f"index shard {number}: a dataPath file name and an integer nbytes, not {path!r}, {nbytes!r}")
        end = 0
        for rec in shard.get("records", []):
            offset, size = rec.get("byteOffset"), rec.get("nbytes")
            if not isinstance(offset, int) or not isinstance(size, int) or offset < end or offset + size > nbytes:
                raise Refusal(f"index shard {path}: record {rec.get('name')!r} lies outside its shard or overlaps")
            end = offset + size
        yield path, nbytes, list(shard.get("records", []))


def synthesize(index_path: Path, folder: Path, seed: int = 0) -> int:
    """Write the shards `index_path` lists into `folder`, each record filled by its dtype; the bytes written."""
    index = json.loads(index_path.read_text())
    shards = list(index_shards(index))
    total = sum(nbytes for _, nbytes, _ in shards)
    free = shutil.disk_usage(folder).free
    if total > free:
        raise Refusal(
            f"{index_path.name}: the params are {total / MIB:.0f} MiB, {folder} has {free / MIB:.0f} MiB free"
        )
    pools = _pools(seed)
    for number, (path, nbytes, records) in enumerate(shards):
        with (folder / path).open("wb") as out:
            written = 0
            for i, rec in enumerate(records):
                if rec["byteOffset"] > written:
                    _fill(out, pools["bits"], rec["byteOffset"] - written, 0)
                    written = rec["byteOffset"]
                pool = pools.get(FLOATS.get(str(rec.get("dtype")), ""), pools["bits"])
                _fill(out, pool, int(rec["nbytes"]), (number * 7919 + i * 104729) * 16)
                written += int(rec["nbytes"])
            if nbytes > written:
                _fill(out, pools["bits"], nbytes - written, 0)
    return total


def index_mismatch(params: list[dict[str, Any]], index: dict[str, Any]) -> str:
    """PURE: how the index's records differ from the library's `_metadata` params ('' if not)."""
    records = {r["name"]: r for _, _, rs in index_shards(index) for r in rs}
    wanted = {p["name"]: p for p in params}
    missing = sorted(set(wanted) - set(records))
    if missing:
        return f"{len(missing)} params missing (first {missing[0]})"
    for name, p in wanted.items():
        r = records[name]
        if [int(d) for d in p.get("shape", [])] != r["shape"] or str(p.get("dtype")) != r["dtype"]:
            return f"{name} is {r['dtype']}{r['shape']} in the index, {p.get('dtype')}{p.get('shape')} in the library"
    return ""


def _ratio(value: float | None, seed: float | None) -> str:
    return "-" if value is None or not seed else f"{value / seed:.3f}"


def speed_cell(cell: dict[str, Any], config: dict[str, Any], tmp: Path, runner: Runner) -> tuple[str, bool]:
    """One cell's result line and whether it ran."""
    seed = cell.get("seed") or {}
    root = _materialize(tmp / "cells", tmp / "blobs", cell)
    fields: dict[str, Any] = {"device": "?", "params_mib": "-", "synth_s": "-"}
    problems: list[str] = []
    figures: dict[str, Any] | None = None
    try:
        # Before gigabytes are written: the library loads, lists the params the index
        # describes, and the device is there.
        code, lines, _ = runner.run(cell["device"], "library", str(root / cell["library"]))
        library = _marked(lines, "FACTORY-LIBRARY ")
        if code != 0 or library is None:
            raise Refusal(f"the library did not load (exit {code}): {_tail(lines)}")
        index = json.loads((root / cell["index"]).read_text())
        mismatch = index_mismatch(library["metadata"].get("params", []), index)
        if mismatch:
            raise Refusal(f"{cell['index']} does not describe the library's params: {mismatch}")
        code, lines, _ = runner.run(cell["device"], "device", cell["device"])
        if code != 0 or _marked(lines, "FACTORY-DEVICE ") is None:
            raise Refusal(_tail(lines) or f"no {cell['device']} device (exit {code})")
        started = time.monotonic()
        total = synthesize(root / cell["index"], root, seed=len(cell["name"]))
        fields["params_mib"], fields["synth_s"] = f"{total / MIB:.0f}", f"{time.monotonic() - started:.0f}"
        speed = config["speed"]
        code, lines, _ = runner.run(
            cell["device"], "run", str(root), str(root / cell["library"]), speed["prompt"], str(speed["tokens"]),
            cell["device"],
        )  # fmt: skip
        figures = _marked(lines, "FACTORY-SMOKE ")
        if code != 0 or figures is None:
            problems.append(f"run exited {code}: {_tail(lines)}")
        elif not figures.get("logits_ok") or not figures.get("generated_tokens"):
            problems.append(
                f"logits of shape {figures.get('logits_shape')}, {len(figures.get('generated_tokens') or [])} tokens"
            )
    except Refusal as e:
        problems.append(str(e))
    finally:
        shutil.rmtree(root, ignore_errors=True)  # a 7B's params: gone before the next cell's
    figures = figures or {}
    named = figures.get("device")
    fields["device"] = json.dumps(str(named) if named not in (None, "", "None") else cell["device"])
    prefill, decode = figures.get("prefill_tok_s"), figures.get("decode_tok_s")
    parts = [
        cell["name"], f"device={fields['device']}",
        f"params_mib={fields['params_mib']}", f"synth_s={fields['synth_s']}",
        f"prompt_tokens={figures.get('prompt_tokens', '-')}", f"decoded={len(figures.get('generated_tokens') or [])}",
        f"prefill_tok_s={'-' if prefill is None else prefill}", f"decode_tok_s={'-' if decode is None else decode}",
        f"finite={figures.get('finite', '-')}",
        f"seed_prefill_tok_s={seed.get('prefill_tok_s', '-')}", f"seed_decode_tok_s={seed.get('decode_tok_s', '-')}",
        f"prefill_vs_seed={_ratio(prefill, seed.get('prefill_tok_s'))}",
        f"decode_vs_seed={_ratio(decode, seed.get('decode_tok_s'))}",
        f"seed_device={json.dumps(seed.get('device', '-'))}",
    ]  # fmt: skip
    verdict = "ran" if not problems else "failed: " + "; ".join(problems)
    return SPEED + " ".join(parts) + " " + verdict, not problems


def speed(args: argparse.Namespace) -> int:
    started = time.monotonic()
    base, config = read_config(args.dir)
    devices = parse_devices(args.devices)
    cells = [c for c in config.get("speed", {}).get("cells", []) if c["device"] in devices]
    if not cells:
        print(f"{SPEED_SUMMARY}ran=0 failed=0 (no {'/'.join(devices)} speed cells in {base})")
        return 0
    work = Path(args.work).resolve() if args.work else None
    with tempfile.TemporaryDirectory(prefix="gpu-check-speed-", dir=work) as temp:
        tmp = Path(temp)
        runner = unpack(base, config, cells, tmp, started + args.deadline_s, args.run_s)
        ran = 0
        for cell in cells:
            line, ok = speed_cell(cell, config, tmp, runner)
            print(line, flush=True)
            ran += ok
    failed = len(cells) - ran
    print(f"{SPEED_SUMMARY}ran={ran} failed={failed} devices={','.join(devices)} "
          f"seconds={time.monotonic() - started:.0f}")  # fmt: skip
    return 1 if failed else 0
