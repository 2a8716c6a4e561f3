"""The tag lock's logic (claim, renewal, fencing, takeover, unlock) with a fake clock and an in-memory store.

The integration tests (tests/integration/test_release_faults.py, test_release_tls_token.py) run the same lock
against a real docker-registry with faults; here every branch is reached in milliseconds and deterministically.
The store below keeps what the registry keeps for a lock: one tagged artifact per tag, addressed by digest.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from gracectl.adapters.registry import Descriptor
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import ConflictError, RegistryError
from gracectl.tags.lock import TagLock, _boot_id, process_start, unlock

REPO, TAG = "gh200-vllm-tfa", "v0.19.0-tfa"
LOCK = TAG + ".gracectl-lock"


class Clock:
    """time.time() that moves only when the lock sleeps or the test says so."""

    def __init__(self):
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for hook in list(self.during_sleep):
            hook()

    during_sleep: list = []


class Store:
    """What a registry keeps of lock artifacts: tag -> (descriptor, payload); deletes by digest."""

    def __init__(self, access: RegistryAccess, host: str = "reg.example:5000"):
        self.host, self.access = host, access
        self.tags: dict[str, tuple[Descriptor, bytes]] = {}
        self.deleted: list[str] = []
        self.writes = 0
        self.refuse_writes = False

    def read_artifact(self, repo, reference):
        found = self.tags.get(reference)
        return None if found is None else (found[0], {}, found[1])

    def push_artifact(self, repo, reference, artifact_type, payload, **_):
        if self.refuse_writes:
            raise RegistryError("registry reg.example:5000: PUT answered 500")
        self.writes += 1
        descriptor = Descriptor.of(payload + str(self.writes).encode(), artifact_type)
        self.tags[reference] = (descriptor, payload)
        return descriptor

    def delete_manifest(self, repo, digest):
        self.deleted.append(digest)
        return True

    def extend_deadline(self, seconds):
        pass

    def lock(self) -> dict:
        return json.loads(self.tags[LOCK][1])

    def plant(self, **lock) -> None:
        self.push_artifact(REPO, LOCK, "lock", json.dumps(lock).encode())


@pytest.fixture()
def clock(monkeypatch):
    fake = Clock()
    fake.during_sleep = []
    monkeypatch.setattr("gracectl.tags.lock.time", fake)
    return fake


@pytest.fixture()
def store(tmp_path):
    return Store(RegistryAccess(lock_dir=tmp_path / "locks", lock_settle_s=1.0, lock_ttl_s=120, actor="me@here"))


def other_host(clock, **extra) -> dict:
    return {"nonce": "theirs", "owner": "them@far", "host": "far-away", "boot_id": "x", "pid": 4242,
            "since": "earlier", "expires": clock.now + 60, "released": False, **extra}


def test_a_free_tag_is_claimed_then_released_and_nothing_is_left_behind(clock, store):
    with TagLock(store, REPO, TAG) as lock:
        held = store.lock()
        assert held["nonce"] == lock.nonce and held["owner"] == "me@here" and not held["released"]
        assert held["expires"] == pytest.approx(clock.now - 1.0 + 120)  # written before the 1 s settle
        claimed = store.tags[LOCK][0].digest
    assert store.lock()["released"] is True and store.lock()["nonce"] == lock.nonce
    assert claimed in store.deleted  # the claim itself: no untagged leftover


def test_a_live_holder_elsewhere_is_refused_with_who_and_nothing_written(clock, store):
    store.plant(**other_host(clock))
    writes = store.writes
    with pytest.raises(ConflictError, match=r"locked by them@far \(host far-away, pid 4242\).*gracectl unlock"):
        TagLock(store, REPO, TAG).__enter__()
    assert store.writes == writes and store.lock()["nonce"] == "theirs"


def test_an_expired_or_released_lock_is_taken_over(clock, store):
    store.plant(**other_host(clock, expires=clock.now - 1))
    old = store.tags[LOCK][0].digest
    with TagLock(store, REPO, TAG) as lock:
        assert store.lock()["nonce"] == lock.nonce
        assert old in store.deleted  # the replaced lock is removed
    store.plant(**other_host(clock, released=True))
    with TagLock(store, REPO, TAG) as lock:
        assert store.lock()["nonce"] == lock.nonce


def test_a_dead_holder_on_this_machine_is_taken_over_but_a_live_one_is_not(clock, store):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = {"host": socket.gethostname(), "boot_id": _boot_id()}
    store.plant(**other_host(clock, **here, pid=gone.pid, pid_start="1"))
    with TagLock(store, REPO, TAG):
        pass
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        store.plant(**other_host(clock, **here, pid=live.pid, pid_start=process_start(live.pid)))
        with pytest.raises(ConflictError, match="another promotion or rollback is running"):
            TagLock(store, REPO, TAG).__enter__()
    finally:
        live.kill()
        live.wait()


def test_an_overlapping_claim_that_lands_last_wins_and_the_other_writes_nothing_more(clock, store):
    # During our settle delay another claimer's PUT lands: only the last writer reads back its own nonce.
    clock.during_sleep.append(lambda: store.plant(**other_host(clock, nonce="later-writer")))
    with pytest.raises(ConflictError, match="lost the lock of tag v0.19.0-tfa to them@far"):
        TagLock(store, REPO, TAG).__enter__()
    assert store.lock()["nonce"] == "later-writer"


def test_fencing_renews_near_expiry_and_refuses_when_it_cannot(clock, store):
    with TagLock(store, REPO, TAG) as lock:
        first = store.tags[LOCK][0].digest
        clock.now = lock.expires - lock.margin_s + 1  # inside the margin: check() renews first
        lock.check()
        assert store.tags[LOCK][0].digest != first and first in store.deleted
        assert store.lock()["expires"] == pytest.approx(clock.now + 120)
        clock.now = lock.expires - lock.margin_s + 1
        store.refuse_writes = True  # the renewal fails: too little life left to write safely
        with pytest.raises(ConflictError, match="about to expire and could not be renewed"):
            lock.check()
        store.refuse_writes = False


def test_fencing_refuses_after_a_takeover_or_an_unlock(clock, store):
    with TagLock(store, REPO, TAG) as lock:
        store.plant(**other_host(clock, nonce="taker"))
        with pytest.raises(ConflictError, match="lost the lock .* to them@far"):
            lock.check()
    assert store.lock()["nonce"] == "taker"  # leaving does not release somebody else's lock
    clock.now += 61  # the taker's lock expires
    with TagLock(store, REPO, TAG) as lock:
        assert unlock(store, REPO, TAG, "stuck host")["nonce"] == lock.nonce
        with pytest.raises(ConflictError, match="an unlock by me@here"):
            lock.check()


def test_renewal_keeps_a_slow_holder_and_never_revives_a_lost_lock(clock, store):
    with TagLock(store, REPO, TAG) as lock:
        clock.now += 100  # slow, but renewed in time by the background renewal
        lock._renew()
        assert store.lock()["expires"] == pytest.approx(clock.now + 120)
        lock.check()
        store.plant(**other_host(clock, nonce="taker"))
        writes = store.writes
        lock._renew()  # not ours any more: renewal writes nothing
        assert store.writes == writes and store.lock()["nonce"] == "taker"


def test_unlock_releases_whoever_holds_it_and_says_who(clock, store):
    assert unlock(store, REPO, TAG, "nothing held") is None
    store.plant(**other_host(clock))
    holder = unlock(store, REPO, TAG, "host far-away died")
    assert holder["owner"] == "them@far"
    released = store.lock()
    assert released["released"] and released["unlocked_by"] == "me@here"
    assert released["reason"] == "host far-away died" and released["previous_holder"]["nonce"] == "theirs"
    assert unlock(store, REPO, TAG, "again") is None


def test_a_second_process_on_this_host_fails_at_once_on_the_local_lock(clock, store):
    with TagLock(store, REPO, TAG):
        with pytest.raises(ConflictError, match="another gracectl on this host"):
            TagLock(store, REPO, TAG).__enter__()


def busy(message: str = "registry reg.example:5000: GET answered 500 Internal Server Error") -> RegistryError:
    error = RegistryError(message)
    error.transient = True
    return error


def test_a_transient_answer_to_a_lock_read_is_retried_so_contention_stays_contention(clock, store, monkeypatch):
    """The registry answers 500 to the loser's first lock read: it reads again and reports the holder (exit 8),
    never the 500 (exit 5)."""
    store.plant(**other_host(clock))
    answers = iter([busy(), busy()])
    real = store.read_artifact

    def flaky(repo, reference):
        error = next(answers, None)
        if error:
            raise error
        return real(repo, reference)

    monkeypatch.setattr(store, "read_artifact", flaky)
    with pytest.raises(ConflictError, match="locked by them@far"):
        TagLock(store, REPO, TAG).__enter__()


def test_a_lasting_fault_is_not_retried_forever_and_a_plain_error_not_at_all(clock, store, monkeypatch):
    calls = []

    def failing(error):
        def read(repo, reference):
            calls.append(clock.now)
            raise error
        return read

    monkeypatch.setattr(store, "read_artifact", failing(busy()))
    with pytest.raises(RegistryError, match="500"):
        TagLock(store, REPO, TAG).__enter__()
    assert 3 < len(calls) < 40 and calls[-1] - calls[0] <= store.access.request_timeout_s  # bounded
    calls.clear()
    monkeypatch.setattr(store, "read_artifact", failing(RegistryError("registry x: GET answered 404 Not Found")))
    with pytest.raises(RegistryError, match="404"):
        TagLock(store, REPO, TAG).__enter__()
    assert len(calls) == 1


def test_a_claim_write_answered_500_reads_who_won(clock, store, monkeypatch):
    """Two claims at once: ours is answered 500 and theirs landed -> contention (8); ours answered 500 and the
    lock still free -> written again, and held."""
    real = store.push_artifact

    def theirs_landed(repo, reference, artifact_type, payload, **kw):
        real(REPO, LOCK, "lock", json.dumps(other_host(clock)).encode())
        raise busy("registry reg.example:5000: PUT answered 500")

    monkeypatch.setattr(store, "push_artifact", theirs_landed)
    with pytest.raises(ConflictError, match="just locked by them@far"):
        TagLock(store, REPO, TAG).__enter__()

    del store.tags[LOCK]
    answers = iter([busy("registry reg.example:5000: PUT answered 503")])

    def once_busy(repo, reference, artifact_type, payload, **kw):
        error = next(answers, None)
        if error:
            raise error
        return real(repo, reference, artifact_type, payload, **kw)

    monkeypatch.setattr(store, "push_artifact", once_busy)
    with TagLock(store, REPO, TAG) as lock:
        assert store.lock()["nonce"] == lock.nonce
