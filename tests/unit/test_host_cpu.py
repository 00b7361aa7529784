"""x86-64 levels: what a CPU bundle needs, what a host has, and how pull and run use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factory.devices.host_cpu import CPU_FLAGS_ENV, bundle_level, host_flags, level_of, missing_for
from tests.support.bundles import make_bundle
from tests.support.run import factory

V2 = "cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3"
V3 = V2 + " avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
V4 = V3 + " avx512f avx512bw avx512cd avx512dq avx512vl"


def _device(mcpu: str) -> str:
    return json.dumps({"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu", "mcpu": mcpu})


def test_levels_follow_the_psabi_and_need_every_lower_level() -> None:
    assert level_of(frozenset()) == 1
    assert level_of(frozenset(V2.split())) == 2
    assert level_of(frozenset(V3.split())) == 3
    assert level_of(frozenset(V4.split())) == 4
    # AVX2 and friends without the v2 basics is still level 1; v3 less F16C is level 2.
    assert level_of(frozenset(V3.split()) - {"pni"}) == 1
    assert level_of(frozenset(V3.split()) - {"f16c"}) == 2
    assert missing_for(3, frozenset(V3.split()) - {"f16c", "fma"}) == ["f16c", "fma"]


def test_a_bundle_level_comes_from_its_compatibility_device() -> None:
    assert bundle_level(_device("x86-64")) == 1
    assert bundle_level(_device("x86-64-v3")) == 3
    assert bundle_level(json.dumps({"kind": "llvm", "mtriple": "aarch64-linux-gnu"})) is None
    assert bundle_level(json.dumps({"kind": "llvm", "mcpu": "znver3"})) is None  # a named CPU: cannot tell
    assert bundle_level(json.dumps({"kind": "cuda", "arch": "sm_80"})) is None
    assert bundle_level("vulkan:generic") is None


def test_the_host_flags_come_from_cpuinfo_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2 fma")
    assert host_flags() == frozenset({"avx2", "fma"})
    monkeypatch.delenv(CPU_FLAGS_ENV)
    flags = host_flags()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "flags" in cpuinfo.read_text():
        assert flags is not None and "sse2" in flags


def test_pull_auto_takes_the_best_cpu_level_the_host_has_and_run_refuses_the_rest(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    for target, mcpu in (("cpu-x86_64", "x86-64"), ("cpu-x86_64-v3", "x86-64-v3")):
        bundle = make_bundle(tmp_path / "dist", target=target, device=_device(mcpu))
        assert factory("publish", str(bundle), "--store", store).returncode == 0
    cuda = make_bundle(tmp_path / "dist", target="cuda-sm80")  # never chosen without nvidia-smi
    assert factory("publish", str(cuda), "--store", store).returncode == 0
    pulled = {}
    for name, flags in (("v3", V3), ("v4", V4), ("v2", V2), ("none", "")):
        out = tmp_path / f"models-{name}"
        done = factory(
            "pull", "rwkv-5-world-tiny", "-q", "q4f16_1", "-t", "auto", "--store", store, "--out", str(out),
            env={CPU_FLAGS_ENV: flags, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        pulled[name] = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert pulled["v3"] == pulled["v4"] == ["rwkv-5-world-tiny-q4f16_1-cpu-x86_64-v3"]
    assert pulled["v2"] == pulled["none"] == ["rwkv-5-world-tiny-q4f16_1-cpu-x86_64"]

    # Run: the v3 bundle on a v2 host is refused before anything loads, naming what is missing.
    v3_bundle = tmp_path / "models-v3" / "rwkv-5-world-tiny-q4f16_1-cpu-x86_64-v3"
    refused = factory("run", str(v3_bundle), "--prompt", "hi", env={CPU_FLAGS_ENV: V2})
    assert refused.returncode == 2, refused.stderr
    assert "compiled for x86-64-v3 (x86-64 level 3); this CPU is level 2 and lacks" in refused.stderr
    assert "avx2" in refused.stderr and "-t auto" in refused.stderr


def test_the_build_gates_a_v3_bundle_only_where_the_cpu_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from factory.cells.gating import device_reason, has_device
    from factory.manifest.model import Target

    v3 = Target(device=json.loads(_device("x86-64-v3")), runner="container", os="linux")
    portable = Target(device=json.loads(_device("x86-64")), runner="container", os="linux")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv(CPU_FLAGS_ENV, V2)
    assert has_device(portable) and not has_device(v3)
    assert device_reason(v3).startswith("this CPU is x86-64 level 2, the library needs level 3 (abm, avx, avx2")
    monkeypatch.setenv(CPU_FLAGS_ENV, V3)
    assert has_device(v3)
