"""skopeo, for what moves image layers: copying a local (dockerd or OCI layout) image to a registry and
reading the manifest a local image would have. Registry metadata goes through adapters.registry instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from gracectl.adapters import proc
from gracectl.adapters.registry import is_loopback
from gracectl.adapters.registry_auth import Credentials, docker_config_json
from gracectl.image_ref import ImageRef

TRANSPORTS = ("docker://", "docker-daemon:", "oci:", "oci-archive:", "docker-archive:", "dir:",
              "containers-storage:")


def transport_ref(image: str) -> str:
    """A skopeo source: as given when it names a transport, else a local dockerd image."""
    return image if image.startswith(TRANSPORTS) else f"docker-daemon:{image}"


def _tls_flags(option: str, ref: str) -> list[str]:
    if ref.startswith("docker://") and is_loopback(ref[len("docker://"):].split("/", 1)[0]):
        return [f"--{option}=false"]
    return []


@contextlib.contextmanager
def authfile(registry: str, credentials: Credentials | None):
    """A temporary 0600 docker-config-style authfile for skopeo (never --creds: it shows in `ps`)."""
    if credentials is None:
        yield []
        return
    fd, path = tempfile.mkstemp(prefix="gracectl-auth-", suffix=".json")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(docker_config_json(registry, credentials))
        yield ["--authfile", path]
    finally:
        os.unlink(path)


def skopeo_copy(source: str, dest: ImageRef, credentials: Credentials | None = None) -> str:
    """Copy `source` (a skopeo transport ref, see transport_ref) to `dest`; returns the pushed manifest digest."""
    target = f"docker://{dest}"
    with tempfile.TemporaryDirectory(prefix="gracectl-copy-") as tmp, authfile(dest.registry, credentials) as auth:
        digest_file = Path(tmp) / "digest"
        secrets = [credentials.password] if credentials else []
        proc.run(["skopeo", "copy", *auth, *_tls_flags("src-tls-verify", source),
                  *_tls_flags("dest-tls-verify", target), "--digestfile", str(digest_file), source, target],
                 secrets=secrets)
        return digest_file.read_text().strip()


def skopeo_inspect_raw(source: str) -> dict:
    """The manifest of a local image `source` as skopeo sees it (the manifest it would push)."""
    out = proc.run(["skopeo", "inspect", "--raw", *_tls_flags("tls-verify", source), source], echo=False).stdout
    return json.loads(out)
