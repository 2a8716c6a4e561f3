"""Property tests over damaged registry artifacts: whatever JSON (or bytes) sits where gracectl keeps a lock, a
history or a record, reading it gives a value or a typed one-line refusal, never a crash; and a damaged lock
never blocks anyone. The registry-backed versions of these cases: tests/integration/test_release_damage.py."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gracectl.adapters.registry import Descriptor
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import ConflictError
from gracectl.tags.history import DamagedHistory, Entry, _read, salvage
from gracectl.tags.lock import MAX_TTL_S, TagLock, expires
from test_release_lock import LOCK, REPO, TAG, Clock, Store

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
FIELDS = ("nonce", "owner", "host", "boot_id", "pid", "pid_start", "since", "expires", "released", "host_id")
lock_like = st.fixed_dictionaries({}, optional={k: json_values for k in FIELDS})


@given(lock=lock_like | json_values)
def test_expires_is_always_a_finite_bounded_number(lock):
    if isinstance(lock, dict):
        value = expires(lock)
        assert isinstance(value, float) and value == value and value <= time.time() + MAX_TTL_S + 1


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=lock_like | json_values | st.binary(max_size=40))
def test_any_lock_payload_is_claimed_over_or_refused_in_one_line(payload, tmp_path_factory, monkeypatch):
    clock = Clock()
    clock.during_sleep = []
    monkeypatch.setattr("gracectl.tags.lock.time", clock)
    store = Store(RegistryAccess(lock_dir=tmp_path_factory.mktemp("locks"), actor="me@here"))
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    store.push_artifact(REPO, LOCK, "lock", raw)
    try:
        with TagLock(store, REPO, TAG) as lock:
            assert store.lock()["nonce"] == lock.nonce
    except ConflictError as e:  # a well-formed, live holder elsewhere: named in one line
        assert "\n" not in str(e) and isinstance(payload, dict) and not payload.get("released")
        assert expires(payload) > clock.now


class HistoryStore:
    host = "reg.example:5000"

    def __init__(self, payload: bytes):
        self.payload = payload

    def read_artifact(self, repo, reference):
        return Descriptor.of(self.payload, "x"), {}, self.payload


@settings(max_examples=200)
@given(document=json_values | st.fixed_dictionaries({"entries": st.lists(json_values | st.fixed_dictionaries(
    {}, optional={k: json_values for k in ("action", "to", "from", "status", "who", "when", "id", "forced",
                                           "gate", "reason")}), max_size=3)}))
def test_any_history_document_reads_or_names_the_repair(document):
    raw = json.dumps(document).encode()
    try:
        _, entries = _read(HistoryStore(raw), REPO, TAG)
    except DamagedHistory as e:
        assert "--repair" in str(e) and "\n" not in str(e)
        assert all(isinstance(x, Entry) for x in salvage(raw))  # the repair carries over what still reads
        return
    assert all(isinstance(e, Entry) and e.action in ("promote", "rollback", "unlock", "repair") for e in entries)


@pytest.mark.parametrize("bad", ["../../other/manifests/latest", "sha256:" + "g" * 64, "sha256:" + "1" * 64 + "\n"])
def test_an_entry_whose_digests_are_not_digests_is_damage(bad):
    good = {"action": "promote", "to": "sha256:" + "1" * 64, "from": None, "status": "done"}
    assert Entry.from_dict(good).to == good["to"]
    for field in ("to", "from"):
        with pytest.raises(ValueError):
            Entry.from_dict({**good, field: bad})


class LaxRecordStore:
    """A registry that holds whatever manifest it is given (docker-registry refuses a malformed `subject`, other
    registries may not): one record index listing one record artifact."""

    host = "lax.example"

    def __init__(self, manifest, payload: bytes):
        self.manifest, self.payload = manifest, payload

    def get_manifest(self, repository, reference):
        return json.dumps({"manifests": [{"digest": "sha256:" + "e" * 64}]}).encode(), None

    def referrers(self, repository, digest, artifact_type):
        return None

    def read_artifact(self, repository, reference):
        return None, self.manifest, self.payload


@settings(max_examples=200)
@given(subject=json_values, payload=json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=20))
def test_any_record_artifact_is_a_record_a_warning_or_a_one_line_refusal(subject, payload):
    from gracectl.errors import RegistryError
    from gracectl.tags.records import get_records

    digest = "sha256:" + "d" * 64
    try:
        found = get_records(f"lax.example/{REPO}", digest, "smoke",
                            registry=LaxRecordStore({"subject": subject}, payload))
    except RegistryError as e:
        assert "\n" not in str(e) and "another image" in str(e)
    else:
        assert all(isinstance(r, dict) and r.get("digest", digest) == digest for r in found)
