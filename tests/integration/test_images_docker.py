"""`factory images build/ls` against a real Docker engine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BuiltToolchain
from tests.support.docker import BASE_IMAGE, conformance_context, toolchain_manifest
from tests.support.run import factory

pytestmark = pytest.mark.docker


def test_second_build_of_an_unchanged_toolchain_starts_no_build(
    conformance_image: BuiltToolchain, docker_client: Any
) -> None:
    assert "Successfully tagged" not in conformance_image.first_stdout  # build log goes to stderr
    time.sleep(1.1)  # keep the fixture's build out of the event window
    since = time.time()
    done = factory("images", "build", "-m", str(conformance_image.manifest))
    until = time.time() + 0.5
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split("\t") == ["conformance", conformance_image.ref, "up to date"]
    assert "nothing to build" in done.stderr
    # The engine saw no container (every RUN of a build makes one) and no new tag.
    events = list(docker_client.events(since=f"{since:.6f}", until=f"{until:.6f}", decode=True))
    assert [e for e in events if e.get("Type") in {"container", "image"}] == []


def test_images_carry_every_pin_as_a_label(conformance_image: BuiltToolchain, docker_client: Any) -> None:
    labels = docker_client.images.get(conformance_image.ref).labels
    assert labels["org.factory.toolchain"] == "conformance"
    assert labels["org.factory.pin.tvm-commit"] == "b628d91fac716679db539884a55f8c6651f54dea"
    assert labels["org.factory.pin.mlc-llm-commit"] == "bb586e51eb20cba2e82216b75d22d8dd6657cce1"
    assert labels["org.factory.pin.use-cuda"] == "ON"
    assert labels["org.factory.pin.base-image"] == BASE_IMAGE
    assert any(k.startswith("org.factory.patch.mlc-llm/00-standin.patch") for k in labels)
    assert conformance_image.ref.endswith(":" + labels["org.factory.image-hash"])


def test_images_ls_marks_the_current_image(conformance_image: BuiltToolchain) -> None:
    done = factory("images", "ls", "-m", str(conformance_image.manifest))
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if conformance_image.ref in line)
    assert row.split()[-1] == "current"


def test_a_changed_patch_changes_the_tag(conformance_image: BuiltToolchain, tmp_path: Path) -> None:
    from factory.manifest.load import load_manifest
    from factory.manifest.lock import Lock
    from factory.toolchains.images.plan import plan_image

    root = conformance_image.manifest.parent
    before = plan_image(load_manifest(conformance_image.manifest), "conformance", Lock(), local_base_id="sha256:x")
    patch = root / "patches" / "standin.patch"
    original = patch.read_text()
    try:
        patch.write_text(original + "+changed\n")
        after = plan_image(load_manifest(conformance_image.manifest), "conformance", Lock(), local_base_id="sha256:x")
    finally:
        patch.write_text(original)
    assert before.tag != after.tag


def test_a_failing_dockerfile_reports_the_step_and_exits_6(docker_client: Any, tmp_path: Path) -> None:
    context = conformance_context(tmp_path / "conformance")
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace("FROM base AS mlc-source", "FROM base AS mlc-source\nRUN false")
    )
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(toolchain_manifest(tmp_path)))
    done = factory("images", "build", "-m", str(manifest), "--wheelhouse", str(_wheelhouse()), "--offline")
    assert done.returncode == 6, done.stderr
    assert "building factory-toolchain/conformance:" in done.stderr
    assert "returned a non-zero code" in done.stderr


def test_push_to_an_unreachable_registry_is_a_network_error(conformance_image: BuiltToolchain) -> None:
    done = factory("images", "build", "-m", str(conformance_image.manifest), "--push", "127.0.0.1:9")
    assert done.returncode == 3, done.stderr
    assert "pushing 127.0.0.1:9/factory-toolchain/conformance:" in done.stderr


def test_extra_ca_certificates_are_installed_in_the_image(docker_client: Any, tmp_path: Path) -> None:
    import subprocess

    key, cert = tmp_path / "ca.key", tmp_path / "corp-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=corp-proxy-ca",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    conformance_context(tmp_path / "conformance", salt=f"ca-{time.time_ns()}")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(toolchain_manifest(tmp_path)))
    args = ["images", "build", "-m", str(manifest), "--wheelhouse", str(_wheelhouse()), "--offline"]
    done = factory(*args, "--ca-cert", str(cert))
    assert done.returncode == 0, done.stderr
    ref = done.stdout.split("\t")[1]
    output = docker_client.containers.run(
        ref, ["cat", "/usr/local/share/ca-certificates/factory/00-corp-ca.crt"], remove=True, network_mode="none"
    )
    assert output == cert.read_bytes()
    # Transport settings never change the tag: the same build without the cert is a no-op.
    again = factory(*args)
    assert again.stdout.strip().split("\t")[1:3] == [ref, "up to date"]


def _wheelhouse() -> Path:
    from tests.support.docker import ensure_wheelhouse

    return ensure_wheelhouse()
