"""The one place the test bed starts, waits for and stops a daemon (dockerd, docker-registry, git daemon, the
stand-in package index, the caching PyPI proxy): each runs in its own session (it outlives the gracectl command that started it), its output
goes to a log, and a pid counts as ours only while it still runs the program we started (pids are recycled).

Where a pid is kept is the caller's business (state.json for the test bed's daemons, registry.pid for a
registry server); `start_daemon` takes a `record` callback that stores it before waiting, so a daemon that
hangs at start can still be stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from gracectl.adapters import proc
from gracectl.errors import TestbedError

HOST = "127.0.0.1"

# Popen objects of the daemons this process started: their exit status comes from here, not from a waitpid
# that would race with Popen's own.
_children: dict[int, subprocess.Popen] = {}


class DaemonExited(TestbedError):
    """The daemon exited while we waited for it to answer."""

    def __init__(self, message: str, returncode: int | None, tail: str):
        super().__init__(message)
        self.returncode = returncode
        self.tail = tail


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR like a daemon's own listener: only a live listener counts, not TIME_WAIT leftovers.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def require_free_port(port: int, what: str = "") -> None:
    if port_in_use(port):
        who = f", so the {what} cannot start there" if what else ""
        raise TestbedError(f"port {port} on {HOST} is in use{who}: stop what listens there or pick another port "
                           f"(`ss -ltnp 'sport = :{port}'` shows it)")


def pid_alive(pid: int, program: str) -> bool:
    """True when `pid` lives and still runs `program` (a recycled pid is not ours)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        # A killed multi-threaded daemon (docker-registry is Go) shows its leader as a zombie while the other
        # threads still exit and hold its listening socket: not gone until they are.
        with contextlib.suppress(OSError):
            if len(os.listdir(f"/proc/{pid}/task")) > 1:
                return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    # a prefix: `git daemon` becomes git-daemon, python3 may be python3.11 behind a version manager's shim
    if any(os.path.basename(a.decode(errors="replace")).startswith(program) for a in cmdline[:3]):
        return True
    # Right after exec the kernel may show an empty cmdline for a moment: the name in stat (15 chars) decides.
    return cmdline == [b""] and stat[stat.index("(") + 1:stat.rindex(")")].startswith(program[:15])


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a daemon in its own session (it outlives gracectl), output appended to `log`; returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    child = proc.start_daemon(args, log, env)
    _children[child.pid] = child
    return child.pid


def stop_pid(pid: int, program: str, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """Send `sig` (then SIGKILL after `timeout`) and wait until it is gone; False when it did not run."""
    if not pid_alive(pid, program):
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while pid_alive(pid, program):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return True


def log_tail(log: Path, start: int = 0, lines: int = 3) -> str:
    """The last lines of the log from byte `start` on, its error lines if it has any (a daemon may print
    its usage text after the error that stopped it)."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace").strip().splitlines()[-50:]
    except OSError:
        return "(no log)"
    if not text:
        return "(empty log)"
    errors = [line for line in text if "error" in line.lower()]
    return " | ".join((errors or text)[-lines:])


def wait_until(check: Callable[[], bool], what: str, timeout: float, log: Path | None = None, pid: int = 0,
               program: str = "", log_start: int = 0) -> None:
    """Poll `check` until it is true; a one-line TestbedError (DaemonExited when `pid` died) with the log's tail."""
    deadline = time.monotonic() + timeout
    exited = False
    while time.monotonic() < deadline:
        if check():
            return
        if pid and not pid_alive(pid, program):
            exited = True
            break
        time.sleep(0.1)
    tail = log_tail(log, log_start) if log else ""
    where = f" (log {log}: {tail})" if log else ""
    if exited:
        child = _children.get(pid)
        raise DaemonExited(f"{what} exited while starting{where}", child.returncode if child else None, tail)
    raise TestbedError(f"{what} did not come up within {timeout:.0f}s{where}")


def start_daemon(args: list[str], *, what: str, program: str, log: Path, ready: Callable[[], bool],
                 timeout: float = 20.0, port: int = 0, record: Callable[[int], None] = lambda pid: None,
                 env: dict[str, str] | None = None) -> int:
    """Start `args` as a daemon (`env` added to its environment) and wait until `ready()`; `record(pid)` stores
    its pid first. Returns the pid."""
    if port:
        require_free_port(port, what)
    log_start = log.stat().st_size if log.exists() else 0  # the log is kept across restarts: this run's lines
    pid = spawn(args, log, env)
    record(pid)
    wait_until(ready, what, timeout, log, pid, program, log_start)
    return pid


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False
