"""RegistryAccess: everything one operation needs to reach and change a registry, as ONE frozen value.

It is built once at the edge (gracectl.settings.registry_access: the CLI's shared registry options,
commands/options.py, over the documented GRACECTL_* variables) and handed down explicitly to the
registry client, its token auth, skopeo and dockerd's push. Nothing below reads the environment for these
settings, so two operations in one process (a test, a server) can hold different ones.

TLS per registry HOST[:PORT] (see adapters.registry_tls for what each setting means to the transport):
  1. `cert_dir` (--cert-dir / GRACECTL_CERT_DIR): a folder as skopeo's --cert-dir reads it (*.crt CAs,
     client.cert + client.key), for the registry this operation talks to;
  2. else `certs_d`/HOST[:PORT]/ (default /etc/docker/certs.d and /etc/containers/certs.d: what docker and
     skopeo read);
  3. plus `registry_ca` (GRACECTL_REGISTRY_CA): one more CA bundle trusted for every registry.
`insecure_hosts` (--insecure-registry / GRACECTL_INSECURE_REGISTRY) are reached without verification.
Credentials: `credentials` (--username + --password-stdin) win; else the docker config's for that host.
"""

from __future__ import annotations

import getpass
import math
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gracectl.adapters.registry_auth import Credentials, credentials_for
from gracectl.adapters.registry_tls import CERTS_D, TlsSettings, is_loopback
from gracectl.errors import UsageError
from gracectl.image_ref import control_free, valid_host

# name, default, lowest, highest (seconds): every timing an operation takes, bounded so that no setting
# can make the lock's renewal margin shorter than one request (see tags.lock).
TIMINGS = {
    "deadline_s": (180.0, 1.0, 86400.0),  # the whole operation (an incident rollback fails fast)
    "request_timeout_s": (15.0, 1.0, 600.0),  # one request, whole
    "lock_ttl_s": (120.0, 1.0, 86400.0),  # the registry lock's life unless renewed
    "lock_settle_s": (1.0, 0.0, 60.0),  # wait before reading a claimed lock back
}


def default_actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass(frozen=True)
class RegistryAccess:
    credentials: Credentials | None = None  # explicit; None: the docker config's for each host
    insecure_hosts: frozenset[str] = frozenset()
    cert_dir: Path | None = None
    certs_d: tuple[Path, ...] = tuple(Path(p) for p in CERTS_D)
    registry_ca: Path | None = None
    deadline_s: float = TIMINGS["deadline_s"][0]
    request_timeout_s: float = TIMINGS["request_timeout_s"][0]
    lock_ttl_s: float = TIMINGS["lock_ttl_s"][0]
    lock_settle_s: float = TIMINGS["lock_settle_s"][0]
    lock_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "gracectl-locks")
    actor: str = ""  # who moves tags, as the history records it; "" = user@host
    docker_config: Path | None = None  # docker's config folder (DOCKER_CONFIG); None: ~/.docker
    trust_key: Path | None = None  # the site's signing public key: tags move only to images it signed

    def __post_init__(self):
        object.__setattr__(self, "insecure_hosts", frozenset(self.insecure_hosts))
        for host in self.insecure_hosts:
            if not valid_host(host):
                raise UsageError(f"--insecure-registry / GRACECTL_INSECURE_REGISTRY: {host[:100]!r} is not a "
                                 "registry HOST[:PORT]")
        for name, (_, low, high) in TIMINGS.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
                raise UsageError(f"{name} must be {low:g} to {high:g} seconds, got {value!r}")
        if self.cert_dir is not None and not Path(self.cert_dir).is_dir():
            raise UsageError(f"--cert-dir / GRACECTL_CERT_DIR {str(self.cert_dir)!r} is not a folder")
        if self.lock_ttl_s < 3 * self.request_timeout_s:  # the lock's fencing margin is 1.5 request timeouts
            raise UsageError(f"GRACECTL_LOCK_TTL_S ({self.lock_ttl_s:g}) must be at least 3 x "
                             f"GRACECTL_REQUEST_TIMEOUT_S ({self.request_timeout_s:g}): a write must land well "
                             "inside the lock's life")
        control_free(self.actor, "GRACECTL_ACTOR")
        if self.trust_key is not None and not Path(self.trust_key).is_file():
            raise UsageError(f"GRACECTL_TRUST_KEY={str(self.trust_key)!r} is not a file (the site's cosign.pub)")
        if self.registry_ca is not None and not Path(self.registry_ca).is_file():
            raise UsageError(f"GRACECTL_REGISTRY_CA={str(self.registry_ca)!r} is not a file")

    @property
    def who(self) -> str:
        return self.actor or default_actor()

    def credentials_for(self, host: str) -> Credentials | None:
        # a credential helper that hangs is bounded like any request of the operation
        return self.credentials or credentials_for(host, config_dir=self.docker_config,
                                                   timeout=min(60.0, self.deadline_s))

    def cert_dirs(self, host: str) -> list[Path]:
        """The certificate folders that apply to `host`, the explicit one first (and alone)."""
        if self.cert_dir is not None:
            return [Path(self.cert_dir)]
        return [root / host for root in self.certs_d if (root / host).is_dir()]

    def tls(self, host: str) -> TlsSettings:
        if host in self.insecure_hosts:
            return TlsSettings(host, "https", verify=False)
        dirs = self.cert_dirs(host)
        ca_files = [p for d in dirs for p in sorted(d.glob("*.crt"))]
        client = next(((d / "client.cert", d / "client.key") for d in dirs if (d / "client.cert").is_file()), None)
        if client and not client[1].is_file():
            raise UsageError(f"{client[0]} has no {client[1].name} beside it (client certificate for {host})")
        if self.registry_ca is not None:
            ca_files.append(Path(self.registry_ca))
        if is_loopback(host) and not dirs:
            return TlsSettings(host, "http", verify=False)
        # Where the CA came from decides whether dockerd (which reads only /etc/docker/certs.d) trusts it too.
        explicit = ("--cert-dir" if self.cert_dir is not None
                    else "GRACECTL_CERTS_D" if self.certs_d != tuple(Path(p) for p in CERTS_D)
                    else "GRACECTL_REGISTRY_CA" if self.registry_ca is not None else "")
        return TlsSettings(host, "https", True, tuple(ca_files), client, tuple(dirs), explicit)
