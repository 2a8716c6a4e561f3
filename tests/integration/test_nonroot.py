"""The vllm-openai-nonroot target for real: `gracectl build --target vllm-openai-nonroot` on the test bed (linux/arm64
under qemu), on top of the fallback release's image that test_smoke_image.py builds with the same arguments (so only
the last stage is new), run as its default user: uid 2000, gid 0, the venv and the smoke suite readable, a writable
home, `import vllm` and the imports smoke level passing as that user, and the entrypoint reaching `vllm serve` (the
test bed's STAND-IN vLLM answers it with its refusal: it serves no model).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gracectl.adapters import docker
from gracectl.image.build import read_record
from gracectl.checkout import REPO_ROOT
from gracectl.image.plan import plan_for

pytestmark = pytest.mark.integration
RELEASE = "v0.19.0"
TARGET = "vllm-openai-nonroot"


def gracectl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gracectl", *args], capture_output=True, text=True,
                          timeout=1500, cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def nonroot(bed, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("nonroot")
    # The stand-in stack builds vLLM from source (its index has no vLLM wheel).
    done = gracectl("build", RELEASE, "--vllm-build", "source", "--target", TARGET, "--mirror", str(bed.mirror_path),
                    "--build-number", "9100", "--record", str(out / "build.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    return read_record(out / "build.json")


def test_the_nonroot_image_is_the_release_run_as_uid_2000_gid_0(bed, nonroot):
    plan = plan_for(RELEASE, bed.mirror_path, build_number=9100, target=TARGET, vllm_build="source")
    assert nonroot["image"] == plan.build_tag and ":v0.19.0-nonroot-b9100-" in plan.build_tag
    assert nonroot["target"] == TARGET and TARGET in nonroot["stages"]
    config = docker.inspect_image(nonroot["image_id"])["Config"]
    assert config["User"] == "2000:0" and config["Entrypoint"] == ["/usr/local/bin/vllm-nonroot-entrypoint"]
    # The release's labels, given by the plan's build command to whichever target it builds.
    assert config["Labels"]["io.gracectl.release"] == RELEASE
    assert {k: config["Labels"].get(k) for k in plan.labels} == plan.labels
    # As its default user (no --user): who it is, its home, what it cannot read, and vLLM imported.
    script = ('id -u; id -g; id -un; echo "$HOME"; pwd; touch "$HOME/.cache/probe" && echo home-writable; '
              'find /opt/venv /opt/gracectl \\( ! -readable -o -type d ! -executable \\) -print | head -5; '
              'python -c "import vllm; print(\'vllm\', vllm.__version__)"')
    out = docker.run(["run", "--rm", "--entrypoint", "sh", nonroot["image_id"], "-c", script]).stdout.splitlines()
    assert out[:6] == ["2000", "0", "vllm", "/home/vllm", "/home/vllm", "home-writable"], out
    assert out[6:] == ["vllm 0.19.0"], f"unreadable for uid 2000, or vLLM failed: {out[6:]}"


def test_the_imports_smoke_level_passes_as_uid_2000(nonroot, tmp_path):
    record = tmp_path / "smoke.json"
    done = gracectl("smoke", nonroot["image"], "--level", "imports", "--gpus", "none", "--record", str(record),
                    "--junit", str(tmp_path / "junit.xml"))
    assert done.returncode == 0, done.stderr[-3000:]
    rec = json.loads(record.read_text())
    assert rec["passed"] is True and rec["level"] == "imports" and rec["counts"]["passed"] > 0


def test_the_entrypoint_reaches_vllm_serve_as_uid_2000_and_as_any_uid_of_group_0(nonroot):
    for user in ([], ["--user", "1000540000:0"]):  # its own user; OpenShift's arbitrary uid, named nowhere
        served = docker.run(["run", "--rm", *user, nonroot["image_id"], "--model", "tiny"], check=False)
        assert served.returncode == 2 and "STAND-IN vLLM; it serves no model" in served.stderr, (user, served.stderr)
    # What that uid's `vllm serve` is given: a writable home of group 0 and a user name (a `vllm` on PATH that says).
    script = ('mkdir /tmp/b && printf "#!/bin/sh\\necho \\"\\$HOME \\$USER \\$*\\"\\n" > /tmp/b/vllm && chmod +x /tmp/b/vllm '
              '&& PATH=/tmp/b:$PATH exec /usr/local/bin/vllm-nonroot-entrypoint --model tiny')
    said = docker.run(["run", "--rm", "--user", "1000540000:0", "-e", "HOME=/", "--entrypoint", "sh",
                       nonroot["image_id"], "-c", script]).stdout.strip()
    assert said == "/home/vllm vllm serve --model tiny"
