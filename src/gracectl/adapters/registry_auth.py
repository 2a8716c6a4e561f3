"""Registry credentials, found where docker finds them: --username + --password-stdin, else the docker
config's `credHelpers[REGISTRY]`, `credsStore` (both: `docker-credential-NAME get`, the helper protocol
docker uses) and `auths` (as `docker login` writes it); and the one encoder of HTTP basic auth that the
HTTP client (basic registries, token realms) and skopeo's authfile both use. Credentials never go on a
command line, into a log, a record, an error or a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path

from gracectl.adapters import proc
from gracectl.errors import CommandFailedError, RegistryError, UsageError


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password, even in a traceback
        return f"Credentials(username={self.username!r}, password='***')"

    def basic(self) -> str:
        """USER:PASSWORD base64-encoded: the HTTP basic Authorization value and docker config's `auth`."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def docker_config_path(config_dir: Path | None = None) -> Path:
    """config.json in `config_dir` (docker's DOCKER_CONFIG, read at the edge), else in ~/.docker."""
    return (config_dir or Path.home() / ".docker") / "config.json"


def _config(config_dir: Path | None) -> dict:
    try:
        config = json.loads(docker_config_path(config_dir).read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _host_of(key: str) -> str:
    return re.sub(r"^https?://", "", key).split("/", 1)[0]


def helper_credentials(helper: str, registry: str, timeout: float = 60.0) -> Credentials | None:
    """`docker-credential-HELPER get` with the registry on stdin, as docker runs it: JSON with Username and
    Secret on stdout; a helper that has nothing for the registry says "credentials not found" and exits 1."""
    program = f"docker-credential-{helper}"
    try:
        result = proc.run([program, "get"], input=registry, echo=False, timeout=timeout)
    except CommandFailedError as e:
        if "not found" in e.output.lower():
            return None
        raise RegistryError(f"credential helper {program} failed for {registry} (exit {e.returncode}): "
                            "check it with `echo REGISTRY | " + program + " get`") from None
    try:
        answer = json.loads(result.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"credential helper {program} gave no JSON with Username and Secret for "
                            f"{registry}") from None
    if username == "<token>":  # an identity token (OAuth2 refresh token) instead of a password
        raise RegistryError(f"credential helper {program} holds an identity token for {registry}, which gracectl "
                            "does not use: store a username and password (e.g. a robot account) instead")
    return Credentials(username, secret) if username or secret else None


def credentials_for(registry: str, username: str = "", password: str = "", *,
                    config_dir: Path | None = None, timeout: float = 60.0) -> Credentials | None:
    """Explicit credentials (from --password-stdin) win; else docker's order: the registry's credential
    helper (`credHelpers`), the default store (`credsStore`), the `auths` entry. None: anonymous."""
    if username or password:
        if not (username and password):
            raise UsageError("give both --username and a password on stdin (--password-stdin)")
        return Credentials(username, password)
    config = _config(config_dir)
    helpers = config.get("credHelpers") or {}
    helper = next((name for key, name in helpers.items() if _host_of(key) == registry), None)
    if helper:
        return helper_credentials(helper, registry, timeout)
    if config.get("credsStore"):
        found = helper_credentials(config["credsStore"], registry, timeout)
        if found:
            return found
    for key, entry in (config.get("auths") or {}).items():
        if _host_of(key) != registry or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise UsageError(f"{docker_config_path(config_dir)}: the auth entry of {registry} is not base64 of "
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
