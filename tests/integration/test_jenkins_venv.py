"""The pipeline's stages from a venv made EXACTLY as the Jenkinsfile makes it (its `prepare` step's command,
read from the Jenkinsfile, run in a copy of this checkout): no test extra, nothing from the developer's venv.

A GH200 agent has what `pip install --editable .` brings and the node's own programs; the plan stage runs
hadolint, so it must come with gracectl. pip's downloads are cached in the test bed's state dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from gracectl.testbed import state_dir
from gracectl.testbed.upstream import upstream_cache

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def jenkins_venv_command() -> str:
    """The `sh '...'` of the Jenkinsfile that makes ./.venv."""
    found = re.findall(r"sh '(python3 -m venv \.venv[^']*)'", (REPO / "Jenkinsfile").read_text())
    assert len(found) == 1, f"expected one venv command in the Jenkinsfile, found {found}"
    return found[0]


def system_path() -> str:
    """PATH without any virtualenv's bin (the developer's .venv has the test extra)."""
    return os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if p and not (Path(p) / "activate").exists() and ".venv" not in p)


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> tuple[Path, dict]:
    """(checkout, env) of a Jenkins agent after prepare(): a copy of the checkout with its ./.venv."""
    checkout = tmp_path_factory.mktemp("agent") / "workspace"
    subprocess.run(["git", "clone", "-q", str(REPO), str(checkout)], check=True)  # Jenkins' checkout: a clone
    changed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--modified", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, changed):  # what is not committed yet: the clone is of the tree under test
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env.update(PATH=system_path(), PIP_CACHE_DIR=str(state_dir() / "pip-cache"))
    done = subprocess.run(["sh", "-c", jenkins_venv_command()], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    env["PATH"] = f"{checkout / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"  # the Jenkinsfile's stage PATH
    for name in ("RELEASE", "ACTION", "PUSH", "PROMOTE", "REGISTRY", "BUILD_TAG", "GRACECTL_MIN_FREE_GB"):
        env.pop(name, None)
    return checkout, env


def test_the_venv_has_gracectl_and_hadolint_but_not_the_test_extra(agent):
    checkout, env = agent
    venv_bin = checkout / ".venv" / "bin"
    assert shutil.which("gracectl", path=env["PATH"]) == str(venv_bin / "gracectl")
    assert shutil.which("hadolint", path=env["PATH"]) == str(venv_bin / "hadolint")
    assert not (venv_bin / "pytest").exists()  # exactly `pip install --editable .`: no extras


def test_plan_stage_runs_from_the_jenkins_venv(agent, bed, tmp_path):
    checkout, env = agent
    done = subprocess.run(["gracectl", "ci", "plan", "--workdir", str(tmp_path)], cwd=checkout,
                          env={**env, "RELEASE": "v0.19.0-tfa", "VLLM_BUILD": "source", "ACTION": "build", "BUILD_NUMBER": "7",
                               "GRACECTL_MIRROR": str(bed.mirror_path),
                               "GRACECTL_UPSTREAM_CACHE": str(upstream_cache(bed.root))},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # the release check ran before any build: the pairing of the site-packages triton_kernels, through the mirror
    assert "release check v0.19.0-tfa: ok       pairing.site-packages v3.6.0" in done.stderr
    assert f"+ {checkout / '.venv' / 'bin' / 'hadolint'} vllm/Dockerfile" in done.stderr  # the venv's hadolint ran
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["stage_status"] == "passed" and plan["plan"]["dockerfile"].endswith("vllm/Dockerfile")


def test_doctor_from_the_jenkins_venv_on_the_test_bed(agent, bed):
    """The gh200 node's doctor as the Jenkinsfile runs it, on the test bed (CPU: GRACECTL_SMOKE_GPUS=none)."""
    checkout, env = agent
    registry = f"127.0.0.1:{bed.state.registry_port}/gracectl"
    args = ["gracectl", "doctor", "--stage", "plan", "--stage", "build", "--stage", "smoke", "--stage", "push"]
    done = subprocess.run(args, cwd=checkout, capture_output=True, text=True, timeout=300,
                          env={**env, "RELEASE": "v0.19.0-tfa", "PUSH": "true", "REGISTRY": registry,
                               "GRACECTL_SMOKE_GPUS": "none", "GRACECTL_MIN_FREE_GB": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    status = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines() if line.split()[0] != "doctor:"}
    assert status == {"git": "ok", "hadolint": "ok", "docker": "ok", "buildkit": "ok", "nvidia-runtime": "skipped",
                      "gpu": "skipped", "driver": "skipped", "disk": "ok", "skopeo": "ok", "registry": "ok"}


@pytest.mark.slow
def test_gh200_node_stages_run_from_the_jenkins_venv(agent, bed, tmp_path):
    """plan -> build (linux/arm64, qemu) -> smoke (imports, no GPU) -> push -> archive, one `gracectl ci` each, as
    the gh200 node runs them; no promote, so no tag moves (a fresh build number: build tags are immutable)."""
    checkout, env = agent
    env = {**env, "RELEASE": "v0.19.0-tfa", "VLLM_BUILD": "source", "ACTION": "build", "PUSH": "true", "REGISTRY": bed.state.registry,
           "GRACECTL_MIRROR": str(bed.mirror_path), "SMOKE_LEVEL": "imports", "GRACECTL_SMOKE_GPUS": "none",
           "BUILD_NUMBER": str(int(time.time())), "GRACECTL_RUN_ID": f"jenkins-venv-{os.getpid()}"}
    for stage in ("plan", "build", "smoke", "push", "archive"):
        done = subprocess.run(["gracectl", "ci", stage, "--workdir", str(tmp_path)], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"ci {stage}: {done.stderr[-3000:]}"
    summary = json.loads((tmp_path / "summary.json").read_text())["stages"]
    assert {name: s["status"] for name, s in summary.items()} == dict.fromkeys(("plan", "build", "smoke", "push"),
                                                                               "passed")
    pushed = json.loads((tmp_path / "push-record.json").read_text())
    assert pushed["digest"].startswith("sha256:") and pushed["smoke_passed"] is True
