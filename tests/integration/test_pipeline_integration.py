"""`gracectl ci` push -> promote -> rollback -> archive against a REAL docker-registry, run the way Jenkins
runs them (one subprocess per stage, parameters in the environment, one work dir per run).

The build and smoke stages need dockerd, an arm64 build and a GPU (the rehearsal covers those); here their
outputs are made from a real OCI image and smoke.smoke_record, so everything from push on is real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gracectl import settings
from gracectl.image import smoke
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.registry import Registry
from gracectl.adapters.skopeo import skopeo_inspect_raw
from gracectl.image_ref import ImageRef

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))  # shared with the unit tests: a build's resolved inputs
from slsa_schema import resolved_for  # noqa: E402

pytestmark = pytest.mark.integration


def env_access() -> RegistryAccess:
    """What the CLI would build from this test's environment (the edge: gracectl.settings)."""
    return settings.registry_access(os.environ)


def ci(stage: str, workdir: Path, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("RELEASE", "PUSH", "PROMOTE", "ACTION", "BUILD_TAG")}
    return subprocess.run([sys.executable, "-m", "gracectl", "ci", stage, "--workdir", str(workdir)],
                          capture_output=True, text=True, env={**base, **env}, timeout=300)


def fake_build_and_smoke(workdir: Path, image: str, passed: bool = True) -> None:
    """What the build and smoke stages leave behind, for a real (OCI layout) image."""
    image_id = skopeo_inspect_raw(image, env_access())["config"]["digest"]
    outcome = "passed" if passed else "failed"
    record = smoke.smoke_record(image, image_id, "kernels", smoke.JunitResult(
        tests=[{"name": "test_kernels::test_moe", "outcome": outcome, "time": 1.0}]))
    plan = json.loads((workdir / "plan.json").read_text())["plan"]
    (workdir / "build-record.json").write_text(json.dumps(
        {"kind": "build", "image": image, "image_id": image_id, "stage": "build", "stage_status": "passed",
         "resolved": resolved_for(plan)}))  # what a real build records: the provenance of a signed push names it
    (workdir / "smoke-record.json").write_text(json.dumps(
        {**record, "stage": "smoke", "stage_status": "passed" if passed else "failed"}))


def tag_digest(moving: str) -> str | None:
    ref = ImageRef.parse(moving)
    found = Registry(ref.registry, env_access()).head_manifest(ref.repository, ref.tag)
    return found.digest if found else None


def test_push_promote_rollback_archive_through_ci(registry, oci_image, tmp_path):
    namespace = f"{registry}/ci-{uuid.uuid4().hex[:8]}"
    # The plan stage's release check before a build is tested by test_release_upstream.py and the rehearsal; this
    # test pushes OCI images of its own and needs no upstream.
    env = {"RELEASE": "v0.19.0-tfa", "REGISTRY": namespace, "PUSH": "true", "PROMOTE": "true",
           "GRACECTL_LOCK_DIR": str(tmp_path / "locks"), "GRACECTL_LOCK_SETTLE_S": "0.2",
           "GRACECTL_RELEASE_CHECK": "0"}
    digests = []
    for number, content in ((1, "first build"), (2, "second build")):
        run_env = {**env, "BUILD_NUMBER": str(number), "BUILD_TAG": f"jenkins-gracectl-{number}"}
        workdir = tmp_path / f"run-{number}"
        assert ci("plan", workdir, run_env).returncode == 0
        fake_build_and_smoke(workdir, oci_image(content))
        for stage in ("push", "promote", "archive"):
            done = ci(stage, workdir, run_env)
            assert done.returncode == 0, f"{stage}: {done.stderr[-2000:]}"
        pushed = json.loads((workdir / "push-record.json").read_text())
        moving = json.loads((workdir / "plan.json").read_text())["moving_tag"]
        assert pushed["ref"].startswith(f"{namespace}/gh200-vllm-tfa:v0.19.0-tfa-b{number}-")
        assert tag_digest(moving) == pushed["digest"]
        summary = json.loads((workdir / "summary.json").read_text())
        assert {k: v["status"] for k, v in summary["stages"].items()} == {
            "plan": "passed", "build": "passed", "smoke": "passed", "push": "passed", "promote": "passed"}
        digests.append(pushed["digest"])

    # A failed smoke in a third run: push refuses, the tag stays where it is.
    run_env = {**env, "BUILD_NUMBER": "3", "BUILD_TAG": "jenkins-gracectl-3"}
    workdir = tmp_path / "run-3"
    assert ci("plan", workdir, run_env).returncode == 0
    fake_build_and_smoke(workdir, oci_image("third build, broken"), passed=False)
    refused = ci("push", workdir, run_env)
    assert refused.returncode == 7 and "stage smoke failed" in refused.stderr
    assert ci("promote", workdir, run_env).returncode == 7
    assert tag_digest(moving) == digests[1]

    # ACTION=rollback from Jenkins: plan, rollback (undo the last promotion), archive.
    rollback_env = {**env, "ACTION": "rollback", "PUSH": "false", "PROMOTE": "false", "BUILD_TAG": "jenkins-gracectl-4"}
    workdir = tmp_path / "run-4"
    for stage in ("plan", "rollback", "archive"):
        done = ci(stage, workdir, rollback_env)
        assert done.returncode == 0, f"{stage}: {done.stderr[-2000:]}"
    assert tag_digest(moving) == digests[0]
    record = json.loads((workdir / "rollback-record.json").read_text())
    assert record["moved"] and record["history_entry"]["to"] == digests[0]


def test_cleanup_removes_only_this_runs_containers(tmp_path):
    """`gracectl ci cleanup` removes the containers labelled with its run id, and nothing else."""
    from gracectl.adapters import docker
    from gracectl.image.smoke import RUN_LABEL

    if not docker.answers():
        pytest.fail("no docker daemon answers: start the test bed (`gracectl testbed up`)")
    image = f"gracectl-test/cleanup-{uuid.uuid4().hex[:8]}"
    (tmp_path / "empty").write_text("")
    subprocess.run(["tar", "-C", str(tmp_path), "-cf", str(tmp_path / "rootfs.tar"), "empty"], check=True)
    docker.run(["import", str(tmp_path / "rootfs.tar"), image])
    run_id, other_id = f"jenkins-test-{uuid.uuid4().hex[:8]}", f"jenkins-other-{uuid.uuid4().hex[:8]}"
    created = {rid: docker.run(["create", "--label", f"{RUN_LABEL}={rid}", image, "/empty"]).stdout.strip()
               for rid in (run_id, other_id)}
    try:
        done = subprocess.run([sys.executable, "-m", "gracectl", "ci", "cleanup", "--workdir", str(tmp_path)],
                              capture_output=True, text=True, env={**os.environ, "GRACECTL_RUN_ID": run_id})
        assert done.returncode == 0, done.stderr
        assert "removed 1 container(s)" in done.stderr
        left = docker.run(["ps", "--all", "--quiet", "--no-trunc"]).stdout.split()
        assert created[run_id] not in left and created[other_id] in left
    finally:
        docker.run(["rm", "--force", *created.values()], check=False)
        docker.run(["rmi", image], check=False)
