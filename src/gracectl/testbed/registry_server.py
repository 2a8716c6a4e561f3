"""Run a real registry (Debian's `docker-registry`, distribution v2) on 127.0.0.1 with its own config.

Used by the test bed (`gracectl testbed up`) and by the integration tests. API:

    server = RegistryServer(root=Path("/var/tmp/gracectl-registry"), port=5000)           # no auth
    server = RegistryServer(root=..., port=0, user="ci", password="s3cret")                # htpasswd (bcrypt)
    server = RegistryServer(root=..., tls=(cert_pem, key_pem), token={"realm": "https://...", "service": "reg",
                            "issuer": "iss", "rootcertbundle": "/path/signer-ca.pem"})         # TLS + token auth
    server.start()          # -> self; writes root/config.yml (+ root/htpasswd), waits until /v2/ answers
    server.address          # "127.0.0.1:5000" (port=0 picks a free port at start)
    server.running()        # True while the process lives (also from another process: root/registry.pid)
    server.stop()           # SIGTERM, then SIGKILL after 5 s; also stops a server started by another process
    with RegistryServer(root=tmp).start() as server: ...      # stops on exit

Layout under `root`: config.yml, htpasswd, registry.log, registry.pid, data/ (the storage; kept across
restarts so a restarted registry serves the same images). `storage.delete.enabled` is on so that
untagged record/lock artifacts can be deleted. The server is started in its own session so that it
outlives the gracectl command that started it (the test bed leaves it running).

Failures are one-line TestbedError: port already in use, program missing (ToolMissingError), or the
registry exited / did not answer in time (with the tail of its log).
"""

from __future__ import annotations

import json
import secrets
import signal
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from gracectl.adapters import proc
from gracectl.errors import TestbedError
from gracectl.testbed.processes import (HOST, DaemonExited, free_port, log_tail, pid_alive, require_free_port,
                                        start_daemon, stop_pid)

BCRYPT_COST = 8
PROGRAM = "docker-registry"


def write_htpasswd(path: Path, user: str, password: str) -> None:
    """A bcrypt htpasswd file (the only hash docker-registry accepts); the password never hits a command line.

    Cost BCRYPT_COST: the registry verifies the hash on EVERY request (a promotion makes ~30), and the
    default cost 12 costs ~0.3 s each; this registry serves a local test bed, not the internet.
    """
    try:
        import bcrypt

        line = f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()}"
    except ImportError:  # apache2-utils: -i reads the password from stdin, -n prints the line
        line = proc.run(["htpasswd", "-B", "-C", str(BCRYPT_COST), "-i", "-n", user], input=password,
                        secrets=[password]).stdout.strip()
    path.write_text(line + "\n")
    path.chmod(0o600)


class RegistryServer:
    def __init__(self, root: Path, port: int = 0, *, user: str = "", password: str = "",
                 tls: tuple[Path, Path] | None = None, token: dict | None = None, start_timeout: float = 20.0):
        if bool(user) != bool(password):
            raise TestbedError("a registry with auth needs both a user and a password")
        if user and token:
            raise TestbedError("a registry has one auth: htpasswd (user/password) or token")
        self.tls = tls  # (certificate PEM, key PEM): serve https
        self.token = token  # distribution's auth.token section: realm, service, issuer, rootcertbundle
        self.root = Path(root)
        self.port = port
        self.user = user
        self.password = password
        self.start_timeout = start_timeout
        self._log_start = 0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    @property
    def pid_path(self) -> Path:
        return self.root / "registry.pid"

    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid, PROGRAM)

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.address, "secret": secrets.token_hex(16)},
        }
        if self.user:
            htpasswd = self.root / "htpasswd"
            write_htpasswd(htpasswd, self.user, self.password)
            config["auth"] = {"htpasswd": {"realm": "gracectl", "path": str(htpasswd)}}
        if self.token:
            config["auth"] = {"token": dict(self.token)}
        if self.tls:
            config["http"]["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        path = self.root / "config.yml"
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
        return path

    def start(self) -> RegistryServer:
        if self.running():
            raise TestbedError(f"a registry started from {self.root} is already running (pid {self.pid()})")
        if not self.port:
            self.port = free_port()
        require_free_port(self.port)
        config = self.write_config()
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            start_daemon([PROGRAM, "serve", str(config)], what=f"{PROGRAM} on {self.address}", program=PROGRAM,
                         log=self.log_path, ready=self.answers, timeout=self.start_timeout,
                         record=lambda pid: self.pid_path.write_text(str(pid)))
        except DaemonExited as exc:
            self.pid_path.unlink(missing_ok=True)
            raise TestbedError(f"{PROGRAM} exited with {exc.returncode} at start: {self.log_tail()}") from None
        except TestbedError:
            self.stop()
            raise
        return self

    def answers(self) -> bool:
        """True when /v2/ answers like a registry (200, or 401 when auth is on)."""
        scheme, context = "http", None
        if self.tls:  # readiness only: is something serving TLS there (the tests check the certificate)
            scheme, context = "https", ssl._create_unverified_context()
        try:
            with urllib.request.urlopen(f"{scheme}://{self.address}/v2/", timeout=1, context=context) as r:
                return r.status == 200
        except urllib.error.HTTPError as e:
            return e.code == 401
        except OSError:
            return False

    def log_tail(self) -> str:
        return f"{log_tail(self.log_path, self._log_start)} (log: {self.log_path})"

    def stop(self, timeout: float = 5.0) -> None:
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, PROGRAM, timeout)
        self.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash looks like to clients (the tests use it)."""
        pid = self.pid()
        if pid is not None:
            stop_pid(pid, PROGRAM, sig=signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
