"""Runs INSIDE a toolchain (its own TVM), not in the factory: looks at and runs a
compiled bundle through TVM's Relax VM (CPU, CUDA or Vulkan), without mlc-llm's native runtime.

    python vm_script.py library LIBRARY
        prints `FACTORY-LIBRARY {json}`: the library's `_metadata`, which of the
        functions the runtime calls it exports, and the kinds of device modules it carries.
    python vm_script.py logits PARAMS_DIR LIBRARY TOKENS_JSON OUT_NPY [DEVICE [PREFILL]]
        feeds the token ids one at a time and saves the logits after each as float32
        [T, vocab] (the parity gate's input); DEVICE is cpu (default), cuda or vulkan. With
        PREFILL (P, 2 or more), a fresh sequence then prefills the first P ids in one
        call and decodes the rest one at a time: the logits after the prefill and after
        each decode step, [T - P + 1, vocab] for positions P-1..T-1, go to
        OUT_NPY's name with `-prefill` before `.npy`.
    python vm_script.py device DEVICE
        prints `FACTORY-DEVICE {json}` (the driver's name for it) where TVM has that device
        (cpu, cuda or vulkan) and exits 1 with the reason where it has not.
    python vm_script.py run PARAMS_DIR LIBRARY PROMPT TOKENS [DEVICE]
        encodes PROMPT with the bundle's own `tokenizer_model`, prefills, greedily
        decodes TOKENS tokens and prints `FACTORY-SMOKE {json}`: the decoded text,
        prefill/decode tok/s, the logits' shape, whether every logit was finite and
        the device it ran on. On a GPU the first forward pass (which loads, and on
        Vulkan compiles, the shaders) is a warm-up, not part of the figures.

Only the standard library, numpy, msgpack and TVM are imported, so it runs in any
toolchain that has TVM's Python package.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

LIBRARY_MARK = "FACTORY-LIBRARY "
SMOKE_MARK = "FACTORY-SMOKE "
LOGITS_MARK = "FACTORY-LOGITS "
DEVICE_MARK = "FACTORY-DEVICE "


def _emit(mark: str, data: dict[str, Any]) -> None:
    # allow_nan=False: a NaN figure must never become invalid JSON; callers pass None.
    print(mark + json.dumps(data, allow_nan=False), flush=True)


def _device_modules(module: Any) -> list[str]:
    """The kinds of every imported module (e.g. "library", "cuda")."""
    found = []
    pending = list(module.imports)
    while pending:
        sub = pending.pop()
        pending.extend(sub.imports)
        found.append(str(getattr(sub, "kind", None) or getattr(sub, "type_key", "")))
    return sorted(found)


def _exports(vm: Any, names: tuple[str, ...]) -> list[str]:
    found = []
    for name in names:
        try:
            vm[name]
        except (AttributeError, KeyError, RuntimeError, ValueError):
            continue
        found.append(name)
    return found


def library(path: str) -> None:
    import tvm
    from tvm import relax

    module = tvm.runtime.load_module(path)
    vm = relax.VirtualMachine(module, tvm.cpu())
    metadata = json.loads(str(vm["_metadata"]()))
    names = (
        "embed", "prefill", "decode", "batch_prefill", "batch_decode", "create_rnn_state",
        "create_kv_cache", "reset_kv_cache", "softmax_with_temperature", "_metadata",
    )  # fmt: skip
    functions = _exports(vm, names)
    _emit(LIBRARY_MARK, {"metadata": metadata, "functions": functions, "device_modules": _device_modules(module)})


class Tokenizer:
    """RWKV World: greedy longest match over the bytes of `tokenizer_model` (a msgpack
    map id -> bytes), the way tokenizers-cpp encodes since its PR #19."""

    def __init__(self, path: Path) -> None:
        import msgpack

        table = msgpack.unpackb(path.read_bytes(), strict_map_key=False)
        self.by_id: dict[int, bytes] = {int(k): bytes(v) for k, v in table.items()}
        self.by_bytes = {v: k for k, v in self.by_id.items()}
        self.longest = max(len(v) for v in self.by_id.values())

    def encode(self, text: str) -> list[int]:
        data, ids, at = text.encode(), [], 0
        while at < len(data):
            for size in range(min(self.longest, len(data) - at), 0, -1):
                token = self.by_bytes.get(data[at : at + size])
                if token is not None:
                    ids.append(token)
                    at += size
                    break
            else:
                raise ValueError(f"byte {data[at]:#x} at {at} is not in the vocab")
        return ids

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.by_id.get(i, b"") for i in ids).decode("utf-8", errors="replace")


class Session:
    """One sequence through the compiled model: embed, prefill, decode, with the RNN
    state the library creates."""

    def __init__(self, params_dir: Path, library_path: str, device: str = "cpu") -> None:
        import tvm
        from tvm import relax
        from tvm.contrib import tvmjs

        self.tvm = tvm
        self.device = _device(tvm, device)
        module = tvm.runtime.load_module(library_path)
        self.vm = relax.VirtualMachine(module, self.device)
        config = json.loads((params_dir / "mlc-chat-config.json").read_text())
        index = "tensor-cache.json" if (params_dir / "tensor-cache.json").is_file() else "ndarray-cache.json"
        tensors, _ = tvmjs.load_tensor_cache(str(params_dir / index), self.device)
        metadata = json.loads(str(self.vm["_metadata"]()))
        self.params = [tensors[p["name"]] for p in metadata["params"]]
        self.vocab = int(config["vocab_size"])
        self._add = tvm.get_global_func("vm.builtin.kv_state_add_sequence")
        self._begin = tvm.get_global_func("vm.builtin.kv_state_begin_forward")
        self._end = tvm.get_global_func("vm.builtin.kv_state_end_forward")
        self.restart()

    def restart(self) -> None:
        """A fresh sequence: a new RNN state, nothing fed yet."""
        shape = self.tvm.runtime.ShapeTuple
        self.state = self.vm["create_rnn_state"](shape([1]), shape([1]))
        self._add(self.state, 0)

    def forward(self, ids: list[int]) -> Any:
        """Logits (numpy, float32, shape (vocab,)) after feeding `ids`."""
        tvm = self.tvm
        shape = tvm.runtime.ShapeTuple
        tokens = tvm.runtime.tensor(_int32(ids), self.device)
        embed = self.vm["embed"](tokens, self.params)
        embed = embed.numpy().reshape(1, len(ids), -1)
        embed = tvm.runtime.tensor(embed, self.device)
        self._begin(self.state, shape([0]), shape([len(ids)]))
        step = "prefill" if len(ids) > 1 else "decode"
        out = self.vm[step](embed, self.state, self.params)
        self._end(self.state)
        logits = out[0] if isinstance(out, (list, tuple)) or hasattr(out, "__getitem__") else out
        return logits.numpy().astype("float32").reshape(-1)


def _device(tvm: Any, name: str) -> Any:
    devices = {"cpu": tvm.cpu, "cuda": tvm.cuda, "vulkan": tvm.vulkan}
    if name not in devices:
        sys.exit(f"DEVICE must be one of {', '.join(devices)}, not {name!r}")
    device = devices[name](0)
    if not device.exist:
        sys.exit(f"no {name} device here (TVM's {name} runtime or its driver is missing)")
    return device


def device_name(device: Any) -> str:
    """The driver's name for the device (lavapipe says "llvmpipe (LLVM 15...)")."""
    try:
        name = device.device_name
    except (AttributeError, RuntimeError, ValueError):
        name = None
    return str(name) if name else str(device)  # the CPU has no driver name: "cpu:0"


def device(name: str) -> None:
    import tvm

    _emit(DEVICE_MARK, {"device": device_name(_device(tvm, name))})


def _int32(ids: list[int]) -> Any:
    import numpy as np

    return np.asarray(ids, dtype="int32")


def run(params_dir: str, library_path: str, prompt: str, tokens: int, device: str = "cpu") -> None:
    import numpy as np

    folder = Path(params_dir)
    tokenizer = Tokenizer(folder / "tokenizer_model")
    ids = tokenizer.encode(prompt)
    session = Session(folder, library_path, device)
    if device != "cpu":
        session.forward(ids)
        session.forward(ids[:1])
        session.restart()
    started = time.perf_counter()
    logits = session.forward(ids)
    prefill_s = time.perf_counter() - started
    finite = bool(np.isfinite(logits).all())
    shape_ok = logits.shape == (session.vocab,)
    generated: list[int] = []
    decode_s = 0.0
    for _ in range(tokens):
        if not finite:
            break
        token = int(np.argmax(logits))
        generated.append(token)
        started = time.perf_counter()
        logits = session.forward([token])
        decode_s += time.perf_counter() - started
        finite = finite and bool(np.isfinite(logits).all())
    _emit(
        SMOKE_MARK,
        {
            "runtime": f"relax-vm-{device}",
            "device": device_name(session.device),
            "prompt_tokens": len(ids),
            "generated_tokens": generated,
            "output": tokenizer.decode(generated),
            "prefill_tok_s": _rate(len(ids), prefill_s),
            "decode_tok_s": _rate(len(generated), decode_s),
            "logits_shape": list(logits.shape),
            "vocab_size": session.vocab,
            "logits_ok": shape_ok,
            "finite": finite,
        },
    )


def logits(
    params_dir: str, library_path: str, tokens_json: str, out_npy: str, device: str = "cpu", prefill: str = "0"
) -> None:
    import numpy as np

    tokens = [int(t) for t in json.loads(Path(tokens_json).read_text())]
    session = Session(Path(params_dir), library_path, device)
    rows = [session.forward([token]) for token in tokens]
    np.save(out_npy, np.stack(rows).astype("float32"))
    figures: dict[str, Any] = {"positions": len(rows), "vocab_size": session.vocab, "device": device}
    count = int(prefill)
    if count:
        if not 2 <= count <= len(tokens):
            sys.exit(f"PREFILL must be between 2 and the {len(tokens)} tokens, not {count}")
        session.restart()
        after = [session.forward(tokens[:count])]
        after += [session.forward([token]) for token in tokens[count:]]
        np.save(prefill_path(out_npy), np.stack(after).astype("float32"))
        figures["prefill"] = count
    _emit(LOGITS_MARK, figures)


def prefill_path(out_npy: str) -> str:
    """Where `logits` saves the prefill path's rows, beside OUT_NPY."""
    return out_npy[: -len(".npy")] + "-prefill.npy" if out_npy.endswith(".npy") else out_npy + "-prefill"


def _rate(count: int, seconds: float) -> float | None:
    if count == 0 or seconds <= 0 or math.isnan(seconds):
        return None
    return round(count / seconds, 2)


def main(argv: list[str]) -> None:
    if argv[:1] == ["library"] and len(argv) == 2:
        library(argv[1])
    elif argv[:1] == ["device"] and len(argv) == 2:
        device(argv[1])
    elif argv[:1] == ["run"] and len(argv) in (5, 6):
        run(argv[1], argv[2], argv[3], int(argv[4]), *argv[5:])
    elif argv[:1] == ["logits"] and len(argv) in (5, 6, 7):
        logits(*argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
