"""The container runner against a real engine: mounts, ownership, network, env, cleanup."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from factory.runners import Mount, Step
from factory.runners.container import RUN_LABEL, ContainerRunner
from tests.conftest import BuiltToolchain

pytestmark = pytest.mark.docker
REPO = Path(__file__).resolve().parents[2]


def _step(image: str, script: str, **kwargs: Any) -> Step:
    return Step(name="test", image=image, argv=("bash", "-c", script), **kwargs)


def _run(runner: ContainerRunner, step: Step) -> tuple[int, list[str]]:
    lines: list[str] = []
    result = runner.run(step, lines.append)
    assert runner.leftovers() == []
    return result.exit_code, lines


def test_outputs_belong_to_the_calling_user_and_inputs_are_read_only(
    conformance_image: BuiltToolchain, docker_client: Any, tmp_path: Path
) -> None:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    (inputs / "weights.bin").write_bytes(b"w" * 10)
    os.chmod(outputs, 0o777)  # the step runs as another uid below
    runner = ContainerRunner(docker_client, user=(4321, 4322))
    mounts = (Mount(source=inputs, target="/in"), Mount(source=outputs, target="/out", read_only=False))
    code, lines = _run(
        runner,
        _step(
            conformance_image.ref,
            "id -u; id -g; cp /in/weights.bin /out/params.bin && mkdir /out/sub && echo x > /out/sub/f; "
            "touch /in/forbidden 2>/dev/null && echo wrote-input || echo input-read-only",
            mounts=mounts,
        ),
    )
    assert code == 0, lines
    assert lines[:2] == ["4321", "4322"]
    assert lines[-1] == "input-read-only"
    for path in (outputs / "params.bin", outputs / "sub", outputs / "sub" / "f"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322)
    assert (outputs / "params.bin").read_bytes() == b"w" * 10
    assert not (inputs / "forbidden").exists()


def test_by_default_the_step_runs_as_the_caller(
    conformance_image: BuiltToolchain, docker_client: Any, tmp_path: Path
) -> None:
    runner = ContainerRunner(docker_client)
    code, _ = _run(
        runner,
        _step(
            conformance_image.ref, "echo hi > /out/f", mounts=(Mount(source=tmp_path, target="/out", read_only=False),)
        ),
    )
    assert code == 0
    assert (tmp_path / "f").stat().st_uid == os.getuid()


def test_a_step_without_network_cannot_connect_but_one_with_network_can(
    conformance_image: BuiltToolchain, docker_client: Any
) -> None:
    # A listener on the host, reachable from the default bridge through its gateway.
    ipam = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    server = socket.create_server(("0.0.0.0", 0))
    port = server.getsockname()[1]
    accepted: list[bool] = []

    def accept() -> None:
        server.settimeout(60)
        try:
            conn, _ = server.accept()
            accepted.append(True)
            conn.close()
        except TimeoutError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    probe = f"exec 3<>/dev/tcp/{gateway}/{port} && echo connected"
    runner = ContainerRunner(docker_client)
    try:
        offline, offline_lines = _run(runner, _step(conformance_image.ref, probe))
        online, online_lines = _run(runner, _step(conformance_image.ref, probe, network=True))
    finally:
        thread.join(timeout=65)
        server.close()
    assert offline != 0 and "connected" not in offline_lines
    assert any("unreachable" in line.lower() for line in offline_lines), offline_lines
    assert online == 0 and online_lines[-1] == "connected"
    assert accepted == [True]


def test_only_allow_listed_variables_reach_a_step(
    conformance_image: BuiltToolchain, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    monkeypatch.setenv("MLC_MULTI_ARCH", "80,90a")
    runner = ContainerRunner(docker_client)
    code, lines = _run(runner, _step(conformance_image.ref, "env", env={"FACTORY_STEP": "convert"}))
    assert code == 0
    seen = dict(line.split("=", 1) for line in lines if "=" in line)
    assert seen["MLC_MULTI_ARCH"] == "80,90a"
    assert seen["FACTORY_STEP"] == "convert"
    assert not {"HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN"} & set(seen)
    assert "secret" not in "\n".join(lines)


def test_a_failing_step_returns_its_exit_code_and_leaves_no_container(
    conformance_image: BuiltToolchain, docker_client: Any
) -> None:
    runner = ContainerRunner(docker_client)
    code, lines = _run(runner, _step(conformance_image.ref, "echo about to fail; exit 7"))
    assert code == 7
    assert lines == ["about to fail"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_step_leaves_no_container(
    conformance_image: BuiltToolchain, docker_client: Any, signum: int
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.step_in_container", conformance_image.ref],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().split()[-1]
    assert proc.stdout.readline().strip() == "started"
    running = docker_client.containers.list(filters={"label": f"{RUN_LABEL}={run_id}"})
    assert len(running) == 1
    proc.send_signal(signum)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0
    assert "interrupted; its container was removed" in rest
    deadline = time.monotonic() + 5
    while docker_client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}):
        assert time.monotonic() < deadline, "container left behind"
        time.sleep(0.2)


def test_the_image_carries_the_rendered_pins(conformance_image: BuiltToolchain, docker_client: Any) -> None:
    from factory.manifest.load import load_manifest
    from factory.manifest.lock import Lock
    from factory.toolchains.images.plan import plan_image

    plan = plan_image(load_manifest(conformance_image.manifest), "conformance", Lock(), local_base_id="sha256:x")
    runner = ContainerRunner(docker_client)
    code, lines = _run(runner, _step(conformance_image.ref, "cat /opt/factory/pins.env"))
    assert code == 0
    inside = dict(line.split("=", 1) for line in lines)
    assert inside == {k: v for k, v in plan.build_args.items() if k != "BASE_IMAGE"}
