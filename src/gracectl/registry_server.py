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
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from gracectl.adapters import proc
from gracectl.errors import TestbedError

HOST = "127.0.0.1"
BCRYPT_COST = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR like the registry's own listener: only a live listener counts, not TIME_WAIT leftovers.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


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
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        # A zombie child of ours still answers kill(0): reap it if it is ours and has exited.
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            return done == 0
        except ChildProcessError:
            return True

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
        elif port_in_use(self.port):
            raise TestbedError(
                f"port {self.port} on {HOST} is in use: stop what listens there or pick another port "
                f"(`ss -ltnp 'sport = :{self.port}'` shows it)"
            )
        config = self.write_config()
        args = [proc.which("docker-registry"), "serve", str(config)]
        print(f"+ {proc.format_command(args)}", file=sys.stderr, flush=True)
        # A daemon, so not proc.run (which waits for the program to finish).
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()  # the log is kept across restarts: report this run's lines only
            child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        self.pid_path.write_text(str(child.pid))
        self._wait_ready(child)
        return self

    def _wait_ready(self, child: subprocess.Popen) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if child.poll() is not None:
                self.pid_path.unlink(missing_ok=True)
                raise TestbedError(f"docker-registry exited with {child.returncode} at start: {self.log_tail()}")
            if self.answers():
                return
            time.sleep(0.1)
        self.stop()
        raise TestbedError(f"docker-registry did not answer on {self.address} within "
                           f"{self.start_timeout:.0f}s: {self.log_tail()}")

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

    def log_tail(self, lines: int = 3) -> str:
        """The last error lines of this run's log (the registry prints its usage text after a config error)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                text = log.read().decode(errors="replace").strip().splitlines()[-50:]
        except OSError:
            return "(no log)"
        errors = [line for line in text if "error" in line.lower()]
        return " | ".join((errors or text)[-lines:]) + f" (log: {self.log_path})" if text else "(empty log)"

    def stop(self, timeout: float = 5.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        if self.running():
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.running():
                os.kill(pid, signal.SIGKILL)
                while self.running():
                    time.sleep(0.05)
        self.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash looks like to clients (the tests use it)."""
        pid = self.pid()
        if pid is not None and self.running():
            os.kill(pid, signal.SIGKILL)
            while self.running():
                time.sleep(0.02)
        self.pid_path.unlink(missing_ok=True)

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
