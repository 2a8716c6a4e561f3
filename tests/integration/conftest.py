"""Shared fixtures of the integration tests: a REAL docker-registry on 127.0.0.1 (free port), with and
without htpasswd auth, and tiny real images (an OCI layout written here, pushed with skopeo).

- `registry`: "127.0.0.1:PORT" of a registry without auth (one per test session).
- `auth_registry`: ("127.0.0.1:PORT", user, password) of a registry with htpasswd (bcrypt) auth.
- `oci_image(content) -> "oci:DIR:latest"`: a one-file image, different content -> different digest.
- `fault_proxy`: a FaultProxy (fault_proxy.py) in front of `registry`: drop, refuse, delay, stall, drip.
- `bed`: the local test bed, brought up once per session (a no-op after `gracectl testbed up`, as in
  scripts/test.sh).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from fault_proxy import FaultProxy
from gracectl.cli import configure_process
from gracectl.commands.testbed import configure_bed
from gracectl.testbed.registry_server import RegistryServer
from gracectl.testbed import Testbed

# This test process is an edge of its own, as the CLI is: the locations the CLI hands down from the environment
# (the docker client, the release manifests' folder, the test bed's folders; scripts/cache-dirs.sh sets them).
configure_process(os.environ)
configure_bed(os.environ)


@pytest.fixture(scope="session")
def bed() -> Testbed:
    bed = Testbed()
    bed.up()
    return bed


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("registry")).start() as server:
        yield server.address


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory):
    user, password = "ci-user", "pw-" + secrets.token_hex(8)
    with RegistryServer(tmp_path_factory.mktemp("auth-registry"), user=user, password=password).start() as server:
        yield server.address, user, password


@pytest.fixture
def fault_proxy(registry):
    with FaultProxy(registry).start() as proxy:
        yield proxy


def _blob(root: Path, data: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def write_oci_layout(root: Path, content: str, tag: str = "latest") -> str:
    """A minimal, valid single-layer image (one file /hello.txt) as an OCI layout; returns oci:ROOT:TAG."""
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = content.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    layer_desc = _blob(root, layer.getvalue(), "application/vnd.oci.image.layer.v1.tar")
    config = {"architecture": "arm64", "os": "linux", "config": {"Cmd": ["/hello.txt"]},
              "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}}
    config_desc = _blob(root, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = _blob(root, json.dumps(manifest).encode(), manifest["mediaType"])
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return f"oci:{root}:{tag}"


@pytest.fixture
def oci_image(tmp_path):
    counter = iter(range(1000))

    def make(content: str) -> str:
        return write_oci_layout(tmp_path / f"image-{next(counter)}", content)

    return make


@pytest.fixture
def local_image(tmp_path):
    """A fresh two-layer image in dockerd (unique content, so no registry has its layers yet)."""
    context = tmp_path / "ctx"
    context.mkdir()
    for name in ("a.txt", "b.txt"):
        (context / name).write_text(uuid.uuid4().hex)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\n")
    name = f"gracectl-test-push:{uuid.uuid4().hex[:8]}"
    subprocess.run(["/usr/bin/docker", "build", "-q", "-t", name, str(context)], check=True, capture_output=True,
                   env={**os.environ, "DOCKER_BUILDKIT": "1"})
    yield name
    subprocess.run(["/usr/bin/docker", "rmi", name], capture_output=True)
