"""The lock of one moving tag, so that one promotion or rollback at a time changes it.

Three layers (distribution v2 has no conditional PUT, so the registry part is made safe by reading back):
  - a local flock per tag (access.lock_dir, default /tmp/gracectl-locks): two gracectl processes on
    one host never overlap, the second fails at once with ConflictError;
  - the registry lock `<tag>.gracectl-lock`: an artifact naming the holder (who, host, boot id, pid and
    its start time, since, expires). Claimed by writing it with a unique nonce, then read back after a
    settle delay (access.lock_settle_s, default 1 s): of writers that overlap, only the last PUT
    reads back its own nonce. A background thread renews it every TTL/4 (access.lock_ttl_s,
    default 120 s), so a slow but live holder keeps it;
  - fencing: check() right before the tag write and each history write reads the lock back and raises
    ConflictError unless it still holds our nonce with at least FENCE_MARGIN of its life left (renewing
    first when less is left). A holder that was stalled past its lock's life writes nothing more.
Taking a lock over: a released or expired lock is free; so is one whose holder is on this machine (same
host name and boot id) and provably gone (its pid is dead or belongs to a newer process). For the rest
(a holder on another host that died): wait for the expiry, or `gracectl unlock TAG --reason` (recorded).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

from gracectl.adapters.registry import Registry
from gracectl.errors import ConflictError, GraceError, RegistryError
from gracectl.records import artifact_type, utc_now
from gracectl.release_history import LOCK_SUFFIX


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


def process_start(pid: int) -> str:
    """The start time of process `pid` in clock ticks since boot ("" when unknown): with the pid and the
    boot id it names one process, so a pid reused by a newer process is not mistaken for the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def holder_is_gone(lock: dict) -> bool:
    """True only when the holder provably no longer runs: same machine, and its pid dead or reused."""
    if lock.get("host") != socket.gethostname() or not lock.get("boot_id") or lock.get("boot_id") != _boot_id():
        return False
    pid = lock.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return bool(lock.get("pid_start")) and process_start(pid) != lock.get("pid_start")


def describe(lock: dict) -> str:
    """Who holds it, from where, since when, and how long it stays claimed."""
    left = float(lock.get("expires") or 0) - time.time()
    return (f"{lock.get('owner', '?')} (host {lock.get('host', '?')}, pid {lock.get('pid', '?')}) since "
            f"{lock.get('since', '?')}, expires in {max(0, round(left))}s unless renewed")


class TagLock:
    """`with TagLock(registry, repository, tag) as lock:` ... `lock.check()` before each write. Its timings,
    folder and owner are the registry's RegistryAccess."""

    FENCE_MARGIN_S = 30.0  # a write must be able to land (or time out) well inside the lock's life

    def __init__(self, registry: Registry, repository: str, tag: str):
        access = registry.access
        self.registry, self.repository, self.tag, self.owner = registry, repository, tag, access.who
        self.lock_tag = tag + LOCK_SUFFIX
        self.lock_dir = Path(access.lock_dir)
        self.settle_s = access.lock_settle_s
        self.ttl_s = access.lock_ttl_s
        self.margin_s = min(self.FENCE_MARGIN_S, self.ttl_s / 4)
        self.host_id = f"{socket.gethostname()}:{self.lock_dir.resolve()}"
        self.nonce = secrets.token_hex(16)
        self.since = utc_now()
        self.digest = ""  # of our current lock artifact
        self.expires = 0.0
        self._file = None
        self._mutex = threading.Lock()  # renewals and fencing checks never interleave
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- local flock ----------------------------------------------------------------------------------------
    def __enter__(self) -> TagLock:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.registry.host}/{self.repository}:{self.tag}")
        self._file = open(self.lock_dir / f"{name}.lock", "w")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise ConflictError(f"another gracectl on this host is changing tag {self.tag} right now; "
                                "nothing was changed: retry when it has finished") from None
        try:
            self._claim()
        except BaseException:
            self._file.close()
            raise
        self._renewer = threading.Thread(target=self._renew_loop, name=f"renew {self.lock_tag}", daemon=True)
        self._renewer.start()
        return self

    # -- registry lock --------------------------------------------------------------------------------------
    def read(self) -> tuple[str, dict] | None:
        found = self.registry.read_artifact(self.repository, self.lock_tag)
        if found is None:
            return None
        try:
            return found[0].digest, json.loads(found[2])
        except ValueError:
            return found[0].digest, {"released": True}  # not ours to interpret: treat as free

    def _payload(self) -> dict:
        self.expires = time.time() + self.ttl_s
        return {"nonce": self.nonce, "owner": self.owner, "host": socket.gethostname(), "boot_id": _boot_id(),
                "host_id": self.host_id, "pid": os.getpid(), "pid_start": process_start(os.getpid()),
                "since": self.since, "renewed": utc_now(), "ttl_s": self.ttl_s, "expires": self.expires,
                "released": False}

    def _write(self, payload: dict) -> str:
        return self.registry.push_artifact(self.repository, self.lock_tag, artifact_type("lock"),
                                           json.dumps(payload, sort_keys=True).encode()).digest

    def _claim(self) -> None:
        held = self.read()
        if held:
            lock = held[1]
            free = (lock.get("released") or float(lock.get("expires") or 0) < time.time()
                    or lock.get("host_id") == self.host_id or holder_is_gone(lock))
            if not free:
                raise ConflictError(f"tag {self.tag} is locked by {describe(lock)}: another promotion or rollback "
                                    "is running; nothing was changed. Retry then, or if that holder is dead: "
                                    f"`gracectl unlock {self.registry.host}/{self.repository}:{self.tag} "
                                    "--reason TEXT`")
        try:
            self.digest = self._write(self._payload())
        except RegistryError:
            now = self.read()  # two claims at once can make the registry answer 500 to one: who won?
            if now and now[1].get("nonce") != self.nonce and not now[1].get("released"):
                raise ConflictError(f"tag {self.tag} was just locked by {describe(now[1])}: another promotion "
                                    "or rollback is running; nothing was changed, retry later") from None
            raise
        time.sleep(self.settle_s)  # let an overlapping claimer's PUT land: only the last writer keeps the tag
        self.check()
        if held and held[0] != self.digest:
            self.registry.delete_manifest(self.repository, held[0])  # the replaced lock: no untagged leftover

    def _renew(self) -> None:
        """Extend our claim, only while it is still ours (called with the mutex held)."""
        held = self.read()
        lock = held[1] if held else {}
        if lock.get("nonce") != self.nonce or lock.get("released") or float(lock.get("expires") or 0) <= time.time():
            return  # lost, or expired and maybe being taken over: check() says so before the next write
        old, self.digest = held[0], self._write(self._payload())
        if old != self.digest:
            self.registry.delete_manifest(self.repository, old)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            with self._mutex:
                try:
                    self._renew()
                except GraceError as e:  # the next fencing check decides
                    print(f"warning: could not renew the lock of {self.tag}: {e}", file=sys.stderr)

    def check(self) -> None:
        """Fencing: raise ConflictError unless the lock still holds our claim with a safe margin of life."""
        with self._mutex:
            if self.expires - time.time() < self.margin_s:
                with contextlib.suppress(GraceError):  # not renewed: the expiry check below refuses
                    self._renew()
            held = self.read()
            lock = held[1] if held else {}
            if lock.get("nonce") != self.nonce or lock.get("released"):
                other = describe(lock) if held and not lock.get("released") else (
                    f"an unlock by {lock.get('unlocked_by')}" if lock.get("unlocked_by") else "nobody (it vanished)")
                raise ConflictError(f"lost the lock of tag {self.tag} to {other}: another promotion or rollback "
                                    "took over; this one writes nothing more")
            if float(lock.get("expires") or 0) - time.time() < self.margin_s:
                raise ConflictError(f"the lock of tag {self.tag} is about to expire and could not be renewed in "
                                    "time (registry too slow?); this one writes nothing more")

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join()
        self.registry.extend_deadline(15)  # releasing is worth a few seconds past the deadline
        try:
            with self._mutex:
                held = self.read()
                if held and held[1].get("nonce") == self.nonce and not held[1].get("released"):
                    released = {"nonce": self.nonce, "owner": self.owner, "released": True, "since": utc_now()}
                    self._write(released)
                    self.registry.delete_manifest(self.repository, held[0])
        except GraceError as e:  # the registry went away: the lock expires (or this host takes it over)
            print(f"warning: could not release the lock of {self.tag} (it expires in {self.ttl_s:.0f}s, or run "
                  f"this again from this host, or `gracectl unlock`): {e}", file=sys.stderr)
        finally:
            self._file.close()


def unlock(registry: Registry, repository: str, tag: str, reason: str) -> dict | None:
    """Release the lock of `tag` whoever holds it; returns the holder's lock (None when it was not held)."""
    who = registry.access.who
    held = TagLock(registry, repository, tag).read()
    if not held or held[1].get("released"):
        return None
    released = {"released": True, "unlocked_by": who, "reason": reason, "since": utc_now(),
                "previous_holder": held[1]}
    registry.push_artifact(repository, tag + LOCK_SUFFIX, artifact_type("lock"),
                           json.dumps(released, sort_keys=True).encode())
    registry.delete_manifest(repository, held[0])
    return held[1]
