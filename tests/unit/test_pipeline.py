"""gracectl.pipeline.stages and `gracectl ci`: parameters from the environment, the stage gates on the work dir
(a failed or missing earlier output stops every later stage), and the real plan stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gracectl.adapters.registry_access import RegistryAccess
from gracectl.pipeline import stages
from gracectl.errors import PromotionRefusedError, UsageError
from gracectl.pipeline.stages import Params, run_stage

REGISTRY = "registry.example:5000/gracectl"


def gracectl(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {k: v for k, v in os.environ.items() if k not in Params.ENV and k != "BUILD_TAG"}
    return subprocess.run([sys.executable, "-m", "gracectl", *args], capture_output=True, text=True,
                          env={**full_env, **(env or {})}, cwd=cwd, timeout=120)


def write_output(workdir: Path, stage: str, status: str, **fields) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / stages.stage(stage).output).write_text(json.dumps({"stage": stage, "stage_status": status, **fields}))


def test_params_from_jenkins_environment():
    env = {"RELEASE": "v0.19.0-tfa", "ACTION": "build", "PUSH": "true", "PROMOTE": "false", "BUILD_NUMBER": "17",
           "REGISTRY": REGISTRY, "SMOKE_LEVEL": "all", "VLLM_REF": "", "BUILD_TAG": "jenkins-gracectl-17"}
    p = Params.from_env(env)
    assert (p.push, p.promote, p.build_number, p.smoke_level, p.vllm_ref) == (True, False, 17, "all", "")
    assert p.run_id == "jenkins-gracectl-17"  # Jenkins' BUILD_TAG labels the run's containers
    assert Params.from_env(env, smoke_level="imports", push=False).smoke_level == "imports"  # options win
    assert [s.name for s in stages.stages_for(p)] == ["plan", "build", "smoke", "push", "archive"]
    rollback = Params.from_env({**env, "ACTION": "rollback"})
    assert [s.name for s in stages.stages_for(rollback)] == ["plan", "rollback", "archive"]


@pytest.mark.parametrize("env, message", [
    ({}, "no release given"),
    ({"RELEASE": "v0.19.0", "ACTION": "deploy"}, "ACTION must be one of build, rollback"),
    ({"RELEASE": "v0.19.0", "SMOKE_LEVEL": "gpu"}, "SMOKE_LEVEL must be one of"),
    ({"RELEASE": "v0.19.0", "PUSH": "maybe"}, "expected true or false"),
    ({"RELEASE": "v0.19.0", "BUILD_NUMBER": "x"}, "BUILD_NUMBER must be a number"),
    ({"RELEASE": "v0.19.0", "PROMOTE": "true", "REGISTRY": REGISTRY}, "PROMOTE needs PUSH"),
    ({"RELEASE": "v0.19.0", "PUSH": "true"}, "need a registry"),
])
def test_bad_parameters_are_one_line_errors(env, message):
    with pytest.raises(UsageError, match=message):
        Params.from_env(env)


def test_stage_refuses_when_its_input_is_missing(tmp_path):
    with pytest.raises(UsageError, match=r"plan.json is missing: run `gracectl ci plan` first"):
        run_stage("build", Params(release="v0.19.0"), tmp_path, RegistryAccess(), None)
    assert not (tmp_path / "build-record.json").exists()


def test_nothing_follows_a_failed_smoke(tmp_path):
    params = Params(release="v0.19.0-tfa", push=True, promote=True, registry=REGISTRY)
    write_output(tmp_path, "plan", "passed", build_tag="b", moving_tag="m", run_id="r")
    write_output(tmp_path, "build", "passed", image="img", image_id="sha256:" + "a" * 64)
    write_output(tmp_path, "smoke", "failed", passed=False, stage_error="smoke level kernels failed: test_moe")
    for stage in ("push", "promote"):
        with pytest.raises(PromotionRefusedError, match=r"stage smoke failed \(smoke level kernels failed"):
            run_stage(stage, params, tmp_path, RegistryAccess(), None)
    # A push output left over from an earlier run does not let promote through: promote needs smoke too.
    write_output(tmp_path, "push", "passed", ref="r", digest="sha256:" + "b" * 64)
    with pytest.raises(PromotionRefusedError, match="stage smoke failed"):
        run_stage("promote", params, tmp_path, RegistryAccess(), None)
    assert not (tmp_path / "promote-record.json").exists()


def test_a_builders_push_is_pushed_only_when_its_smoke_ran_that_very_digest(tmp_path):
    """The split layout: the build record names the digest the builder pushed; a smoke record of anything else (an
    older pull, a local image of the same name) never lets the push stage tag it, and nothing is written."""
    params = Params(release="v0.19.0-tfa", push=True, registry=REGISTRY, builder="agents")
    assert stages.by_digest(params) and not stages.by_digest(Params(release="v0.19.0-tfa", builder="agents"))
    pushed = f"{REGISTRY}/gh200-vllm-tfa@sha256:" + "c" * 64
    write_output(tmp_path, "plan", "passed", build_tag=f"{REGISTRY}/gh200-vllm-tfa:b1", moving_tag="m", run_id="r")
    write_output(tmp_path, "build", "passed", image=f"{REGISTRY}/gh200-vllm-tfa:b1", image_id="", pushed=pushed,
                 digest="sha256:" + "c" * 64)
    for other in (f"{REGISTRY}/gh200-vllm-tfa@sha256:" + "d" * 64, f"{REGISTRY}/gh200-vllm-tfa:b1"):
        write_output(tmp_path, "smoke", "passed", passed=True, image=other, image_id="sha256:" + "e" * 64)
        with pytest.raises(PromotionRefusedError, match=f"the smoke record is of {other}, the build pushed {pushed}"):
            run_stage("push", params, tmp_path, RegistryAccess(), None)
    assert json.loads((tmp_path / "push-record.json").read_text())["stage_status"] == "failed"


def test_output_without_passed_status_counts_as_failed(tmp_path):
    write_output(tmp_path, "plan", "passed")
    (tmp_path / "build-record.json").write_text(json.dumps({"kind": "build", "status": "built"}))  # no stage_status
    with pytest.raises(UsageError, match="stage build failed"):
        run_stage("smoke", Params(release="v0.19.0"), tmp_path, RegistryAccess(), None)
    (tmp_path / "build-record.json").write_text("{not json")
    with pytest.raises(UsageError, match="unreadable"):
        run_stage("smoke", Params(release="v0.19.0"), tmp_path, RegistryAccess(), None)


def test_ci_plan_stage_for_real(tmp_path):
    """`gracectl ci plan` with Jenkins' environment: plan.json, the moving tag for the lock, lint passed;
    a later stage run with other parameters is refused (the run must be one plan)."""
    # No release check here (it reads the release's sources and triton_kernels from the network): the test bed's
    # rehearsal and tests/integration/test_release_upstream.py run the plan stage with it.
    env = {"RELEASE": "v0.19.0-tfa", "BUILD_NUMBER": "7", "REGISTRY": REGISTRY, "PUSH": "true",
           "BUILD_TAG": "jenkins-gracectl-7", "GRACECTL_RELEASE_CHECK": "0"}
    stale = ["rollback-record.json", "smoke-junit.xml", "build.log", "summary.json"]  # an earlier run's files
    for name in stale + ["notes.txt"]:
        (tmp_path / name).write_text("old")
    done = gracectl("ci", "plan", "--workdir", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["stage_status"] == "passed" and plan["run_id"] == "jenkins-gracectl-7"
    assert plan["moving_tag"] == f"{REGISTRY}/gh200-vllm-tfa:v0.19.0-tfa"
    assert plan["build_tag"].startswith(f"{REGISTRY}/gh200-vllm-tfa:v0.19.0-tfa-b7-")
    assert (tmp_path / stages.MOVING_TAG_FILE).read_text().strip() == plan["moving_tag"]
    assert "hadolint" in done.stderr  # the Dockerfile was linted
    assert not any((tmp_path / name).exists() for name in stale)  # a new run starts clean...
    assert (tmp_path / "notes.txt").exists()  # ...and removes only the files the stages write

    other = gracectl("ci", "build", "--workdir", str(tmp_path), "--build-number", "8", env=env)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1].startswith("error: these parameters give ")


def test_ci_exit_codes_are_one_line(tmp_path):
    write_output(tmp_path, "plan", "passed", build_tag="b", moving_tag="m", run_id="r")
    write_output(tmp_path, "smoke", "failed", stage_error="no test passed")
    write_output(tmp_path, "push", "passed")
    done = gracectl("ci", "promote", "--workdir", str(tmp_path),
                    env={"RELEASE": "v0.19.0", "REGISTRY": REGISTRY, "PUSH": "1", "PROMOTE": "1"})
    assert done.returncode == PromotionRefusedError.exit_code
    assert done.stderr.strip().splitlines()[-1] == ("error: ci promote: stage smoke failed (no test passed): "
                                                    "refusing to continue")
    bad = gracectl("ci", "plan", "--workdir", str(tmp_path), env={"RELEASE": "v9.9.9"})
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown release 'v9.9.9'")


def test_ci_stages_json():
    done = gracectl("ci", "stages", "--json", env={"RELEASE": "v0.19.0", "ACTION": "rollback", "REGISTRY": REGISTRY})
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["name"] for r in rows] == [s.name for s in stages.STAGES]
    assert [r["name"] for r in rows if r["runs"]] == ["plan", "rollback", "archive"]
    assert all(r["command"] == f"gracectl ci {r['name']}" for r in rows)
    assert {r["name"] for r in rows if r["moves_tag"]} == {"promote", "rollback"}
    assert json.loads(gracectl("ci", "stages", "--json").stdout)[0]["runs"] is None  # no parameters: order only


def test_cleanup_needs_a_run_id(tmp_path):
    done = gracectl("ci", "cleanup", "--workdir", str(tmp_path))
    assert done.returncode == 2 and "needs the run id" in done.stderr
