"""Release operations against a REAL docker-registry (distribution 2.8) with real images pushed by skopeo.

Each test works in its own repository of the session's registry; the CLI is run as a subprocess
(`python -m gracectl ...`) where exit codes and messages matter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from gracectl import settings
from gracectl.tags import moves
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.registry import Registry
from gracectl.image_ref import ImageRef
from gracectl.errors import ConflictError, NoHistoryError, PromotionRefusedError, RegistryError, UsageError
from gracectl.tags.records import get_records, put_record, record_tag
from gracectl.testbed.registry_server import RegistryServer

pytestmark = pytest.mark.integration

TAG = "v0.19.0-tfa"


def env_access() -> RegistryAccess:
    """What the CLI would build from this test's environment (the edge: gracectl.settings)."""
    return settings.registry_access(os.environ)


def registry_of(repo: str) -> Registry:
    """The registry of REGISTRY/REPO, reached as the CLI would reach it."""
    return Registry(ImageRef.parse(repo).registry, env_access())


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No operator docker config, a private lock directory, a short lock settle delay (subprocesses too)."""
    (tmp_path / "docker-config").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("GRACECTL_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("GRACECTL_LOCK_SETTLE_S", "0.3")
    monkeypatch.delenv("GRACECTL_REGISTRY", raising=False)


@pytest.fixture
def repo(registry):
    return f"{registry}/gracectl-test/{uuid.uuid4().hex[:8]}"


def gracectl(*args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gracectl", *args], input=input, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def smoke(passed: bool = True) -> dict:
    return {"kind": "smoke", "schema": 1, "passed": passed, "level": "imports"}


def bench(gpu: str, median_ms: float) -> dict:
    return {"kind": "bench", "schema": 1, "gpu": {"name": gpu},
            "results": [{"name": "moe_gemm1_tokens8192", "median_ms": median_ms, "unit": "ms"}]}


def publish(oci_image, repo: str, content: str, *records: dict) -> str:
    """Push a fresh tiny image under an immutable build tag, attach records; return its digest."""
    return moves.publish(oci_image(content), f"{repo}:b-{uuid.uuid4().hex[:6]}", attach=list(records), access=env_access()).digest


def tag_digest(repo: str, tag: str = TAG) -> str | None:
    ref = ImageRef.parse(repo)
    found = Registry(ref.registry, env_access()).head_manifest(ref.repository, tag)
    return found.digest if found else None


# -- publish ------------------------------------------------------------------------------------------------
def test_publish_pushes_and_never_overwrites_an_immutable_tag(repo, oci_image):
    first = oci_image("one")
    result = gracectl("publish", first, "--to", f"{repo}:v1-b1-abc1234", "--json")
    assert result.returncode == 0, result.stderr
    published = json.loads(result.stdout)
    assert published["digest"] == tag_digest(repo, "v1-b1-abc1234")
    assert published["already"] is False

    again = gracectl("publish", first, "--to", f"{repo}:v1-b1-abc1234", "--json")  # a retried push stage
    assert again.returncode == 0 and json.loads(again.stdout)["already"] is True

    other = gracectl("publish", oci_image("two"), "--to", f"{repo}:v1-b1-abc1234")
    assert other.returncode == ConflictError.exit_code
    assert "already exists" in other.stderr and "immutable" in other.stderr
    assert tag_digest(repo, "v1-b1-abc1234") == published["digest"]


def test_publish_from_dockerd_attaches_the_smoke_record(repo, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "hello.txt").write_text(uuid.uuid4().hex)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    local = f"gracectl-test-tiny:{uuid.uuid4().hex[:8]}"
    subprocess.run(["/usr/bin/docker", "build", "-q", "-t", local, str(context)], check=True, capture_output=True,
                   env={**os.environ, "DOCKER_BUILDKIT": "1"})
    try:
        image_id = subprocess.run(["/usr/bin/docker", "image", "inspect", "-f", "{{.Id}}", local],
                                  check=True, capture_output=True, text=True).stdout.strip()
        record = tmp_path / "smoke-record.json"
        record.write_text(json.dumps({**smoke(), "image": local, "image_id": image_id}))
        result = gracectl("publish", local, "--to", f"{repo}:b1", "--attach", str(record), "--json")
        assert result.returncode == 0, result.stderr
        digest = json.loads(result.stdout)["digest"]
        assert json.loads(result.stdout)["image_id"] == image_id
        assert digest == tag_digest(repo, "b1")
        [stored] = get_records(repo, digest, "smoke", registry=registry_of(repo))
        assert stored["passed"] is True and stored["digest"] == digest and stored["image_id"] == image_id

        # A record of another image is refused before anything is pushed.
        record.write_text(json.dumps({**smoke(), "image_id": "sha256:" + "0" * 64}))
        refused = gracectl("publish", local, "--to", f"{repo}:b2", "--attach", str(record))
        assert refused.returncode == 2 and "attach records of this image only" in refused.stderr
        assert tag_digest(repo, "b2") is None
    finally:
        subprocess.run(["/usr/bin/docker", "rmi", local], capture_output=True)


# -- records -------------------------------------------------------------------------------------------------
def test_records_are_stored_with_the_image_as_referrers_and_under_the_fallback_tag(repo, oci_image):
    digest = publish(oci_image, repo, "records")
    assert get_records(repo, digest, "smoke", registry=registry_of(repo)) == []
    put_record(repo, digest, "bench", bench("NVIDIA GH200 480GB", 1.0), registry=registry_of(repo))
    put_record(repo, digest, "bench", bench("NVIDIA H100 80GB HBM3", 2.0), registry=registry_of(repo))
    records = get_records(repo, digest, "bench", registry=registry_of(repo))
    assert [r["gpu"]["name"] for r in records] == ["NVIDIA GH200 480GB", "NVIDIA H100 80GB HBM3"]
    assert all(r["digest"] == digest for r in records)
    shown = gracectl("records", f"{repo}@{digest}", "--kind", "bench")
    assert shown.returncode == 0 and json.loads(shown.stdout) == records

    ref = ImageRef.parse(repo)
    registry = Registry(ref.registry, env_access())
    assert record_tag(digest, "bench") in registry.tags(ref.repository)
    index = json.loads(registry.get_manifest(ref.repository, record_tag(digest, "bench"))[0])
    artifact = json.loads(registry.get_manifest(ref.repository, index["manifests"][0]["digest"])[0])
    assert artifact["subject"]["digest"] == digest
    assert artifact["artifactType"] == "application/vnd.gracectl.bench.v1+json"

    with pytest.raises(RegistryError, match="push it before"):
        put_record(repo, "sha256:" + "1" * 64, "smoke", smoke(), registry=registry_of(repo))


# -- promote / rollback / history ----------------------------------------------------------------------------
def test_promote_needs_a_passing_smoke_record(repo, oci_image):
    untested = publish(oci_image, repo, "untested")
    failed = publish(oci_image, repo, "failed", smoke(passed=False))
    passed = publish(oci_image, repo, "passed", smoke())

    for digest in (untested, failed):
        result = gracectl("promote", f"{repo}@{digest}", "--to", TAG)
        assert result.returncode == PromotionRefusedError.exit_code
        assert "no passing smoke record" in result.stderr and "--force --reason" in result.stderr
    assert tag_digest(repo) is None
    assert moves.history(f"{repo}:{TAG}", access=env_access()) == []

    result = gracectl("promote", f"{repo}@{passed}", "--to", TAG, "--json")
    assert result.returncode == 0, result.stderr
    assert tag_digest(repo) == passed
    assert json.loads(result.stdout)["status"] == "done"

    again = gracectl("promote", f"{repo}@{passed}", "--to", TAG)  # already there: a no-op, no history entry
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert len(moves.history(f"{repo}:{TAG}", access=env_access())) == 1


def test_force_needs_a_reason_and_records_it(repo, oci_image):
    untested = publish(oci_image, repo, "hotfix")
    no_reason = gracectl("promote", f"{repo}@{untested}", "--to", TAG, "--force")
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    assert tag_digest(repo) is None

    forced = gracectl("promote", f"{repo}@{untested}", "--to", TAG, "--force", "--reason", "CVE hotfix, INC-42")
    assert forced.returncode == 0, forced.stderr
    [entry] = moves.history(f"{repo}:{TAG}", access=env_access())
    assert entry.forced and entry.reason == "CVE hotfix, INC-42" and entry.to == untested
    assert any("no passing smoke record" in g for g in entry.gate)


def test_promote_by_build_tag_then_rollback_walks_back_and_history_shows_all(repo, oci_image):
    first = publish(oci_image, repo, "first", smoke())
    second_tag = f"{repo}:v0.19.0-tfa-b2-abc1234"
    second = moves.publish(oci_image("second"), second_tag, attach=[smoke()], access=env_access()).digest

    assert gracectl("promote", f"{repo}@{first}", "--to", TAG).returncode == 0
    assert gracectl("promote", second_tag, "--to", TAG).returncode == 0  # by build tag
    assert tag_digest(repo) == second

    back = gracectl("rollback", f"{repo}:{TAG}", "--reason", "MoE NaNs")
    assert back.returncode == 0, back.stderr
    assert tag_digest(repo) == first

    # The first promotion created the tag: nothing earlier to go back to.
    none = gracectl("rollback", f"{repo}:{TAG}")
    assert none.returncode == NoHistoryError.exit_code and "--to" in none.stderr
    assert tag_digest(repo) == first

    # Explicit target: back to the second image by its build tag; that move can itself be undone.
    assert gracectl("rollback", f"{repo}:{TAG}", "--to", second_tag.rsplit(":", 1)[1]).returncode == 0
    assert tag_digest(repo) == second
    assert gracectl("rollback", f"{repo}:{TAG}").returncode == 0
    assert tag_digest(repo) == first

    # History from a "fresh machine": another lock dir and no state but the registry.
    result = gracectl("history", f"{repo}:{TAG}", "--json", env={"GRACECTL_LOCK_DIR": "/nonexistent-fresh"})
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [(e["action"], e["from"], e["to"], e["status"]) for e in entries] == [
        ("promote", None, first, "done"),
        ("promote", first, second, "done"),
        ("rollback", second, first, "done"),
        ("rollback", first, second, "done"),
        ("rollback", second, first, "done"),
    ]
    assert entries[2]["reason"] == "MoE NaNs" and entries[2]["undoes"] == entries[1]["id"]
    assert all(e["who"] and e["when"].endswith("Z") for e in entries)
    table = gracectl("history", f"{repo}:{TAG}")
    assert table.returncode == 0 and "rollback" in table.stdout


def test_rollback_without_history_and_tag_moved_outside_gracectl(repo, oci_image):
    assert gracectl("rollback", f"{repo}:{TAG}").returncode == NoHistoryError.exit_code
    a = publish(oci_image, repo, "a", smoke())
    b = publish(oci_image, repo, "b", smoke())
    moves.promote(f"{repo}@{a}", TAG, access=env_access())
    ref = ImageRef.parse(repo)
    Registry(ref.registry, env_access()).tag_digest(ref.repository, b, TAG)  # somebody pushed over the tag by hand
    moved = gracectl("rollback", f"{repo}:{TAG}")
    assert moved.returncode == ConflictError.exit_code and "outside gracectl" in moved.stderr
    assert tag_digest(repo) == b


def test_benchmark_gate_compares_only_the_same_gpu_model(repo, oci_image):
    gh200 = "NVIDIA GH200 480GB"
    current = publish(oci_image, repo, "current", smoke(), bench(gh200, 10.0))
    moves.promote(f"{repo}@{current}", TAG, access=env_access())

    slower = publish(oci_image, repo, "slower", smoke(), bench(gh200, 10.8))  # +8 %
    refused = gracectl("promote", f"{repo}@{slower}", "--to", TAG)
    assert refused.returncode == PromotionRefusedError.exit_code
    assert "moe_gemm1_tokens8192" in refused.stderr and "+8.0%" in refused.stderr
    assert tag_digest(repo) == current
    assert gracectl("promote", f"{repo}@{slower}", "--to", TAG, "--max-regression", "10").returncode == 0
    assert tag_digest(repo) == slower

    other_gpu = publish(oci_image, repo, "other-gpu", smoke(), bench("NVIDIA H100 80GB HBM3", 50.0))
    assert gracectl("promote", f"{repo}@{other_gpu}", "--to", TAG).returncode == 0  # not comparable: allowed


# -- safety --------------------------------------------------------------------------------------------------
RACE = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from gracectl import settings
    from gracectl.errors import GraceError
    from gracectl.tags.moves import promote
    go = Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.005)
    try:
        promote(sys.argv[1], sys.argv[2], access=settings.registry_access(os.environ))  # as the CLI builds it
    except GraceError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
""")


@pytest.mark.parametrize("hosts", ["one host", "two hosts"])
def test_concurrent_promotions_exactly_one_wins(repo, oci_image, tmp_path, hosts):
    """Two processes promote different images to one tag at the same instant. On one host the flock
    decides; as two hosts (separate lock dirs) the registry lock does."""
    a = publish(oci_image, repo, "race-a", smoke())
    b = publish(oci_image, repo, "race-b", smoke())
    go = tmp_path / "go"
    procs = []
    for i, digest in enumerate((a, b)):
        env = {**os.environ, "GRACECTL_LOCK_SETTLE_S": "1.0"}
        if hosts == "two hosts":
            env["GRACECTL_LOCK_DIR"] = str(tmp_path / f"host-{i}")
        procs.append(subprocess.Popen([sys.executable, "-c", RACE, f"{repo}@{digest}", TAG, str(go)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    time.sleep(1.5)  # both imported and waiting
    go.touch()
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, ConflictError.exit_code], results
    winner = (a, b)[[rc for rc, _ in results].index(0)]
    assert tag_digest(repo) == winner
    entries = moves.history(f"{repo}:{TAG}", access=env_access())
    assert [(e.action, e.to, e.status) for e in entries] == [("promote", winner, "done")]


@contextmanager
def killed_during(server: RegistryServer, target, name: str, when):
    """Kill the real registry (SIGKILL) as `target.name` is called and `when(args)` holds."""
    original = getattr(target, name)

    def wrapper(*args, **kwargs):
        if when(args):
            server.kill()
        return original(*args, **kwargs)

    setattr(target, name, wrapper)
    try:
        yield
    finally:
        setattr(target, name, original)


def test_registry_killed_before_the_tag_moves_leaves_nothing_half_moved(tmp_path, oci_image):
    with RegistryServer(tmp_path / "reg").start() as server:
        repo = f"{server.address}/crash"
        a = publish(oci_image, repo, "crash-a", smoke())
        b = publish(oci_image, repo, "crash-b", smoke())
        moves.promote(f"{repo}@{a}", TAG, access=env_access())

        # The pending history entry is written, then the registry dies as the tag is about to move.
        with killed_during(server, Registry, "tag_digest", lambda args: args[3] == TAG):
            with pytest.raises(RegistryError, match="not reachable"):
                moves.promote(f"{repo}@{b}", TAG, access=env_access())

        server.start()  # same storage, same port
        assert tag_digest(repo) == a
        entries = moves.history(f"{repo}:{TAG}", access=env_access())
        assert [(e.to, e.status) for e in entries] == [(a, "done"), (b, "failed")]
        # The dead attempt's lock was written from this host: the next run takes it over, no TTL wait.
        assert moves.promote(f"{repo}@{b}", TAG, access=env_access()).status == "done"
        assert tag_digest(repo) == b
        assert moves.rollback(f"{repo}:{TAG}", access=env_access()).to == a  # undoes the done promotion, not the failed one


def test_registry_killed_after_the_tag_moved_keeps_the_move_in_history(tmp_path, oci_image, capsys):
    with RegistryServer(tmp_path / "reg").start() as server:
        repo = f"{server.address}/crash"
        a = publish(oci_image, repo, "after-a", smoke())
        b = publish(oci_image, repo, "after-b", smoke())
        moves.promote(f"{repo}@{a}", TAG, access=env_access())
        # Kill as the entry is being marked done (the last history write of this promotion).
        with killed_during(server, moves, "append", lambda args: args[3].to == b and args[3].status == "done"):
            entry = moves.promote(f"{repo}@{b}", TAG, access=env_access())
        assert entry.status == "done"
        assert "could not record this promote as done" in capsys.readouterr().err

        server.start()
        assert tag_digest(repo) == b
        assert [(e.to, e.status) for e in moves.history(f"{repo}:{TAG}", access=env_access())] == [(a, "done"), (b, "done")]
        assert moves.rollback(f"{repo}:{TAG}", access=env_access()).to == a


def test_registry_down_is_one_clear_line(tmp_path):
    server = RegistryServer(tmp_path / "reg").start()
    address = server.address
    server.stop()
    result = gracectl("promote", f"{address}/x:b1", "--to", TAG)
    assert result.returncode == RegistryError.exit_code
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: registry {address} is not reachable")
    assert "gracectl testbed status" in result.stderr


def test_credentials_refused_cleanly_and_never_printed(auth_registry, oci_image, tmp_path):
    address, user, password = auth_registry
    repo = f"{address}/auth-test"
    image = oci_image("auth")

    missing = gracectl("publish", image, "--to", f"{repo}:b1")
    assert missing.returncode == RegistryError.exit_code and "requires credentials" in missing.stderr
    assert f"docker login {address}" in missing.stderr

    wrong = "wrong-" + password
    refused = gracectl("publish", image, "--to", f"{repo}:b1", "--username", user, "--password-stdin", input=wrong)
    assert refused.returncode == RegistryError.exit_code
    assert f"refused the credentials of user '{user}'" in refused.stderr
    assert wrong not in refused.stderr + refused.stdout

    # Right password on stdin: skopeo gets it through a temporary authfile, never on its command line.
    ok = gracectl("publish", image, "--to", f"{repo}:b1", "--username", user, "--password-stdin", "--json",
                  input=password)
    assert ok.returncode == 0, ok.stderr
    assert password not in ok.stderr + ok.stdout and "--authfile" in ok.stderr
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("gracectl-auth-*"))

    # From the docker config (what `docker login` writes): promote and history work without flags.
    import base64

    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    Path(os.environ["DOCKER_CONFIG"], "config.json").write_text(json.dumps({"auths": {address: {"auth": token}}}))
    digest = json.loads(ok.stdout)["digest"]
    put_record(repo, digest, "smoke", smoke(), registry=Registry(address, env_access()))
    promoted = gracectl("promote", f"{repo}:b1", "--to", TAG)
    assert promoted.returncode == 0, promoted.stderr
    assert gracectl("history", f"{repo}:{TAG}").returncode == 0


def test_a_floor_on_the_bandwidth_figure_holds_decode_sizes(repo, oci_image):
    """`promote --floor ratio_vs_hbm_peak=X`: the candidate's MoE rows must reach X of the GPU's HBM peak (the
    figure that means something at decode sizes, where the FLOP ratio is near 0)."""
    record = {"kind": "bench", "schema": 2, "timing": "gpu: CUDA-graph replay between CUDA events, L2 flushed",
              "gpu": {"name": "NVIDIA H200"}, "results": [
        {"name": "moe_mxfp4_gemm1_tokens16", "median_ms": 0.4, "ratio_vs_dense": 0.04, "ratio_vs_hbm_peak": 0.12},
        {"name": "moe_mxfp4_gemm1_tokens8192", "median_ms": 2.1, "ratio_vs_dense": 0.77, "ratio_vs_hbm_peak": 0.03}]}
    a = publish(oci_image, repo, "floor-a", smoke(), record)
    refused = gracectl("promote", f"{repo}@{a}", "--to", TAG, "--floor", "ratio_vs_hbm_peak=0.05")
    assert refused.returncode == PromotionRefusedError.exit_code
    assert "moe_mxfp4_gemm1_tokens8192: ratio_vs_hbm_peak 0.03 below the floor 0.05" in refused.stderr
    assert tag_digest(repo) is None
    bad = gracectl("promote", f"{repo}@{a}", "--to", TAG, "--floor", "speed=1")
    assert bad.returncode == UsageError.exit_code and "ratio_vs_hbm_peak" in bad.stderr
    decode = gracectl("promote", f"{repo}@{a}", "--to", TAG, "--floor", "ratio_vs_hbm_peak@16=0.2")
    assert decode.returncode == PromotionRefusedError.exit_code
    assert "moe_mxfp4_gemm1_tokens16: ratio_vs_hbm_peak 0.12 below the floor 0.2" in decode.stderr
    assert "tokens8192" not in decode.stderr  # a floor @16 holds only the 16-token rows
    ok = gracectl("promote", f"{repo}@{a}", "--to", TAG, "--floor", "ratio_vs_hbm_peak=0.02", "--floor",
                  "ratio_vs_dense=0.01", "--floor", "ratio_vs_hbm_peak@16=0.1")
    assert ok.returncode == 0, ok.stderr
