"""The docker client: always Debian's /usr/bin/docker (20.10, BuildKit via DOCKER_BUILDKIT=1).

/usr/local/bin/docker on the build machines is a newer client without the buildx plugin, which refuses
DOCKER_BUILDKIT=1 builds; so gracectl never takes `docker` from PATH. `$GRACECTL_DOCKER` overrides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from gracectl.adapters import proc
from gracectl.errors import CommandFailedError, GraceError, ReadOnlyRegistryError, RegistryError

BUILDKIT_ENV = {"DOCKER_BUILDKIT": "1"}


_override = ""  # GRACECTL_DOCKER, handed down once by the edge (gracectl.cli.configure_process)


def use_binary(path: str) -> None:
    """The docker client to run instead of /usr/bin/docker ("" for the default); set by the edge only."""
    global _override
    _override = path


def binary() -> str:
    if _override:
        return _override
    return "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"


def run(args: Sequence[str], *, env: dict[str, str] | None = None, check: bool = True, echo: bool = True,
        timeout: float | None = None, on_line: Callable[[str], None] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return proc.run([binary(), *args], env=env, check=check, echo=echo, timeout=timeout, on_line=on_line)


def command(cmd: Sequence[str]) -> list[str]:
    """A planned command line (`docker build ...`) with the client this module uses."""
    return [binary(), *cmd[1:]] if cmd and cmd[0] == "docker" else list(cmd)


def answers() -> bool:
    """True when a docker daemon answers this client."""
    try:
        run(["version", "--format", "{{.Server.Version}}"], echo=False, timeout=15)
        return True
    except GraceError:
        return False


def has_buildx() -> bool:
    """True when this client has the buildx plugin (what `gracectl build` runs, see plan.detect_builder)."""
    try:
        return run(["buildx", "version"], check=False, echo=False, timeout=10).returncode == 0
    except GraceError:  # no client, or it hangs
        return False


def inspect_image(ref: str) -> dict | None:
    """`docker image inspect` of a local image, or None when there is no such image."""
    try:
        out = run(["image", "inspect", ref], echo=False).stdout
    except CommandFailedError as exc:
        if "no such image" in exc.output.lower():
            return None
        raise
    return json.loads(out)[0]


def history(ref: str) -> list[dict]:
    """Layers of a local image, newest first: [{"id", "created_by", "size"}]."""
    out = run(["history", "--no-trunc", "--human=false", "--format", "{{json .}}", ref], echo=False).stdout
    rows = []
    for line in out.splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append({"id": row.get("ID", ""), "created_by": row.get("CreatedBy", ""),
                         "size": int(row.get("Size") or 0)})
    return rows


# -- dockerd's own push --------------------------------------------------------------------------------------
PROGRESS_EVERY_S = 30.0


def _push_error(host: str, message: str) -> GraceError:
    """dockerd's push error (the Go distribution client's words) -> one typed line that says what to do."""
    from gracectl.adapters.registry import says_read_only
    from gracectl.adapters.registry_tls import go_tls_error  # registry_tls -> errors only; no cycle

    low = message.lower()
    if "connection refused" in low or "no such host" in low or "i/o timeout" in low:
        return RegistryError(f"registry {host} is not reachable from dockerd: {message}")
    if says_read_only(message):
        return ReadOnlyRegistryError(f"registry {host} refused the upload (read-only, maintenance?): {message}")
    if "unauthorized" in low or "authentication required" in low:
        return RegistryError(f"registry {host} refused dockerd's push credentials: {message}: log in or pass "
                             "--username/--password-stdin")
    if "denied" in low:
        return RegistryError(f"registry {host} denied the push (may this user push to this repository?): {message}")
    return go_tls_error(host, message, "dockerd") or CommandFailedError(f"dockerd's push to {host} failed: {message}")


def pull(ref: str, platform: str) -> str:
    """Pull `ref` (REGISTRY/REPO@sha256:..., what a builder pushed) for `platform` into dockerd, with the client's
    own login (the node's registry login); returns the local image ID."""
    run(["pull", "--quiet", "--platform", platform, ref])
    found = inspect_image(ref)
    if found is None:
        raise CommandFailedError(f"docker pull {ref} succeeded but dockerd has no such image")
    return found["Id"]


def push(local_image: str, dest: str, registry_host: str, credentials=None) -> str:
    """Push the dockerd image `local_image` as `dest` (REGISTRY/REPO:TAG) with dockerd's own push; returns the
    manifest digest the registry stored.

    Why dockerd and not skopeo's `docker-daemon:` source: dockerd streams each layer from its own store and
    skips every layer the registry already has (a HEAD per layer, or a cross-repository mount), while skopeo
    first exports the whole image (`docker save`: 5.3 GB and ~100 s for the real vLLM image, twice the image's
    size in free disk) on every push, even when the registry has all of it.
    The Engine API is spoken through the Docker SDK (docker-py): the credentials travel in the request's
    X-Registry-Auth header over dockerd's socket - never argv, a file or a log. dockerd verifies TLS with its
    own trust (system CAs, /etc/docker/certs.d/REGISTRY/): callers check that it matches gracectl's first.
    """
    import docker as sdk  # the SDK (top-level `docker`), not this module
    from docker.errors import DockerException

    repository, tag = dest.rsplit(":", 1)
    auth = {"username": credentials.username, "password": credentials.password} if credentials else {}
    print(f"+ dockerd push {dest} (Engine API; layers the registry has are skipped)", file=sys.stderr, flush=True)
    digest, error, done, last_report = "", "", [], time.monotonic()
    sent: dict[str, int] = {}
    tagged = False
    try:
        api = sdk.from_env(timeout=3600).api
        if local_image != dest:
            api.tag(local_image, repository, tag)  # local only: dockerd pushes by name
            tagged = True
        for event in api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
            if event.get("error"):
                error = event.get("errorDetail", {}).get("message") or event["error"]
                break
            digest = (event.get("aux") or {}).get("Digest", digest)
            status, layer = event.get("status", ""), event.get("id", "")
            if status in ("Pushed", "Layer already exists") or status.startswith("Mounted from"):
                done.append(layer)
                print(f"  {layer}: {status}", file=sys.stderr, flush=True)
            elif status == "Pushing" and layer:
                sent[layer] = (event.get("progressDetail") or {}).get("current", 0)
                if time.monotonic() - last_report >= PROGRESS_EVERY_S:
                    last_report = time.monotonic()
                    print(f"  pushing: {sum(sent.values()) / 1e9:.2f} GB sent, {len(done)} layers done",
                          file=sys.stderr, flush=True)
    except DockerException as e:
        text, low = str(e), str(e).lower()
        if "no such image" in low or ("404" in low and "image" in low):
            raise CommandFailedError(f"dockerd has no image {local_image}: build it first") from None
        if "connection" in low or "socket" in low:
            raise CommandFailedError(f"dockerd is not answering ({text}): start it, or set DOCKER_HOST") from None
        error = text
    finally:
        if tagged:
            try:
                api.remove_image(dest, noprune=True)  # the extra local name only; the image stays
            except DockerException:
                pass
    redacted = proc.redact(error, [credentials.password] if credentials else [])
    if redacted:
        raise _push_error(registry_host, redacted)
    if not digest:
        raise CommandFailedError(f"dockerd's push of {dest} ended without a digest")
    return digest
