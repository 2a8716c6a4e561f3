"""How gracectl speaks to a registry host: https verified against the system store plus the site CA where
docker and skopeo look for it, plain http only for the loopback test bed, and no verification only for a
host named insecure (never implied). Which CA, client certificate and insecure hosts apply is the
operation's RegistryAccess (adapters.registry_access); this module turns its answer for one host into an
SSL context and skopeo flags, and TLS failures into one line that says where the CA goes.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gracectl.errors import RegistryError, UsageError

CERTS_D = ("/etc/docker/certs.d", "/etc/containers/certs.d")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    """127.0.0.1, localhost, [::1], with or without a port: the test bed."""
    return host in LOOPBACK_HOSTS or host.rsplit(":", 1)[0] in LOOPBACK_HOSTS


@dataclass(frozen=True)
class TlsSettings:
    host: str
    scheme: str  # "https" or "http" (loopback test bed, or an insecure host that does not speak TLS)
    verify: bool = True
    ca_files: tuple[Path, ...] = ()
    client_cert: tuple[Path, Path] | None = None
    dirs: tuple[Path, ...] = field(default=())
    explicit: str = ""  # the setting the CA came from when dockerd does not read it ("--cert-dir", ...)

    def context(self) -> ssl.SSLContext:
        """System store + the site CAs (+ the client certificate), or no verification for an insecure host."""
        if not self.verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context()
            for ca in self.ca_files:
                try:
                    context.load_verify_locations(cafile=str(ca))
                except (OSError, ssl.SSLError) as e:
                    raise UsageError(f"CA file {ca} for registry {self.host} is not a readable PEM "
                                     f"certificate: {e}") from None
        if self.client_cert:
            try:
                context.load_cert_chain(*map(str, self.client_cert))
            except (OSError, ssl.SSLError) as e:
                raise UsageError(f"client certificate {self.client_cert[0]} / key {self.client_cert[1]} for "
                                 f"registry {self.host} cannot be loaded: {e}") from None
        return context

    def skopeo_flags(self, option_prefix: str) -> list[str]:
        """skopeo's TLS flags for this host; `option_prefix` "dest-", "src-" or "" (inspect)."""
        if not self.verify or self.scheme == "http":
            return [f"--{option_prefix}tls-verify=false"]
        return []


def dockerd_trust_gap(settings: TlsSettings) -> str:
    """Why dockerd would NOT verify this registry as gracectl does ("" when it would): dockerd reads only the
    system store and /etc/docker/certs.d/HOST/, and treats only loopback registries as plain http."""
    if settings.scheme == "http":
        return ""  # loopback: dockerd's default insecure range (127.0.0.0/8) too
    if not settings.verify:
        return f"{settings.host} is an --insecure-registry for gracectl, which dockerd is not told"
    if settings.explicit:
        return f"the CA comes from {settings.explicit}, which dockerd does not read"
    if any(not str(d).startswith(CERTS_D[0] + "/") for d in settings.dirs):
        return f"the CA is in {settings.dirs[0]}, which dockerd does not read (it reads {CERTS_D[0]})"
    return ""


@contextlib.contextmanager
def skopeo_cert_dir(settings: TlsSettings, option: str) -> Iterator[list[str]]:
    """skopeo's --OPTION-cert-dir for `settings`: skopeo reads certs.d itself, so only a CA from an explicit
    setting (--cert-dir, GRACECTL_REGISTRY_CA) needs one: a temporary folder of links (public CAs and the client pair, no copies)."""
    if not settings.verify or settings.scheme == "http":
        yield settings.skopeo_flags(option.replace("cert-dir", ""))
        return
    if not settings.explicit:
        yield []
        return
    with tempfile.TemporaryDirectory(prefix="gracectl-certs-") as folder:
        for i, ca in enumerate(settings.ca_files):
            os.symlink(ca.resolve(), Path(folder) / f"ca-{i}.crt")
        if settings.client_cert:
            os.symlink(settings.client_cert[0].resolve(), Path(folder) / "client.cert")
            os.symlink(settings.client_cert[1].resolve(), Path(folder) / "client.key")
        yield [f"--{option}", folder]


# OpenSSL verify codes -> what failed, in the words an operator acts on.
UNKNOWN_CA = "its certificate is signed by an unknown CA"
NAME_MISMATCH = "its certificate does not name this host (name mismatch)"
EXPIRED = "its certificate has expired"
_VERIFY_FAILURES = {
    2: UNKNOWN_CA, 18: UNKNOWN_CA + " (self-signed)", 19: UNKNOWN_CA, 20: UNKNOWN_CA, 21: UNKNOWN_CA,
    10: EXPIRED, 9: "its certificate is not yet valid (check the clocks)",
    62: NAME_MISMATCH, 64: NAME_MISMATCH,
}


def ca_hint(host: str, what: str = UNKNOWN_CA) -> str:
    if what == NAME_MISMATCH:
        return (f"use the name the certificate was made for, or have the site CA issue one naming {host} "
                f"(the CA itself goes in /etc/docker/certs.d/{host}/ca.crt)")
    if what == EXPIRED:
        return f"the registry's certificate must be renewed (the site CA stays in /etc/docker/certs.d/{host}/ca.crt)"
    return (f"put the site CA in /etc/docker/certs.d/{host}/ca.crt (or pass --cert-dir DIR, or set "
            f"GRACECTL_REGISTRY_CA=FILE); --insecure-registry {host} only for a registry without a valid certificate")


def tls_error(host: str, error: ssl.SSLError) -> RegistryError:
    """One line: the host, what failed, where to put the CA."""
    if isinstance(error, ssl.SSLCertVerificationError):
        what = _VERIFY_FAILURES.get(error.verify_code, error.verify_message or "certificate verification failed")
        return RegistryError(f"TLS to registry {host} failed: {what}: {ca_hint(host, what)}")
    reason = getattr(error, "reason", None) or str(error)
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"):
        return RegistryError(f"TLS to registry {host} failed: it does not speak https (plain http?): "
                             f"use --insecure-registry {host} if that is intended")
    if "CERTIFICATE" in reason.upper() or "ALERT" in reason.upper():
        return RegistryError(f"TLS to registry {host} failed: {reason} (a client certificate missing or "
                             f"refused? it goes in /etc/docker/certs.d/{host}/client.cert + client.key)")
    return RegistryError(f"TLS to registry {host} failed: {reason}: {ca_hint(host)}")


# Go's x509 messages (skopeo, dockerd) -> the same words.
_GO_FAILURES = (
    ("certificate signed by unknown authority", UNKNOWN_CA),
    ("certificate has expired", EXPIRED),
    ("is not valid for any names", NAME_MISMATCH),
    ("certificate is valid for", NAME_MISMATCH),
    ("cannot validate certificate for", NAME_MISMATCH),
    ("server gave HTTP response to HTTPS client", "it does not speak https (plain http?)"),
)


def go_tls_error(host: str, output: str, tool: str = "skopeo") -> RegistryError | None:
    """A TLS failure in the output of a Go program (skopeo, dockerd), in the words above; None if none."""
    for needle, what in _GO_FAILURES:
        if needle in output:
            return RegistryError(f"TLS to registry {host} failed ({tool}): {what}: {ca_hint(host, what)}")
    return None
