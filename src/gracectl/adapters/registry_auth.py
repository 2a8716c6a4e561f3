"""Registry credentials: where they come from (--username + --password-stdin, or the docker config's
`auths` as `docker login` writes it) and the one encoder of HTTP basic auth that the HTTP client and
skopeo's authfile both use. Credentials never go on a command line, into a log or a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from gracectl.errors import UsageError


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password, even in a traceback
        return f"Credentials(username={self.username!r}, password='***')"

    def basic(self) -> str:
        """USER:PASSWORD base64-encoded: the HTTP basic Authorization value and docker config's `auth`."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def docker_config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"


def credentials_for(registry: str, username: str = "", password: str = "") -> Credentials | None:
    """Explicit credentials (from --password-stdin) win; else the docker config's `auths` entry, if any."""
    if username or password:
        if not (username and password):
            raise UsageError("give both --username and a password on stdin (--password-stdin)")
        return Credentials(username, password)
    try:
        config = json.loads(docker_config_path().read_text())
    except (OSError, ValueError):
        return None
    for key, entry in (config.get("auths") or {}).items():
        host = re.sub(r"^https?://", "", key).split("/", 1)[0]
        if host != registry or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise UsageError(f"{docker_config_path()}: the auth entry of {registry} is not base64 of "
                                 f"USER:PASSWORD: log in again with `docker login {registry}`") from None
            return Credentials(user, pw)
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"])
    return None


def docker_config_json(registry: str, credentials: Credentials) -> bytes:
    """A docker-config-style authfile holding only `credentials` for `registry` (what skopeo reads)."""
    return json.dumps({"auths": {registry: {"auth": credentials.basic()}}}).encode()


def login_hint(registry: str) -> str:
    return f"log in with `docker login {registry}` or pass --username USER --password-stdin"
