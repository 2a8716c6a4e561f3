"""skopeo, for what moves image layers: copying a local (dockerd or OCI layout) image to a registry and
reading the manifest a local image would have. Registry metadata goes through adapters.registry instead.
"""

from __future__ import annotations

import contextlib
import json
import os

from gracectl.adapters import proc
from gracectl.adapters.registry import Registry, says_read_only
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.registry_auth import docker_config_json, login_hint
from gracectl.adapters.registry_tls import skopeo_cert_dir, go_tls_error
from gracectl.errors import CommandFailedError, ReadOnlyRegistryError, RegistryError
from gracectl.image_ref import ImageRef

TRANSPORTS = ("docker://", "docker-daemon:", "oci:", "oci-archive:", "docker-archive:", "dir:",
              "containers-storage:")


def transport_ref(image: str) -> str:
    """A skopeo source: as given when it names a transport, else a local dockerd image."""
    return image if image.startswith(TRANSPORTS) else f"docker-daemon:{image}"


def _tls_flags(option: str, ref: str, access: RegistryAccess) -> list[str]:
    """skopeo's TLS flags for a docker:// `ref` (same settings as the HTTP client's)."""
    if not ref.startswith("docker://"):
        return []
    return access.tls(ref[len("docker://"):].split("/", 1)[0]).skopeo_flags(option.replace("tls-verify", ""))


@contextlib.contextmanager
def memory_file(name: str, content: bytes = b""):
    """An anonymous in-memory file (memfd) a child reads or writes as /dev/fd/N: never on any disk, so no
    exit - SIGKILL included - can leave it behind; it vanishes with the last descriptor."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, content)
        yield fd
    finally:
        os.close(fd)


def skopeo_copy(source: str, dest: ImageRef, registry: Registry) -> str:
    """Copy `source` (a skopeo transport ref, see transport_ref) to `dest` on `registry` (its credentials and TLS,
    already worked out); returns the pushed manifest digest.

    The credentials reach skopeo as a docker-config authfile in memory (never --creds, which shows in `ps`,
    and never a file on disk), and its digest comes back the same way: nothing to clean up after a kill.
    """
    target = f"docker://{dest}"
    credentials = registry.credentials
    auth_json = docker_config_json(dest.registry, credentials) if credentials else b""
    with memory_file("gracectl-auth", auth_json) as auth_fd, memory_file("gracectl-digest") as digest_fd, \
            skopeo_cert_dir(registry.tls, "dest-cert-dir") as dest_tls:
        auth = ["--authfile", f"/dev/fd/{auth_fd}"] if credentials else []
        secrets = [credentials.password] if credentials else []
        try:
            proc.run(["skopeo", "copy", *auth, *_tls_flags("src-tls-verify", source, registry.access), *dest_tls,
                      "--digestfile", f"/dev/fd/{digest_fd}", source, target],
                     secrets=secrets, pass_fds=(auth_fd, digest_fd))
        except CommandFailedError as e:
            raise go_tls_error(dest.registry, e.output) or push_refusal(dest.registry, e.output) or e from None
        return os.pread(digest_fd, 200, 0).decode().strip()


def push_refusal(registry: str, output: str) -> RegistryError | None:
    """A registry's refusal in skopeo's output, in one line (None when it is another failure)."""
    low = output.lower()
    if says_read_only(output):
        return ReadOnlyRegistryError(f"registry {registry} is read-only (it answered skopeo's upload with 405): "
                                     "nothing was pushed; publish again when it is writable")
    if any(word in low for word in ("denied", "unauthorized", "authentication required")):
        return RegistryError(f"registry {registry} refused the push (denied or unauthorized): "
                             f"{login_hint(registry)}, with push rights")
    return None


def skopeo_inspect_raw(source: str, access: RegistryAccess) -> dict:
    """The manifest of a local image `source` as skopeo sees it (the manifest it would push)."""
    out = proc.run(["skopeo", "inspect", "--raw", *_tls_flags("tls-verify", source, access), source],
                   echo=False).stdout
    return json.loads(out)
