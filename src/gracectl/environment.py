"""gracectl's own environment variables: the one place they are read, each parsed and checked here.

The CI's parameters (RELEASE, REGISTRY, ...) are the CI seam's (gracectl.ci). Everything else a user may set
is in VARIABLES (README's table is checked against it by tests/unit/test_shared_lists.py). Each reader takes the
environment it reads: the edge (the CLI's commands, `gracectl ci`, the test bed's command) hands it os.environ,
directly or through gracectl.settings, and hands the values down; nothing below the edge reads the environment
(tests/unit/test_environment_edge.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from gracectl.errors import UsageError

VARIABLES = {
    "GRACECTL_REGISTRY": "registry HOST[:PORT][/NAMESPACE] for image references that name none",
    "GRACECTL_INSECURE_REGISTRY": "HOST[:PORT]s reached without TLS verification (comma or space separated)",
    "GRACECTL_CERT_DIR": "folder with the registry's CA (*.crt) and client.cert/client.key (as --cert-dir)",
    "GRACECTL_CERTS_D": "replaces /etc/docker/certs.d and /etc/containers/certs.d (colon separated; tests)",
    "GRACECTL_REGISTRY_CA": "one more CA bundle trusted for every registry",
    "GRACECTL_DEADLINE_S": "overall deadline of a registry operation (default 180)",
    "GRACECTL_REQUEST_TIMEOUT_S": "the most one registry request may take (default 15)",
    "GRACECTL_LOCK_TTL_S": "life of a tag's registry lock unless renewed (default 120)",
    "GRACECTL_LOCK_SETTLE_S": "wait before a claimed lock is read back (default 1)",
    "GRACECTL_LOCK_DIR": "folder of the per-host lock files (default $TMPDIR/gracectl-locks)",
    "GRACECTL_ACTOR": "who moves tags, as the history records it (default user@host; CI adds the build URL)",
    "GRACECTL_TRUST_KEY": "the site's signing public key (cosign.pub): promote/rollback refuse images it did not sign",
    "GRACECTL_SIGNING_KEY": "the site's encrypted signing key (cosign.key; a Jenkins file credential): push signs",
    "GRACECTL_SIGNING_PASSPHRASE_FILE": "file holding the signing key's passphrase (a Jenkins file credential)",
    "GRACECTL_RELEASES_DIR": "folder of release manifests (default releases/ of the checkout)",
    "GRACECTL_STATE_DIR": "the test bed's state (default /var/cache/gracectl/testbed, else ~/.cache/...)",
    "GRACECTL_UPSTREAM_CACHE": "sdists and triton_kernels trees of release checks (default ~/.cache/gracectl/upstream)",
    "GRACECTL_DOCKER": "the docker client to run (default /usr/bin/docker)",
    "GRACECTL_MIN_FREE_GB": "free disk `gracectl doctor` asks of a build node (default 100)",
}


def get(name: str, env: Mapping[str, str]) -> str:
    """A documented variable's value ("" when unset); a name not in VARIABLES is a bug, not a silent ""."""
    if name not in VARIABLES:
        raise KeyError(f"{name} is not one of gracectl's documented variables")
    return env.get(name, "").strip()


def seconds(name: str, default: float, low: float, high: float, env: Mapping[str, str]) -> float:
    """A number of seconds from `name`: finite and within [low, high], else a one-line UsageError."""
    text = get(name, env)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise UsageError(f"{name}={text[:40]!r}: must be a number of seconds from {low:g} to {high:g}")
    return value


def folder(name: str, env: Mapping[str, str]) -> Path | None:
    text = get(name, env)
    if text and Path(text).exists() and not Path(text).is_dir():
        raise UsageError(f"{name}={text!r} is a file, not a folder")
    return Path(text) if text else None


def releases_dir(env: Mapping[str, str]) -> Path | None:
    return folder("GRACECTL_RELEASES_DIR", env)


def state_dir(env: Mapping[str, str]) -> Path | None:
    return folder("GRACECTL_STATE_DIR", env)


def upstream_cache(env: Mapping[str, str]) -> Path | None:
    return folder("GRACECTL_UPSTREAM_CACHE", env)


def default_registry(env: Mapping[str, str]) -> str:
    return get("GRACECTL_REGISTRY", env).strip("/")


def docker_binary(env: Mapping[str, str]) -> str:
    return get("GRACECTL_DOCKER", env)


def min_free_gb(default: float, env: Mapping[str, str]) -> float:
    text = get("GRACECTL_MIN_FREE_GB", env)
    try:
        value = float(text) if text else default
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"GRACECTL_MIN_FREE_GB must be a number of GB, got {text!r}")
    return value


def docker_config_dir(env: Mapping[str, str]) -> Path:
    """docker's own DOCKER_CONFIG (where `docker login` writes), else ~/.docker."""
    return Path(env.get("DOCKER_CONFIG") or Path.home() / ".docker")


def user_cache_dir(env: Mapping[str, str]) -> Path:
    """The XDG cache folder (XDG_CACHE_HOME, else ~/.cache)."""
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
