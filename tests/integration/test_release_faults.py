"""Release operations under faults, against the REAL docker-registry: a fault-injecting proxy in front of it
(answers dropped, delayed past the timeout, stalled, dripped, every request slow), gracectl SIGKILLed or
SIGTERMed mid-move, a read-only registry, a dead lock holder, hostile inputs. Every test checks what the
registry says: the tag's digest, the history entries, and the exit code and message.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fault_proxy import FaultProxy
from gracectl.settings import registry_access
from gracectl.tags import moves
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.registry import Registry
from gracectl.errors import (
    ConflictError,
    Interrupted,
    OutcomeUnknownError,
    PromotionRefusedError,
    RegistryError,
    UsageError,
)
from gracectl.image_ref import ImageRef
from gracectl.tags.records import artifact_type, record_tag
from gracectl.testbed.registry_server import RegistryServer
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))  # the CLI input strategies live with the unit tests
from test_properties import assert_one_line_error, hostile, run_cli  # noqa: E402
from test_release_ops_integration import TAG, gracectl, isolated_env, publish, smoke, tag_digest  # noqa: F401

pytestmark = pytest.mark.integration


def env_access() -> RegistryAccess:
    """What the CLI would build from this test's environment (the edge: gracectl.settings)."""
    return registry_access(os.environ)


@pytest.fixture
def names(registry, fault_proxy):
    """(repository path, the repo through the proxy, the repo direct)."""
    path = f"faults/{uuid.uuid4().hex[:8]}"
    return path, f"{fault_proxy.address}/{path}", f"{registry}/{path}"


def tag_moves(repo: str) -> list[tuple[str, str | None, str, str]]:
    return [(e.action, e.from_, e.to, e.status) for e in moves.history(f"{repo}:{TAG}", access=env_access())]


def two_images(oci_image, direct: str) -> tuple[str, str]:
    a = publish(oci_image, direct, "a-" + uuid.uuid4().hex, smoke())
    b = publish(oci_image, direct, "b-" + uuid.uuid4().hex, smoke())
    moves.promote(f"{direct}@{a}", TAG, access=env_access())
    return a, b


def tag_put(path: str) -> str:
    return rf"^/v2/{path}/manifests/{TAG}$"


# -- 1. every outcome is what the registry says ----------------------------------------------------------------
def test_lost_answer_of_the_tag_write_is_read_back_as_moved(names, fault_proxy, oci_image):
    path, proxied, direct = names
    a, b = two_images(oci_image, direct)
    fault_proxy.add("PUT", tag_put(path), "drop", times=1)
    result = gracectl("promote", f"{proxied}@{b}", "--to", TAG)
    assert fault_proxy.count("drop") == 1
    assert result.returncode == 0, result.stderr
    assert "reads back at" in result.stderr and "happened" in result.stderr
    assert tag_digest(direct) == b
    assert tag_moves(direct) == [("promote", None, a, "done"), ("promote", a, b, "done")]
    # The retry the runbook suggests is a no-op, and a rollback undoes the move (before: exit 8).
    assert gracectl("promote", f"{proxied}@{b}", "--to", TAG).returncode == 0
    assert gracectl("rollback", f"{proxied}:{TAG}").returncode == 0 and tag_digest(direct) == a


def test_answer_later_than_the_timeout_is_read_back_as_moved(names, fault_proxy, oci_image):
    path, proxied, direct = names
    a, b = two_images(oci_image, direct)
    fault_proxy.add("PUT", tag_put(path), "delay", 4, times=1)
    result = gracectl("rollback", f"{proxied}:{TAG}", "--to", b, env={"GRACECTL_REQUEST_TIMEOUT_S": "2"})
    assert result.returncode == 0, result.stderr
    assert "did not answer" in result.stderr and "happened" in result.stderr
    assert tag_digest(direct) == b
    assert tag_moves(direct)[-1] == ("rollback", a, b, "done")


def test_refused_tag_write_says_not_moved(names, fault_proxy, oci_image):
    path, proxied, direct = names
    a, b = two_images(oci_image, direct)
    fault_proxy.add("PUT", tag_put(path), "refuse", times=1)
    result = gracectl("promote", f"{proxied}@{b}", "--to", TAG)
    assert result.returncode == RegistryError.exit_code
    assert "was NOT moved" in result.stderr.strip().splitlines()[-1]
    assert tag_digest(direct) == a
    assert tag_moves(direct) == [("promote", None, a, "done"), ("promote", a, b, "failed")]


def test_lost_answer_and_unreadable_tag_says_could_not_tell(names, fault_proxy, oci_image):
    path, proxied, direct = names
    a, b = two_images(oci_image, direct)
    dropped = fault_proxy.add("PUT", tag_put(path), "drop", times=1)
    fault_proxy.add("HEAD", tag_put(path), "refuse", times=3, after=dropped)  # the three read-backs
    result = gracectl("promote", f"{proxied}@{b}", "--to", TAG)
    assert result.returncode == OutcomeUnknownError.exit_code, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "could not tell whether" in last and f"gracectl history {proxied}:{TAG}" in last
    assert tag_digest(direct) == b  # it did move; the history, read now, says so
    assert tag_moves(direct)[-1] == ("promote", a, b, "done")


def test_a_write_applied_after_its_read_back_is_repaired_by_the_next_move(names, fault_proxy, oci_image):
    """The tag write is held by the network and applied 4 s later, long after gracectl gave up on its answer and
    read the tag back (still at a): exit 5, "NOT moved", recorded failed. When it lands, the history says failed
    for a move that happened; the next plain rollback says so, records it done, and undoes it (before: exit 8)."""
    path, proxied, direct = names
    a, b = two_images(oci_image, direct)
    fault_proxy.add("PUT", tag_put(path), "late", 4, times=1)
    result = gracectl("promote", f"{proxied}@{b}", "--to", TAG, env={"GRACECTL_REQUEST_TIMEOUT_S": "1"})
    assert result.returncode == RegistryError.exit_code and "was NOT moved" in result.stderr, result.stderr
    wait_for(lambda: tag_digest(direct) == b)  # the late write lands
    assert moves.history(f"{direct}:{TAG}", access=env_access())[-1].status == "done"  # readers see the truth
    undo = gracectl("rollback", f"{direct}:{TAG}")
    assert undo.returncode == 0, undo.stderr
    assert "failed, but the tag was at" in undo.stderr and "record repaired: done" in undo.stderr
    assert tag_digest(direct) == a
    assert tag_moves(direct) == [("promote", None, a, "done"), ("promote", a, b, "done"), ("rollback", b, a, "done")]


# -- 2. no lost history ----------------------------------------------------------------------------------------
def test_a_slow_promotion_never_erases_a_concurrent_one(names, fault_proxy, oci_image, tmp_path):
    """The incident: P1 is slow (every answer late) and cannot renew its lock (its lock writes are refused
    after the claim), so its 3 s lock expires while it works; P2, another host, takes the lock over and
    promotes. P1 must then write nothing: the tag stays at P2's image and P2's move stays in the history."""
    path, proxied, direct = names
    a, b = two_images(oci_image, direct)
    c = publish(oci_image, direct, "c-" + uuid.uuid4().hex, smoke())
    lock_put = rf"^/v2/{path}/manifests/{TAG}\.gracectl-lock$"
    claim = fault_proxy.add("PUT", lock_put, "pass", times=1)
    fault_proxy.add("PUT", lock_put, "refuse", after=claim)
    fault_proxy.slow_every_request(0.3)
    env = {"GRACECTL_LOCK_TTL_S": "3", "GRACECTL_LOCK_SETTLE_S": "0.3", "GRACECTL_REQUEST_TIMEOUT_S": "1"}
    p1 = subprocess.Popen([sys.executable, "-m", "gracectl", "promote", f"{proxied}@{b}", "--to", TAG],
                          env={**os.environ, **env, "GRACECTL_LOCK_DIR": str(tmp_path / "h1")},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: claim.times == 0)
    time.sleep(3.5)  # P1's lock has expired
    p2 = gracectl("promote", f"{direct}@{c}", "--to", TAG, env={**env, "GRACECTL_LOCK_DIR": str(tmp_path / "h2")})
    assert p2.returncode == 0, p2.stderr
    assert p1.wait(timeout=120) == ConflictError.exit_code
    p1_err = p1.stderr.read().strip().splitlines()[-1]
    assert "lock" in p1_err and "writes nothing more" in p1_err, p1_err
    assert tag_digest(direct) == c
    entries = tag_moves(direct)
    assert [e for e in entries if e[3] == "done"] == [("promote", None, a, "done"), ("promote", a, c, "done")]
    assert all(e[3] == "failed" for e in entries if e[2] == b), entries


def test_concurrent_promotions_with_every_request_slow_keep_one_chain(names, fault_proxy, oci_image, tmp_path):
    """Four promotions at once from four "hosts", every answer 0.2 s late: exactly one moves the tag per
    attempt that succeeds, and the done moves form one chain that ends where the tag points."""
    path, proxied, direct = names
    a, _ = two_images(oci_image, direct)
    images = [publish(oci_image, direct, f"r{i}-" + uuid.uuid4().hex, smoke()) for i in range(4)]
    fault_proxy.slow_every_request(0.2)
    procs = [subprocess.Popen([sys.executable, "-m", "gracectl", "promote", f"{proxied}@{d}", "--to", TAG],
                              env={**os.environ, "GRACECTL_LOCK_DIR": str(tmp_path / f"h{i}"),
                                   "GRACECTL_LOCK_SETTLE_S": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, d in enumerate(images)]
    codes = [p.wait(timeout=180) for p in procs]
    assert set(codes) <= {0, ConflictError.exit_code} and codes.count(0) >= 1, codes
    done = [e for e in tag_moves(direct) if e[3] == "done"]
    assert len(done) == 1 + codes.count(0)
    for before, after in zip(done, done[1:]):
        assert after[1] == before[2]
    assert tag_digest(direct) == done[-1][2]
    assert {e[2] for e in done[1:]} == {d for d, rc in zip(images, codes) if rc == 0}


# -- 3. stale locks ----------------------------------------------------------------------------------------------
def write_lock(direct: str, holder: dict) -> None:
    ref = ImageRef.parse(direct)
    Registry(ref.registry, env_access()).push_artifact(ref.repository, f"{TAG}.gracectl-lock", artifact_type("lock"),
                                         json.dumps(holder).encode())


def test_lock_of_a_dead_holder_on_another_host_names_it_and_unlock_releases_it(names, oci_image):
    _, _, direct = names
    a, b = two_images(oci_image, direct)
    write_lock(direct, {"nonce": "x", "owner": "jenkins@agent-7", "host": "agent-7", "pid": 4242,
                        "since": "2026-01-01T00:00:00Z", "expires": time.time() + 100, "released": False})
    busy = gracectl("promote", f"{direct}@{b}", "--to", TAG)
    assert busy.returncode == ConflictError.exit_code
    line = busy.stderr.strip().splitlines()[-1]
    assert "jenkins@agent-7 (host agent-7, pid 4242)" in line and "expires in" in line and "gracectl unlock" in line

    no_reason = gracectl("unlock", f"{direct}:{TAG}")
    assert no_reason.returncode == UsageError.exit_code and "--reason" in no_reason.stderr
    freed = gracectl("unlock", f"{direct}:{TAG}", "--reason", "agent-7 died, INC-9")
    assert freed.returncode == 0 and "jenkins@agent-7" in freed.stdout
    assert gracectl("promote", f"{direct}@{b}", "--to", TAG).returncode == 0
    entries = moves.history(f"{direct}:{TAG}", access=env_access())
    assert [(e.action, e.status) for e in entries] == [("promote", "done"), ("unlock", "done"), ("promote", "done")]
    assert entries[1].reason == "agent-7 died, INC-9" and "jenkins@agent-7" in entries[1].source
    assert gracectl("rollback", f"{direct}:{TAG}").returncode == 0 and tag_digest(direct) == a  # unlock is no move


def test_sigkilled_holder_on_this_host_is_taken_over_at_once(names, fault_proxy, oci_image, tmp_path):
    path, proxied, direct = names
    a, b = two_images(oci_image, direct)
    fault_proxy.add("PUT", tag_put(path), "stall")
    p = subprocess.Popen([sys.executable, "-m", "gracectl", "promote", f"{proxied}@{b}", "--to", TAG],
                         env={**os.environ, "GRACECTL_LOCK_DIR": str(tmp_path / "one")},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: fault_proxy.count("stall", answered=True) >= 1)
    p.kill()
    assert p.wait(timeout=10) == -signal.SIGKILL
    assert tag_digest(direct) == b  # the stalled PUT was forwarded: the tag moved, the process never knew
    assert tag_moves(direct)[-1] == ("promote", a, b, "done")  # settled from the tag
    # Another lock dir (so not the flock): the holder's pid is dead on this machine, so no TTL wait.
    started = time.monotonic()
    result = gracectl("rollback", f"{direct}:{TAG}", env={"GRACECTL_LOCK_DIR": str(tmp_path / "two")})
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20 and tag_digest(direct) == a


def wait_for(condition, timeout: float = 30.0) -> None:
    """Poll until `condition` holds. A poll the registry answers 500 counts as not yet: docker-registry answers a
    read of a tag 500 now and then while a write of that tag is being applied (seen with the late-write test)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except RegistryError:
            pass
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# -- SIGTERM (a Jenkins abort) or Ctrl-C mid-move: the outcome is read back and reported -------------------------
@pytest.mark.parametrize("sig, said", [(signal.SIGTERM, "terminated (SIGTERM)"),
                                       (signal.SIGINT, "interrupted (SIGINT)")])
def test_an_interrupt_during_the_tag_write_reports_the_move_and_releases_the_lock(names, fault_proxy, oci_image,
                                                                                  sig, said):
    """The tag write was forwarded (the registry moved the tag) and its answer held back; the signal cuts the wait
    short. The tag moved, so the exit code is 0 (the contract: the exit code says the outcome), and the signal
    is said in a warning line."""
    path, proxied, direct = names
    a, b = two_images(oci_image, direct)
    fault_proxy.add("PUT", tag_put(path), "stall", times=1)
    p = subprocess.Popen([sys.executable, "-m", "gracectl", "promote", f"{proxied}@{b}", "--to", TAG],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: fault_proxy.count("stall", answered=True) >= 1)
    time.sleep(0.3)
    p.send_signal(sig)
    assert p.wait(timeout=30) == 0
    err = p.stderr.read()
    assert f"warning: {said}" in err and "happened (recorded done)" in err, err
    assert tag_digest(direct) == b
    assert tag_moves(direct)[-1] == ("promote", a, b, "done")
    # The lock was released: another host rolls back at once.
    assert gracectl("rollback", f"{direct}:{TAG}", env={"GRACECTL_LOCK_DIR": "/tmp/gracectl-other-host"}
                    ).returncode == 0


# -- 4. rollback gates and thresholds ------------------------------------------------------------------------------
def test_rollback_to_passes_the_promote_gates_or_is_forced(names, oci_image):
    _, _, direct = names
    a, b = two_images(oci_image, direct)
    moves.promote(f"{direct}@{b}", TAG, access=env_access())
    failed = publish(oci_image, direct, "failed", smoke(passed=False))
    untested = publish(oci_image, direct, "untested")
    rerun_failed = publish(oci_image, direct, "rerun", smoke(), smoke(passed=False))  # latest record failed
    for digest in (failed, untested, rerun_failed):
        refused = gracectl("rollback", f"{direct}:{TAG}", "--to", digest)
        assert refused.returncode == PromotionRefusedError.exit_code, refused.stderr
        assert "no passing smoke record" in refused.stderr
    assert gracectl("promote", f"{direct}@{rerun_failed}", "--to", TAG).returncode == PromotionRefusedError.exit_code
    assert tag_digest(direct) == b

    forced = gracectl("rollback", f"{direct}:{TAG}", "--to", failed, "--force", "--reason", "INC-7: known good")
    assert forced.returncode == 0, forced.stderr
    assert "FORCED" in forced.stdout
    last = moves.history(f"{direct}:{TAG}", access=env_access())[-1]
    assert last.forced and last.reason == "INC-7: known good" and last.to == failed and last.gate
    assert tag_digest(direct) == failed


def test_rollback_refuses_bookkeeping_tags_artifacts_and_paths(names, oci_image):
    path, _, direct = names
    a, b = two_images(oci_image, direct)
    moves.promote(f"{direct}@{b}", TAG, access=env_access())
    ref = ImageRef.parse(direct)
    registry = Registry(ref.registry, env_access())
    record_index = record_tag(b, "smoke")
    entry_tags = [t for t in registry.tags(path) if ".gch-" in t]
    history_digest = registry.head_manifest(path, entry_tags[0]).digest  # one entry of the history
    record_digest = json.loads(registry.get_manifest(path, record_index)[0])["manifests"][0]["digest"]
    for to in (f"{TAG}.gracectl-history", f"{TAG}.gracectl-lock", record_index, history_digest, record_digest,
               entry_tags[0],
               "../../other/manifests/x", "a b", "x/y", "-"):
        result = gracectl("rollback", f"{direct}:{TAG}", "--to", to, "--force", "--reason", "try")
        assert result.returncode == UsageError.exit_code, (to, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert tag_digest(direct) == b
    assert gracectl("rollback", f"{direct}:{TAG}", "--to", f"sha256:{'0' * 64}").returncode == 12  # no such image


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e9"])
def test_thresholds_that_would_switch_a_gate_off_are_refused(names, oci_image, value):
    _, _, direct = names
    b = publish(oci_image, direct, "t-" + uuid.uuid4().hex, smoke())
    result = gracectl("promote", f"{direct}@{b}", "--to", TAG, "--max-regression", value)
    assert result.returncode == UsageError.exit_code and "--max-regression" in result.stderr
    assert tag_digest(direct) is None


# -- 6. hostile --to values against the real registry: one-line errors, nothing written ---------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=hostile)
def test_hostile_rollback_targets_write_nothing(names, oci_image, value):
    _, _, direct = names
    if tag_digest(direct) is None:
        two_images(oci_image, direct)
    before = (tag_digest(direct), tag_moves(direct))
    code, err = run_cli("rollback", f"{direct}:{TAG}", "--to", value, "--force", "--reason", "fuzz")
    assert_one_line_error(code, err)
    assert code in (UsageError.exit_code, 9, 12)  # 9: an empty --to means "undo", and there is nothing to undo
    assert (tag_digest(direct), tag_moves(direct)) == before


# -- 5. overall deadline, read-only registry --------------------------------------------------------------------------
def test_a_dripping_registry_meets_the_deadline(names, fault_proxy, oci_image):
    _, proxied, direct = names
    two_images(oci_image, direct)
    fault_proxy.add("*", r"", "drip", 0.5)
    started = time.monotonic()
    result = gracectl("history", f"{proxied}:{TAG}", "--deadline", "4")
    assert time.monotonic() - started < 15
    assert result.returncode == RegistryError.exit_code
    assert "did not answer" in result.stderr or "deadline" in result.stderr


class ReadOnlyRegistry(RegistryServer):
    def write_config(self):
        path = super().write_config()
        config = json.loads(path.read_text())
        config["storage"]["maintenance"] = {"readonly": {"enabled": True}}
        path.write_text(json.dumps(config))
        return path


def test_read_only_registry_is_named_and_leaves_no_lock(tmp_path, oci_image):
    with RegistryServer(tmp_path / "reg").start() as server:
        repo = f"{server.address}/ro"
        a, b = two_images(oci_image, repo)
    with ReadOnlyRegistry(tmp_path / "reg", server.port).start():
        result = gracectl("promote", f"{repo}@{b}", "--to", TAG)
        assert result.returncode == RegistryError.exit_code
        assert "is read-only" in result.stderr.strip().splitlines()[-1]
        assert tag_digest(repo) == a
    with RegistryServer(tmp_path / "reg", server.port).start():
        # Writable again: another host promotes at once (no lock was left claimed).
        again = gracectl("promote", f"{repo}@{b}", "--to", TAG, env={"GRACECTL_LOCK_DIR": str(tmp_path / "other")})
        assert again.returncode == 0, again.stderr
        assert [m[3] for m in tag_moves(repo)] == ["done", "done"]


# -- 7. no secret on disk, no temporary folder left ---------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_no_secret_or_temp_folder_left_when_publish_is_killed(auth_registry, oci_image, tmp_path, sig):
    address, user, password = auth_registry
    with FaultProxy(address).start() as proxy:
        proxy.add("POST", r"/blobs/uploads/$", "stall")  # skopeo's first upload: it hangs there
        tmp = tmp_path / "tmpdir"
        tmp.mkdir()
        p = subprocess.Popen([sys.executable, "-m", "gracectl", "publish", oci_image("secret"), "--to",
                              f"{proxy.address}/sec:b1", "--username", user, "--password-stdin"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "TMPDIR": str(tmp)}, start_new_session=True)
        p.stdin.write(password)
        p.stdin.close()
        wait_for(lambda: proxy.count("stall") >= 1)  # skopeo is running, with its credentials
        p.send_signal(sig)
        rc = p.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # a safety net only: skopeo dies with gracectl
            os.killpg(p.pid, signal.SIGKILL)  # (test_release_signals checks that it does)
    assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
    leftovers = [f for f in tmp.rglob("*")]
    assert not [f for f in leftovers if f.is_file() and password.encode() in f.read_bytes()]
    if sig == signal.SIGTERM:
        assert leftovers == []


# -- 9. no untagged bookkeeping manifests left behind ------------------------------------------------------------
def test_moves_leave_no_superseded_lock_or_history_manifest(tmp_path, oci_image):
    with RegistryServer(tmp_path / "reg").start() as server:
        repo = f"{server.address}/gc"
        revisions = tmp_path / "reg/data/docker/registry/v2/repositories/gc/_manifests/revisions/sha256"
        a, b = two_images(oci_image, repo)  # publishes and the first promotion (creates lock and history)

        def untagged() -> set[str]:  # a deleted manifest loses its link (the folder stays)
            registry = Registry(server.address, env_access())
            tagged = {registry.head_manifest("gc", t).digest for t in registry.tags("gc")}
            return {p.parent.name for p in revisions.glob("*/link")} - {d.split(":")[1] for d in tagged}

        leftover = untagged()  # the layers' image manifests are tagged; records are referenced by their index
        for _ in range(3):
            moves.promote(f"{repo}@{b}", TAG, access=env_access())
            moves.rollback(f"{repo}:{TAG}", access=env_access())
        assert untagged() == leftover  # no superseded lock left; history entries are tagged, each its own
        assert [m[3] for m in tag_moves(repo)] == ["done"] * 7
