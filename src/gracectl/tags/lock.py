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
import math
import os
import stat
import re
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

from gracectl import interrupts
from gracectl.adapters.registry import DamagedArtifact, Registry
from gracectl.adapters.registry_access import TIMINGS
from gracectl.errors import ConflictError, GraceError, ReadOnlyRegistryError, RegistryError, UsageError
from gracectl.record_files import utc_now
from gracectl.tags.records import artifact_type
from gracectl.tags.history import LOCK_SUFFIX

MAX_TTL_S = TIMINGS["lock_ttl_s"][2]  # no lock claims longer than gracectl's own longest TTL


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


def expires(lock: dict) -> float:
    """When the lock's claim ends; 0 (long ended) for a damaged value ("soon", NaN, inf, null, a list), so a
    damaged lock never blocks anyone: its holder, if alive, loses it at its next fencing check."""
    value = lock.get("expires")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0
    return float(min(value, time.time() + MAX_TTL_S))


def describe(lock: dict) -> str:
    """Who holds it, from where, since when, and how long it stays claimed."""
    left = expires(lock) - time.time()
    return (f"{lock.get('owner', '?')} (host {lock.get('host', '?')}, pid {lock.get('pid', '?')}) since "
            f"{lock.get('since', '?')}, expires in {max(0, round(left))}s unless renewed")


def open_lock_file(folder: Path, name: str):
    """The per-host lock file, made safely in a folder that may be shared (/tmp): the folder is ours or root's
    and not writable by others, the file is never followed through a link nor truncated, and only we read it."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
    except OSError as e:
        raise UsageError(f"lock folder {folder} cannot be made ({e.strerror}): set GRACECTL_LOCK_DIR") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (os.geteuid(), 0) or info.st_mode & 0o022:
        raise UsageError(f"lock folder {folder} is a link, another user's, or writable by others: refusing to "
                         "use it (remove it, or set GRACECTL_LOCK_DIR to a folder of yours)")
    try:
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise UsageError(f"lock file {folder / name} cannot be opened ({e.strerror}; a link?): remove it") from None
    return os.fdopen(fd, "r+")


class TagLock:
    """`with TagLock(registry, repository, tag) as lock:` ... `lock.check()` before each write. Its timings,
    folder and owner are the registry's RegistryAccess."""


    def __init__(self, registry: Registry, repository: str, tag: str):
        access = registry.access
        self.registry, self.repository, self.tag, self.owner = registry, repository, tag, access.who
        self.lock_tag = tag + LOCK_SUFFIX
        self.lock_dir = Path(access.lock_dir)
        self.settle_s = access.lock_settle_s
        self.ttl_s = access.lock_ttl_s
        # A write started with this much of the lock's life left lands (or times out) before it ends: derived
        # from the request timeout, and RegistryAccess keeps the TTL at least 3 timeouts, so it always fits.
        self.margin_s = 1.5 * access.request_timeout_s
        self.retry_s = access.request_timeout_s  # how long a transient answer is retried
        self.renew_every_s = min(self.ttl_s / 4, (self.ttl_s - self.margin_s) / 2)
        self.host_id = f"{socket.gethostname()}:{self.lock_dir.resolve()}"
        self.nonce = secrets.token_hex(16)
        self.since = utc_now()
        self.digest = ""  # of our current lock artifact
        self.claim_sent = False  # a claim was written (or its answer lost): ours to take back on failure
        self.expires = 0.0
        self._file = None
        self._mutex = threading.Lock()  # renewals and fencing checks never interleave
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- local flock ----------------------------------------------------------------------------------------
    def __enter__(self) -> TagLock:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.registry.host}/{self.repository}:{self.tag}")
        self._file = open_lock_file(self.lock_dir, f"{name}.lock")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise ConflictError(f"another gracectl on this host is changing tag {self.tag} right now; "
                                "nothing was changed: retry when it has finished") from None
        try:  # up to the return: an interrupt raised here never reaches __exit__, so this lets go itself
            self._claim()
            self._renewer = threading.Thread(target=self._renew_loop, name=f"renew {self.lock_tag}", daemon=True)
            interrupts.start_thread(self._renewer)
        except BaseException:
            self._let_go()  # a claim that failed part-way takes back what it wrote
            raise
        return self

    # -- registry lock --------------------------------------------------------------------------------------
    def _retrying(self, call, what: str):
        """`call()`, again after a transient answer (RegistryError.transient: a 5xx, 429, a connection reset) until
        it goes through or one request timeout is spent (the deadline still bounds every request): a busy
        registry never turns contention into a registry fault. Each retry is said."""
        give_up, pause = time.monotonic() + self.retry_s, 0.1
        while True:
            try:
                return call()
            except RegistryError as e:
                if not e.transient or time.monotonic() + pause > give_up:
                    raise
                print(f"warning: {what} the lock of {self.tag}: {e}; trying again", file=sys.stderr)
            time.sleep(pause)
            pause = min(2 * pause, 1.0)

    def read(self) -> tuple[str, dict] | None:
        try:
            found = self._retrying(lambda: self.registry.read_artifact(self.repository, self.lock_tag), "reading")
        except DamagedArtifact as e:
            return e.descriptor.digest, {"released": True}  # not a lock gracectl wrote: it holds nobody
        if found is None:
            return None
        try:
            payload = json.loads(found[2])
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return found[0].digest, {"released": True}  # damaged, not ours to interpret: treat as free
        return found[0].digest, payload

    def _payload(self) -> dict:
        self.expires = time.time() + self.ttl_s
        return {"nonce": self.nonce, "owner": self.owner, "host": socket.gethostname(), "boot_id": _boot_id(),
                "host_id": self.host_id, "pid": os.getpid(), "pid_start": process_start(os.getpid()),
                "since": self.since, "renewed": utc_now(), "ttl_s": self.ttl_s, "expires": self.expires,
                "released": False}

    def _write(self, payload: dict) -> str:
        # shielded: a claim or renewal abandoned mid-request could land after the release has read the lock
        # (and found nothing of ours), leaving it claimed for a whole TTL; an interrupt waits for the answer
        with interrupts.shielded():
            return self.registry.push_artifact(self.repository, self.lock_tag, artifact_type("lock"),
                                               json.dumps(payload, sort_keys=True).encode()).digest

    def _claim(self) -> None:
        held = self.read()
        if held:
            lock = held[1]
            free = (lock.get("released") or expires(lock) < time.time()
                    or lock.get("host_id") == self.host_id or holder_is_gone(lock))
            if not free:
                raise ConflictError(f"tag {self.tag} is locked by {describe(lock)}: another promotion or rollback "
                                    "is running; nothing was changed. Retry then, or if that holder is dead: "
                                    f"`gracectl unlock {self.registry.host}/{self.repository}:{self.tag} "
                                    "--reason TEXT`")
        self._write_claim()
        time.sleep(self.settle_s)  # let an overlapping claimer's PUT land: only the last writer keeps the tag
        self.check()
        if held and held[0] != self.digest:
            self.registry.delete_manifest(self.repository, held[0])  # the replaced lock: no untagged leftover

    def _write_claim(self) -> None:
        """Write our claim. After a failed write, read who holds the lock now: another claimer -> contention (two
        claims at once can make the registry answer 500 to one); free or ours -> write again if the answer was
        transient (never after someone else's claim landed: that would be a late write over it)."""
        def attempt() -> None:
            try:
                self.claim_sent = True
                self.digest = self._write(self._payload())
            except ReadOnlyRegistryError:
                raise  # the registry refuses every write: that, not a competing holder, is the news
            except RegistryError:
                now = self.read()
                lock = now[1] if now else {}
                if now and lock.get("nonce") != self.nonce and not lock.get("released") \
                        and expires(lock) >= time.time():
                    raise ConflictError(f"tag {self.tag} was just locked by {describe(lock)}: another promotion "
                                        "or rollback is running; nothing was changed, retry later") from None
                raise
        self._retrying(attempt, "writing")

    def _renew(self) -> None:
        """Extend our claim, only while it is still ours (called with the mutex held)."""
        held = self.read()
        lock = held[1] if held else {}
        if lock.get("nonce") != self.nonce or lock.get("released") or expires(lock) <= time.time():
            return  # lost, or expired and maybe being taken over: check() says so before the next write
        old, self.digest = held[0], self._write(self._payload())
        if old != self.digest:
            self.registry.delete_manifest(self.repository, old)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_every_s):
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
            if expires(lock) - time.time() < self.margin_s:
                raise ConflictError(f"the lock of tag {self.tag} is about to expire and could not be renewed in "
                                    "time (registry too slow?); this one writes nothing more")

    def __exit__(self, *exc) -> None:
        self._let_go()

    def _let_go(self) -> None:
        """Stop renewing, release the claim if it is still ours, drop the host lock: all of it, whatever comes."""
        with interrupts.deferred():
            self._stop.set()
            if self._renewer and self._renewer.ident is not None:
                self._renewer.join()
            try:
                with self._mutex:
                    self._release_if_ours()
            finally:
                self._file.close()

    def _release_if_ours(self) -> None:
        """Mark the registry lock released if it still holds our claim (nothing when we never wrote one)."""
        if not (self.digest or self.claim_sent):
            return
        self.registry.extend_deadline(15)  # releasing is worth a few seconds past the deadline
        try:
            held = self.read()
            if held and held[1].get("nonce") == self.nonce and not held[1].get("released"):
                released = {"nonce": self.nonce, "owner": self.owner, "released": True, "since": utc_now()}
                self._retrying(lambda: self._write(released), "releasing")
                self.registry.delete_manifest(self.repository, held[0])
        except GraceError as e:  # the registry went away: the lock expires (or this host takes it over)
            print(f"warning: could not release the lock of {self.tag} (it expires in {self.ttl_s:.0f}s, or run "
                  f"this again from this host, or `gracectl unlock`): {e}", file=sys.stderr)


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
