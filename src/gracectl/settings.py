"""What gracectl takes from its environment, read at the edge only: the CLI's commands, the CI entry (`gracectl
ci`), the test bed's command. Each reader takes the environment it reads (the edge passes os.environ) and the
options given there, and returns a value that is handed down explicitly; nothing below the edge reads the
environment (tests/unit/test_environment_edge.py). The variables themselves, and their checks, are
gracectl.environment's; the CI's facts gracectl.ci's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from gracectl import ci, environment
from gracectl.adapters.registry_access import TIMINGS, RegistryAccess, default_actor
from gracectl.adapters.registry_auth import Credentials
from gracectl.adapters.signing import SigningKey
from gracectl.errors import UsageError
from gracectl.image_ref import ImageRef


def registry_access(env: Mapping[str, str], *, credentials: Credentials | None = None,
                    insecure: tuple[str, ...] | list[str] = (), cert_dir: Path | None = None,
                    deadline_s: float | None = None) -> RegistryAccess:
    """The operation's RegistryAccess: the options given (the CLI's) over the documented GRACECTL_* variables.
    The one place GRACECTL_INSECURE_REGISTRY is read; RegistryAccess checks every host, whichever gave it."""
    def get(name: str) -> str:
        return environment.get(name, env)

    hosts = {*get("GRACECTL_INSECURE_REGISTRY").replace(",", " ").split(), *insecure}
    timing = {name: environment.seconds(f"GRACECTL_{name.upper()}", *TIMINGS[name], env=env) for name in TIMINGS}
    if deadline_s is not None:
        timing["deadline_s"] = deadline_s
    extra = {}
    if lock_dir := environment.folder("GRACECTL_LOCK_DIR", env):
        extra["lock_dir"] = lock_dir
    if certs_d := get("GRACECTL_CERTS_D"):
        extra["certs_d"] = tuple(Path(p) for p in certs_d.split(os.pathsep) if p)
    who = get("GRACECTL_ACTOR") or default_actor()
    build_url = ci.build_url(env)
    ca, trust = get("GRACECTL_REGISTRY_CA"), get("GRACECTL_TRUST_KEY")
    return RegistryAccess(credentials=credentials, insecure_hosts=frozenset(hosts),
                          trust_key=Path(trust) if trust else None,
                          cert_dir=cert_dir or environment.folder("GRACECTL_CERT_DIR", env),
                          registry_ca=Path(ca) if ca else None, docker_config=environment.docker_config_dir(env),
                          actor=f"{who} ({build_url})" if build_url else who, **timing, **extra)


def signing_key(env: Mapping[str, str]) -> SigningKey | None:
    """The site key: GRACECTL_SIGNING_KEY + GRACECTL_SIGNING_PASSPHRASE_FILE (Jenkins file credentials), or None
    when the site does not sign."""
    key = environment.get("GRACECTL_SIGNING_KEY", env)
    passphrase = environment.get("GRACECTL_SIGNING_PASSPHRASE_FILE", env)
    if bool(key) != bool(passphrase):
        raise UsageError("set both GRACECTL_SIGNING_KEY and GRACECTL_SIGNING_PASSPHRASE_FILE, or neither")
    return SigningKey(Path(key), Path(passphrase)) if key else None


def image_reference(text: str, env: Mapping[str, str]) -> str:
    """An image reference as given, with GRACECTL_REGISTRY (HOST[:PORT][/NAMESPACE]) in front when it names no
    registry; ImageRef.parse refuses one that still names none."""
    if not text or ImageRef.names_registry(text):
        return text
    default = environment.default_registry(env)
    return f"{default}/{text.strip()}" if default else text
