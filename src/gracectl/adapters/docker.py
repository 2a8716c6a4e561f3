"""The docker client: always Debian's /usr/bin/docker (20.10, BuildKit via DOCKER_BUILDKIT=1).

/usr/local/bin/docker on the build machines is a newer client without the buildx plugin, which refuses
DOCKER_BUILDKIT=1 builds; so gracectl never takes `docker` from PATH. `$GRACECTL_DOCKER` overrides.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence

from gracectl.adapters import proc
from gracectl.errors import CommandFailedError, GraceError

BUILDKIT_ENV = {"DOCKER_BUILDKIT": "1"}


def binary() -> str:
    override = os.environ.get("GRACECTL_DOCKER")
    if override:
        return override
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
