"""Checks the Vulkan codegen and runtime that build.sh adds to the apache-tvm wheel.

Run inside the image: python check.py. It compiles small kernels for Vulkan with a generic x86-64
host, runs them on tvm.vulkan(0) (Mesa lavapipe without a GPU) and compares with numpy. One
kernel keeps bool in a kernel-local buffer and TVM's top-p sampler keeps `greater_than_u` so:
both fail to compile without spirv-bool-buffers.patch. About 15 s.
"""

import os
import tempfile

# Mesa writes its shader cache under ~/.cache otherwise.
os.environ.setdefault("MESA_SHADER_CACHE_DIR", tempfile.mkdtemp(prefix="mesa-shader-cache-"))

import numpy as np
import tvm
from tvm.relax.backend.gpu_generic.sampling import gpu_multinomial_from_uniform
from tvm.script import tirx as T

HOST = {"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu", "mcpu": "x86-64"}
# int8 storage (bool buffers are kept as int8) and int64 indices (the sampler) must be asked
# for; the device is checked to have them below.
FEATURES = ("supports_int8", "supports_8bit_buffer", "supports_storage_buffer_storage_class", "supports_int64")


@T.prim_func
def vector_add(a: T.Buffer((1024,), "float32"), b: T.Buffer((1024,), "float32"), c: T.Buffer((1024,), "float32")):
    T.func_attr({"global_symbol": "vector_add", "tirx.noalias": True})
    for bx in T.thread_binding(8, thread="blockIdx.x"):
        for tx in T.thread_binding(128, thread="threadIdx.x"):
            c[bx * 128 + tx] = a[bx * 128 + tx] + b[bx * 128 + tx]


@T.prim_func(s_tir=True)
def local_bool(x: T.Buffer((256,), "float32"), y: T.Buffer((256,), "bool")):
    # y[i] = x[i] > 0.5 and x[next in its group of 4] > 0.5, through a local bool buffer.
    T.func_attr({"global_symbol": "local_bool", "tirx.noalias": True, "tirx.is_scheduled": True})
    for bx in T.thread_binding(16, thread="blockIdx.x"):
        for tx in T.thread_binding(4, thread="threadIdx.x"):
            with T.sblock():
                above = T.sblock_alloc_buffer((4,), "bool", scope="local")
                for v in T.unroll(4):
                    above[v] = x[(bx * 4 + tx) * 4 + v] > T.float32(0.5)
                for v in T.unroll(4):
                    y[(bx * 4 + tx) * 4 + v] = above[v] and above[(v + 1) % 4]


def main():
    assert tvm.get_global_func("target.build.vulkan", allow_missing=True), "no Vulkan codegen"
    assert tvm.get_global_func("device_api.vulkan", allow_missing=True), "no Vulkan runtime"
    dev = tvm.vulkan(0)
    assert dev.exist, "no Vulkan device (is mesa-vulkan-drivers installed?)"
    print("device:", dev.device_name)
    prop = tvm.get_global_func("device_api.vulkan.get_target_property")
    missing = [f for f in FEATURES if not prop(dev, f)]
    assert not missing, f"device lacks {missing}"
    rng = np.random.default_rng(0)

    plain = tvm.target.Target({"kind": "vulkan"}, host=HOST)
    a, b = rng.random(1024, dtype="float32"), rng.random(1024, dtype="float32")
    c = tvm.runtime.empty((1024,), "float32", dev)
    tvm.compile(vector_add, target=plain)["vector_add"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev), c)
    np.testing.assert_allclose(c.numpy(), a + b, rtol=1e-6)
    print("vector_add: ok")

    target = tvm.target.Target({"kind": "vulkan", **{f: True for f in FEATURES}}, host=HOST)
    x = rng.random(256, dtype="float32")
    y = tvm.runtime.empty((256,), "bool", dev)
    tvm.compile(local_bool, target=target)["local_bool"](tvm.runtime.tensor(x, dev), y)
    above = (x > 0.5).reshape(-1, 4)
    np.testing.assert_array_equal(y.numpy(), (above & np.roll(above, -1, axis=1)).reshape(-1))
    print("local_bool: ok")

    # TVM's top-p sampler (what mlc-llm compiles): the first index whose running sum reaches u.
    # Its default shape (4 x 32 threads) is compiled only: its in-warp scan assumes threads
    # that run in lockstep, which lavapipe's do not, so it returns wrong indices there (seen
    # with and without bool buffers involved). One thread per row runs every bool path.
    with target:
        tvm.compile(gpu_multinomial_from_uniform().with_attr("global_symbol", "sample"), target=target)
        sampler = gpu_multinomial_from_uniform(ty_len=1, tx_len=1).with_attr("global_symbol", "sample")
    rows, vocab, batch = 3, 1000, 8
    prob = rng.random((rows, vocab), dtype="float32")
    prob /= prob.sum(axis=1, keepdims=True)
    row_indices = rng.integers(0, rows, (batch, 1), dtype="int64")
    uniform = rng.uniform(0.01, 0.99, (batch, 1)).astype("float32")
    expected = np.array(
        [
            np.searchsorted(np.cumsum(prob[r].astype("float64")), u)
            for r, u in zip(row_indices[:, 0], uniform[:, 0], strict=True)
        ]
    ).reshape(batch, 1)
    token_ids = tvm.runtime.empty((batch, 1), "int64", dev)
    tvm.compile(sampler, target=target)["sample"](
        tvm.runtime.tensor(prob, dev), tvm.runtime.tensor(uniform, dev), tvm.runtime.tensor(row_indices, dev), token_ids
    )
    np.testing.assert_array_equal(token_ids.numpy(), expected)
    print("top-p sampler (bool buffers): ok,", token_ids.numpy()[:, 0].tolist())
    print("vulkan check: ok")


if __name__ == "__main__":
    main()
