"""Release operations, third pass: interrupts at every point, damaged registry state, non-image targets, hostile
neighbours and bad numbers, against the REAL docker-registry (plain; the TLS + token one in
test_release_tls_token.py). Each test checks what the registry holds afterwards, the exit code and the one line.
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

import pytest

from gracectl import settings
from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import PromotionRefusedError, ReadOnlyRegistryError, RegistryError, UsageError
from gracectl.image_ref import ImageRef
from gracectl.tags.records import artifact_type, record_tag
from gracectl.testbed.registry_server import RegistryServer
from test_release_faults import ReadOnlyRegistry, names, tag_moves, two_images, wait_for  # noqa: F401
from test_release_ops_integration import TAG, gracectl, isolated_env, publish, repo, smoke, tag_digest  # noqa: F401

pytestmark = pytest.mark.integration

LOCK_TAG = TAG + ".gracectl-lock"


def registry_of(repo: str) -> tuple[Registry, str]:
    ref = ImageRef.parse(repo)
    return Registry(ref.registry, settings.registry_access(os.environ)), ref.repository


def plant(repo: str, tag: str, kind: str, payload: bytes) -> None:
    registry, path = registry_of(repo)
    registry.push_artifact(path, tag, artifact_type(kind), payload)


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr


# -- 1. interrupts: the outcome said in one line, the lock released ---------------------------------------------
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_an_interrupt_during_the_lock_claim_releases_what_it_wrote(names, fault_proxy, oci_image, sig, code):
    path, proxied, direct = names
    a, b = two_images(oci_image, direct)
    # The claim's PUT reaches the registry, its answer is held: the lock IS written when the signal comes.
    fault_proxy.add("PUT", rf"^/v2/{path}/manifests/{TAG}\.gracectl-lock$", "stall", times=1)
    p = subprocess.Popen([sys.executable, "-m", "gracectl", "promote", f"{proxied}@{b}", "--to", TAG],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: fault_proxy.count("stall", answered=True) >= 1)
    p.send_signal(sig)
    assert p.wait(timeout=60) == code
    err = p.stderr.read()
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "was NOT moved" in line, line
    assert tag_digest(direct) == a
    # Another host promotes at once: the claim was taken back (before: exit 8 for up to 120 s).
    other = gracectl("promote", f"{direct}@{b}", "--to", TAG, env={"GRACECTL_LOCK_DIR": "/tmp/gracectl-host-2"})
    assert other.returncode == 0, other.stderr
    assert tag_digest(direct) == b


def test_interrupts_at_random_points_never_misreport(names, fault_proxy, oci_image):
    """SIGINT at a spread of moments in a slowed promote: whatever the exit, the exit code and the registry agree
    (0: moved, a warning naming the signal if it came during or after the write; 130: the tag unchanged), and no
    lock is left held."""
    _, proxied, direct = names
    a, b = two_images(oci_image, direct)
    fault_proxy.slow_every_request(0.15)
    outcomes = []
    for i, delay in enumerate((0.3, 0.8, 1.3, 1.8, 2.4, 3.0, 3.8, 4.6)):
        start, target = (a, b) if tag_digest(direct) == a else (b, a)
        p = subprocess.Popen([sys.executable, "-m", "gracectl", "promote", f"{proxied}@{target}", "--to", TAG],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "GRACECTL_LOCK_SETTLE_S": "0.3"})
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=60)
        err = p.stderr.read()
        assert "Traceback" not in err, err
        now = tag_digest(direct)
        line = err.strip().splitlines()[-1] if err.strip() else ""
        if rc == 0:
            assert now == target
        else:
            assert rc == 130 and line.startswith("error: interrupted (SIGINT)"), (rc, err)
            assert now == start and "WAS moved" not in line, (line, now)
        outcomes.append((rc, "WAS" in line))
    fault_proxy.slow_every_request(0)
    # No lock left: another host moves the tag at once.
    other = gracectl("rollback", f"{direct}:{TAG}", "--to", a, env={"GRACECTL_LOCK_DIR": "/tmp/gracectl-host-3"})
    assert other.returncode == 0, other.stderr
    assert any(rc == 130 for rc, _ in outcomes)


# -- 2. a read-only registry is named, not taken for a competing holder -----------------------------------------
def test_read_only_after_a_restart_with_a_dead_holders_lock_says_read_only(tmp_path, oci_image):
    with RegistryServer(tmp_path / "reg").start() as server:
        repo = f"{server.address}/ro2"
        a, b = two_images(oci_image, repo)
        dead = {"nonce": "x", "owner": "dead@host", "host": "gone", "pid": 1, "since": "then",
                "expires": time.time() - 5, "released": False}
        plant(repo, LOCK_TAG, "lock", json.dumps(dead).encode())
    with ReadOnlyRegistry(tmp_path / "reg", server.port).start():
        result = gracectl("promote", f"{repo}@{b}", "--to", TAG)
        assert result.returncode == ReadOnlyRegistryError.exit_code
        assert "is read-only" in last_line(result) and "dead@host" not in last_line(result)
        assert tag_digest(repo) == a


# -- 3. damaged artifacts: one line, a way out -------------------------------------------------------------------
@pytest.mark.parametrize("expires", ['"soon"', "NaN", "1e400", "null", "[1, 2]", "Infinity", "-Infinity", "{}"])
def test_a_damaged_lock_never_crashes_nor_blocks(names, oci_image, expires):
    _, _, direct = names
    a, b = two_images(oci_image, direct)
    payload = ('{"nonce": "n", "owner": "x", "host": "far", "pid": 7, "released": false, "expires": %s}'
               % expires).encode()
    plant(direct, LOCK_TAG, "lock", payload)
    unlocked = gracectl("unlock", f"{direct}:{TAG}", "--reason", "damaged lock")
    no_traceback(unlocked)
    assert unlocked.returncode == 0, unlocked.stderr
    plant(direct, LOCK_TAG, "lock", payload)
    promoted = gracectl("promote", f"{direct}@{b}", "--to", TAG)
    no_traceback(promoted)
    assert promoted.returncode == 0, promoted.stderr
    assert tag_digest(direct) == b


@pytest.mark.parametrize("payload", [b"[1]", b'"text"', b"null", b"{not json", b"3"])
def test_a_damaged_smoke_record_counts_for_nothing(names, oci_image, payload):
    _, _, direct = names
    a = publish(oci_image, direct, "good-" + uuid.uuid4().hex, smoke())
    c = publish(oci_image, direct, "bad-" + uuid.uuid4().hex)
    registry, path = registry_of(direct)
    subject = registry.head_manifest(path, c)
    artifact = registry.push_artifact(path, "", artifact_type("smoke"), payload, subject=subject)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{**artifact.to_dict(), "artifactType": artifact_type("smoke")}]}
    registry.put_manifest(path, record_tag(c, "smoke"), json.dumps(index).encode(),
                          "application/vnd.oci.image.index.v1+json")
    for args in (("promote", f"{direct}@{c}", "--to", TAG), ("records", f"{direct}@{c}")):
        result = gracectl(*args)
        no_traceback(result)
        assert "damaged" in result.stderr
    refused = gracectl("promote", f"{direct}@{c}", "--to", TAG)
    assert refused.returncode == PromotionRefusedError.exit_code and "smoke" in last_line(refused)
    assert gracectl("promote", f"{direct}@{a}", "--to", TAG).returncode == 0  # its neighbours are unaffected


@pytest.mark.parametrize("attached", ["[1, 2]", '"text"', "null"])
def test_publish_attach_must_be_a_record_object(repo, oci_image, tmp_path, attached):
    record = tmp_path / "record.json"
    record.write_text(attached)
    result = gracectl("publish", oci_image("att"), "--to", f"{repo}:b1", "--attach", str(record))
    no_traceback(result)
    assert result.returncode == UsageError.exit_code and "JSON object" in last_line(result)
    assert tag_digest(repo, "b1") is None  # nothing pushed


def test_a_record_of_another_image_is_never_relabelled(repo, oci_image, tmp_path):
    a = publish(oci_image, repo, "first", smoke())
    record = tmp_path / "smoke.json"
    record.write_text(json.dumps({**smoke(), "digest": a}))
    result = gracectl("publish", oci_image("second"), "--to", f"{repo}:b2", "--attach", str(record))
    assert result.returncode == UsageError.exit_code and "names image" in last_line(result)
    digest = tag_digest(repo, "b2")
    assert digest and gracectl("records", f"{repo}@{digest}").stdout.strip() == "[]"


@pytest.mark.parametrize("history", [
    b"[]", b'{"entries": "x"}', b'{"entries": [{"action": "promote", "to": "../../other/manifests/latest"}]}',
    b'{"entries": [{"action": "rollback", "to": "sha256:%s", "from": "../../x/manifests/y", "status": "done"}]}'
    % (b"1" * 64), b"{broken"])
def test_a_damaged_history_names_the_repair_and_the_repair_works(names, oci_image, history):
    _, _, direct = names
    a, b = two_images(oci_image, direct)
    plant(direct, TAG + ".gracectl-history", "history", history)
    # Reading it is refused with the way out; a promotion does not need it (entries are appended, never rewritten).
    for args in (("rollback", f"{direct}:{TAG}"), ("history", f"{direct}:{TAG}")):
        result = gracectl(*args)
        no_traceback(result)
        assert result.returncode == RegistryError.exit_code, (args, result.stderr)
        assert "--repair" in last_line(result)
    assert tag_digest(direct) == a
    repaired = gracectl("history", f"{direct}:{TAG}", "--repair", "--reason", "damaged by hand")
    assert repaired.returncode == 0, repaired.stderr
    assert tag_digest(direct, TAG + ".gracectl-damaged")  # the damaged one is kept, not deleted
    assert gracectl("promote", f"{direct}@{b}", "--to", TAG).returncode == 0 and tag_digest(direct) == b
    assert [e[0] for e in tag_moves(direct)][-2:] == ["repair", "promote"]
    assert gracectl("history", f"{direct}:{TAG}", "--repair", "--reason", "again").stdout.strip().endswith(
        "nothing to repair")


# -- 4. release tags point at images only --------------------------------------------------------------------------
def test_a_release_tag_never_points_at_a_record_or_its_index(names, oci_image):
    _, _, direct = names
    a, b = two_images(oci_image, direct)
    index_tag = record_tag(b, "smoke")
    registry, path = registry_of(direct)
    record_digest = registry.get_manifest(path, index_tag)[1].digest
    member = json.loads(registry.get_manifest(path, index_tag)[0])["manifests"][0]["digest"]
    for args in (("promote", f"{direct}:{index_tag}", "--to", "rel", "--force", "--reason", "x"),
                 ("rollback", f"{direct}:{TAG}", "--to", record_digest, "--force", "--reason", "x"),
                 ("rollback", f"{direct}:{TAG}", "--to", member, "--force", "--reason", "x")):
        result = gracectl(*args)
        assert result.returncode == UsageError.exit_code and "not an image" in last_line(result), result.stderr
    assert tag_digest(direct) == a and tag_digest(direct, "rel") is None
    # A history whose last move came "from" a record (an entry planted by hand): a plain rollback refuses it.
    entry = {"action": "promote", "to": a, "from": member, "status": "done", "id": "f00d", "who": "x",
             "when": "2026-01-01T00:00:00Z", "began": time.time()}
    plant(direct, f"{TAG}.gch-f00d-done", "history-entry", json.dumps({"schema": 2, "entry": entry}).encode())
    result = gracectl("rollback", f"{direct}:{TAG}")
    assert result.returncode == UsageError.exit_code and "not an image" in last_line(result)
    assert tag_digest(direct) == a


# -- 5. local locks: safe against a hostile neighbour -------------------------------------------------------------
def test_a_planted_link_in_the_lock_folder_truncates_nothing(names, oci_image, tmp_path):
    _, _, direct = names
    a, b = two_images(oci_image, direct)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    folder = tmp_path / "hostile-locks"
    folder.mkdir(mode=0o700)
    ref = ImageRef.parse(direct)
    name = f"{ref.registry}/{ref.repository}:{TAG}".replace("/", "_").replace(":", "_")
    (folder / f"{name}.lock").symlink_to(victim)
    result = gracectl("promote", f"{direct}@{b}", "--to", TAG, env={"GRACECTL_LOCK_DIR": str(folder)})
    assert result.returncode == UsageError.exit_code and "link" in last_line(result)
    assert victim.read_text() == "keep me" and tag_digest(direct) == a
    folder.chmod(0o777)  # writable by anyone: anyone could hold or swap our lock files
    (folder / f"{name}.lock").unlink()
    result = gracectl("promote", f"{direct}@{b}", "--to", TAG, env={"GRACECTL_LOCK_DIR": str(folder)})
    assert result.returncode == UsageError.exit_code and "writable by others" in last_line(result)
    fresh = tmp_path / "fresh-locks"
    assert gracectl("promote", f"{direct}@{b}", "--to", TAG, env={"GRACECTL_LOCK_DIR": str(fresh)}).returncode == 0
    assert oct(fresh.stat().st_mode & 0o777) == "0o700"
    assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in fresh.iterdir())


# -- 6. bounds: numbers, text, redirects, answers -----------------------------------------------------------------
@pytest.mark.parametrize("env", [{"GRACECTL_LOCK_SETTLE_S": "1e9"}, {"GRACECTL_REQUEST_TIMEOUT_S": "soon"},
                                 {"GRACECTL_LOCK_TTL_S": "-3"}, {"GRACECTL_DEADLINE_S": "inf"},
                                 {"GRACECTL_LOCK_DIR": "/etc/hostname"}, {"GRACECTL_ACTOR": "x\x1b[2Jy"}])
def test_bad_settings_are_one_line_before_anything_is_done(names, oci_image, env):
    _, _, direct = names
    a, b = two_images(oci_image, direct)
    result = gracectl("promote", f"{direct}@{b}", "--to", TAG, env=env)
    no_traceback(result)
    assert result.returncode == UsageError.exit_code and list(env)[0] in last_line(result), result.stderr
    assert tag_digest(direct) == a


@pytest.mark.parametrize("args", [("--to", "rel\n"), ("--to", TAG, "--force", "--reason", "x\nFORGED entry"),
                                  ("--to", TAG, "--force", "--reason", "\x1b]0;owned\x07")])
def test_control_characters_in_tags_and_reasons_are_refused(names, oci_image, args):
    _, _, direct = names
    a, b = two_images(oci_image, direct)
    result = gracectl("promote", f"{direct}@{b}", *args)
    assert result.returncode == UsageError.exit_code, result.stderr
    assert tag_digest(direct) == a and len(tag_moves(direct)) == 1


def test_a_redirect_loop_and_a_huge_answer_are_one_line(tmp_path):
    import http.server
    import threading

    class Hostile(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/v2/":
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            if self.path.startswith("/v2/loop"):
                self.send_response(307)
                self.send_header("Location", self.path)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.end_headers()
            chunk = b" " * (1 << 20)
            with contextlib.suppress(OSError):  # gracectl hangs up once it has read too much
                for _ in range(40):  # 40 MiB of nothing
                    self.wfile.write(chunk)

        def do_HEAD(self):
            if self.path.startswith("/v2/loop"):
                return self.do_GET()
            self.send_response(200)  # what a registry says of a manifest: its digest; the body is for GET
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Docker-Content-Digest", "sha256:" + "2" * 64)
            self.send_header("Content-Length", str(40 << 20))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        looped = gracectl("history", f"{host}/loop:{TAG}")
        no_traceback(looped)
        assert looped.returncode == RegistryError.exit_code and "redirected" in last_line(looped)
        huge = gracectl("records", f"{host}/big@sha256:{'2' * 64}")
        no_traceback(huge)
        assert huge.returncode == RegistryError.exit_code and "MiB" in last_line(huge)
    finally:
        server.shutdown()


def test_plain_http_to_a_tls_port_says_it_speaks_https(tmp_path):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    key, chain = tmp_path / "key.pem", tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(key)
    cert.cert_chain_pems[0].write_to_path(chain)
    with RegistryServer(tmp_path / "reg", tls=(chain, key)).start() as server:
        result = gracectl("history", f"{server.address}/x:{TAG}", env={"GRACECTL_CERTS_D": str(tmp_path / "none")})
        assert result.returncode == RegistryError.exit_code and "speaks https" in last_line(result), result.stderr



# -- 7. a history that cannot lose a completed entry -----------------------------------------------------------
def test_a_write_landing_after_its_writer_lost_the_lock_erases_nothing(names, fault_proxy, oci_image, tmp_path):
    """P1's pending history write is held 13 s (its request timeout is 2 s, its lock lives 6 s): P2 takes the
    lock over and completes a promotion; then P1's write lands. P2's move must stay in the history (before:
    erased, and `rollback` then failed with "moved outside gracectl?")."""
    path, proxied, direct = names
    a, b = two_images(oci_image, direct)
    c = publish(oci_image, direct, "c-" + uuid.uuid4().hex, smoke())
    fault_proxy.add("PUT", rf"^/v2/{path}/manifests/{TAG}\.gch-[0-9a-f]+-pending$", "late", 13, times=1)
    env = {**os.environ, "GRACECTL_LOCK_TTL_S": "6", "GRACECTL_REQUEST_TIMEOUT_S": "2",
           "GRACECTL_LOCK_SETTLE_S": "0.3"}
    p1 = subprocess.Popen([sys.executable, "-m", "gracectl", "promote", f"{proxied}@{b}", "--to", TAG],
                          env={**env, "GRACECTL_LOCK_DIR": str(tmp_path / "h1")}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    assert p1.wait(timeout=60) != 0  # its history write timed out: it stops before touching the tag
    time.sleep(6.5)  # P1's lock has expired
    p2 = gracectl("promote", f"{direct}@{c}", "--to", TAG, env={**env, "GRACECTL_LOCK_DIR": str(tmp_path / "h2")})
    assert p2.returncode == 0, p2.stderr
    wait_for(lambda: "late" in fault_proxy.answered, timeout=30)  # P1's write has landed now
    assert tag_digest(direct) == c
    done = [m for m in tag_moves(direct) if m[3] == "done"]
    assert done == [("promote", None, a, "done"), ("promote", a, c, "done")], tag_moves(direct)
    history = gracectl("history", f"{direct}:{TAG}")
    assert "moved outside gracectl" not in history.stderr
    assert gracectl("rollback", f"{direct}:{TAG}").returncode == 0 and tag_digest(direct) == a


def test_history_says_when_the_tag_disagrees_with_its_last_move(names, oci_image):
    _, _, direct = names
    a, b = two_images(oci_image, direct)
    registry, path = registry_of(direct)
    registry.tag_digest(path, b, TAG)  # moved by hand, outside gracectl
    result = gracectl("history", f"{direct}:{TAG}")
    assert result.returncode == 0 and "moved outside gracectl" in result.stderr
