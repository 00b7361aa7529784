"""Runner parts that need no engine: container settings, env allow-list, host runner, process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from factory import process
from factory.errors import FactoryError
from factory.runners import Mount, Step, step_environment
from factory.runners.container import container_config
from factory.runners.host import READY_MARK, HostRunner

REPO = Path(__file__).resolve().parents[2]

HOST_ENV = {"HF_TOKEN": "hf_x", "AWS_SECRET_ACCESS_KEY": "s", "MLC_MULTI_ARCH": "80,90a", "PATH": "/usr/bin"}


def test_step_environment_is_the_allow_list_plus_the_step() -> None:
    step = Step(name="s", argv=("true",), env={"FACTORY_STEP": "compile"})
    assert step_environment(step, HOST_ENV) == {"MLC_MULTI_ARCH": "80,90a", "FACTORY_STEP": "compile"}


def test_container_config_isolates_the_step(tmp_path: Path) -> None:
    step = Step(
        name="compile",
        image="img:tag",
        argv=("mlc_llm", "compile"),
        mounts=(Mount(source=tmp_path, target="/in"), Mount(source=tmp_path / "o", target="/out", read_only=False)),
        workdir="/out",
    )
    config = container_config(step, user=(1000, 1001), run_id="r1", host_env=HOST_ENV)
    assert config["user"] == "1000:1001"
    assert config["network_mode"] == "none"
    assert "device_requests" not in config
    assert config["volumes"][str(tmp_path.resolve())] == {"bind": "/in", "mode": "ro"}
    assert config["volumes"][str((tmp_path / "o").resolve())] == {"bind": "/out", "mode": "rw"}
    assert config["environment"] == {"HOME": "/tmp", "MLC_MULTI_ARCH": "80,90a"}
    assert config["labels"] == {"org.factory.run": "r1", "org.factory.step": "compile"}
    assert config["cap_drop"] == ["ALL"]


def test_only_steps_that_need_a_gpu_get_one() -> None:
    smoke = Step(name="smoke", image="i", argv=("x",), needs_gpu=True, network=True)
    config = container_config(smoke, user=(0, 0), run_id="r", host_env={})
    assert [r["Capabilities"] for r in config["device_requests"]] == [[["gpu"]]]
    assert config["network_mode"] == "bridge"


def _prefix(tmp_path: Path) -> Path:
    prefix = tmp_path / "prefix"
    (prefix / "venv" / "bin").mkdir(parents=True)
    (prefix / "venv" / "bin" / "python").symlink_to(sys.executable)
    (prefix / READY_MARK).write_text("ok")
    return prefix


def test_host_runner_runs_in_the_prefix_with_the_allow_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("TVM_NUM_THREADS", "2")
    for name in ("LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MLC_MULTI_ARCH", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    prefix = _prefix(tmp_path)
    (prefix / "src" / "tvm" / "build").mkdir(parents=True)  # a source toolchain's TVM
    lines: list[str] = []
    code = "import os, sys; print(sys.prefix); print(sorted(k for k in os.environ if k != 'LC_CTYPE')); sys.exit(3)"
    result = HostRunner(prefix).run(Step(name="s", argv=("python", "-c", code), env={"A": "1"}), lines.append)
    assert result.exit_code == 3
    assert lines[1] == str(sorted(["A", "TVM_NUM_THREADS", "PATH", "HOME", "VIRTUAL_ENV", "TVM_LIBRARY_PATH"]))


def test_a_wheel_prefix_gives_its_steps_what_bootstrap_wrote_and_no_tvm_build(tmp_path: Path) -> None:
    """A wheel toolchain's prefix has no TVM build folder (the wheel finds its own libraries)
    and asks, through runner.env, for what its Linux image sets: no libmlc_llm."""
    prefix = _prefix(tmp_path)
    (prefix / "runner.env").write_text("# written by bootstrap.sh\nSKIP_LOADING_MLCLLM_SO=1\n")
    lines: list[str] = []
    code = "import os; print(os.environ.get('SKIP_LOADING_MLCLLM_SO'), 'TVM_LIBRARY_PATH' in os.environ)"
    assert HostRunner(prefix).run(Step(name="s", argv=("python", "-c", code)), lines.append).exit_code == 0
    assert lines == ["1 False"]


def test_host_runner_needs_a_finished_prefix(tmp_path: Path) -> None:
    with pytest.raises(FactoryError, match="not a finished metal-runner prefix"):
        HostRunner(tmp_path)


def test_process_masks_secret_flags_and_raises_with_the_tail() -> None:
    assert process.display(["s5cmd", "--secret-key", "abc", "--token=xyz", "ls"]) == (
        "s5cmd --secret-key '***' '--token=***' ls"
    )
    echoed: list[str] = []
    with pytest.raises(process.CommandError) as caught:
        process.run([sys.executable, "-c", "print('one'); print('two'); raise SystemExit(4)"], echo=echoed.append)
    assert caught.value.returncode == 4
    assert "two" in caught.value.message
    assert echoed[0].startswith("+ ")


def test_process_reports_a_missing_program() -> None:
    with pytest.raises(FactoryError, match="command not found: no-such-program"):
        process.run(["no-such-program"])


def test_process_child_sees_only_the_given_env_when_asked() -> None:
    done = process.run(
        [sys.executable, "-c", "import os; print(sorted(os.environ))"], env={"ONLY": "1"}, inherit_env=False
    )
    assert "HF_TOKEN" not in done.output and "'ONLY'" in done.output
    assert os.environ  # the parent's environment is untouched


def test_host_runner_maps_mount_targets_to_real_folders(tmp_path: Path) -> None:
    prefix = _prefix(tmp_path)
    model, out = tmp_path / "model", tmp_path / "out"
    model.mkdir()
    out.mkdir()
    (model / "config.json").write_text("{}")
    code = "import os, sys; print(os.getcwd()); print(open(sys.argv[1]).read())"
    step = Step(
        name="s",
        argv=("python", "-c", code, "/in/model/config.json"),
        mounts=(Mount(source=model, target="/in/model"), Mount(source=out, target="/out", read_only=False)),
        workdir="/out",
    )
    lines: list[str] = []
    assert HostRunner(prefix).run(step, lines.append).exit_code == 0
    assert lines == [str(out), "{}"]


def test_fetch_prefers_safetensors() -> None:
    from factory.manifest.weights import choose_files

    both = ["config.json", "model.safetensors", "pytorch_model.bin"]
    patterns = choose_files(both, "safetensors")
    assert patterns is not None and "*.safetensors" in patterns
    assert not any("pytorch" in p for p in patterns)
    torch = choose_files(both, "pytorch")
    assert torch is not None and "pytorch_model*.bin" in torch and "*.safetensors" not in torch
    assert choose_files(["config.json", "pytorch_model.bin"], "safetensors") is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_main_thread_step_through_its_stop_function(signum: int) -> None:
    """`interruptible` keeps signals out of the step: the main thread takes them and calls the
    stops the step registered, so a lock the step held is released by the step itself."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.interruptible_child"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signum)
    out = proc.communicate(timeout=60)[0]
    assert out.strip() == f"stopped by the main thread; signal {signum}; lock free: True"
    assert proc.returncode == 128 + signum
