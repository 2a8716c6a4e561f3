"""The test bed against its real components: dockerd, docker-registry, qemu/binfmt, git daemon, package index.

`bed` brings the test bed up (a no-op when `gracectl testbed up` ran before, as in scripts/test.sh).
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile

import pytest

from gracectl.adapters import docker, proc
from gracectl.releases.mirrors import load_mirror
from gracectl.image.plan import plan_for
from gracectl.testbed import Testbed
from gracectl.testbed.base_images import ARCHES
from gracectl.testbed.processes import free_port, pid_alive
from gracectl.testbed.standins import STANDIN_REPOS

pytestmark = pytest.mark.integration


def skopeo_raw(ref: str) -> dict:
    out = proc.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"]).stdout
    return json.loads(out)


def skopeo_config(ref: str) -> dict:
    out = proc.run(["skopeo", "inspect", "--config", "--tls-verify=false", f"docker://{ref}"]).stdout
    return json.loads(out)


def test_second_up_changes_nothing(bed):
    before = json.loads((bed.root / "state.json").read_text())
    mirror = bed.mirror_path.read_text()
    start = time.monotonic()
    Testbed().up()
    assert time.monotonic() - start < 30, "a second `up` must not rebuild anything"
    assert json.loads((bed.root / "state.json").read_text()) == before
    assert bed.mirror_path.read_text() == mirror


@pytest.mark.parametrize("flavour", ["runtime-base", "build-base"])
def test_base_images_are_multi_arch_indexes_with_the_right_platforms(bed, flavour):
    ref = bed.state.base_image(flavour)
    index = skopeo_raw(ref)
    platforms = sorted(m["platform"]["architecture"] for m in index["manifests"])
    assert platforms == sorted(ARCHES)
    for arch in ARCHES:
        config = skopeo_config(f"{ref}-{arch}")
        assert config["architecture"] == arch, f"{ref}-{arch} says {config['architecture']}"


def test_arm64_image_runs_under_qemu(bed):
    out = docker.run(["run", "--rm", "--platform", "linux/arm64", f"{bed.state.base_image('runtime-base')}-arm64",
                      "sh", "-c", "uname -m; python3 -c 'import sys; print(sys.version_info[:2])'"]).stdout
    assert out.split() == ["aarch64", "(3,", "11)"]


def test_git_daemon_serves_tags_and_fetch_by_commit(bed, tmp_path):
    mirror = load_mirror(bed.mirror_path)
    vllm = mirror.repo("https://github.com/vllm-project/vllm.git")
    refs = proc.run(["git", "ls-remote", vllm]).stdout
    assert f"{bed.state.repos['https://github.com/vllm-project/vllm.git']['v0.19.0']}\trefs/tags/v0.19.0" in refs
    triton = mirror.repo("https://github.com/triton-lang/triton.git")
    assert "refs/tags/v3.6.0" in proc.run(["git", "ls-remote", triton]).stdout
    # flash-attention is pinned upstream by a commit: the mirror maps it, and the commit is fetchable by SHA
    upstream = "29210221863736a08f71a866459e368ad1ac4a95"
    commit = mirror.ref(upstream)
    assert commit != upstream
    work = tmp_path / "fa"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    fetched = subprocess.run(["git", "-C", str(work), "fetch", "-q", "--depth", "1",
                              mirror.repo("https://github.com/vllm-project/flash-attention.git"), commit],
                             capture_output=True, text=True)
    assert fetched.returncode == 0, fetched.stderr


def test_index_serves_stand_in_wheels_and_real_ones(bed):
    url = load_mirror(bed.mirror_path).index("https://download.pytorch.org/whl/cu129")
    page = urllib.request.urlopen(f"{url}/torch/", timeout=5).read().decode()
    # The PyTorch index's name for it: the +cu129 local version the manifest pins.
    assert "torch-2.10.0+cu129-py3-none-any.whl#sha256=" in page
    wheel = urllib.request.urlopen(f"{url}/torch/torch-2.10.0%2Bcu129-py3-none-any.whl", timeout=5).read()
    metadata = zipfile.ZipFile(io.BytesIO(wheel)).read("torch-2.10.0+cu129.dist-info/METADATA").decode()
    assert "Summary: STAND-IN for torch 2.10.0+cu129" in metadata
    pytest_page = urllib.request.urlopen(f"{url}/pytest/", timeout=5).read().decode()
    assert "pytest-8.3.5-py3-none-any.whl" in pytest_page
    # Triton is the real release, for both architectures: the images compile Triton's C stub with it.
    triton_page = urllib.request.urlopen(f"{url}/triton/", timeout=5).read().decode()
    for arch in ("aarch64", "x86_64"):
        assert re.search(rf"triton-3\.6\.0-cp311-cp311-manylinux_2_27_{arch}[^\"]*\.whl#sha256=", triton_page), arch


def test_mirror_file_maps_every_fetched_input_of_both_releases(bed):
    """0.19.0's pair builds from source on the stand-in stack: every input it fetches is on the test bed (later
    releases' new cmake sources have no stand-ins; the test bed builds those in wheel mode only)."""
    upstream_hosts = ("github.com", "nvcr.io", "pypi.org", "download.pytorch.org", "flashinfer.ai", "nvidia.com")
    fetched = ("BUILD_BASE_IMAGE", "RUNTIME_BASE_IMAGE", "PIP_INDEX_URL", "TORCH_INDEX_URL", "TRITON_REPO",
               "TRITON_REF", "TRITON_KERNELS_REPO", "TRITON_KERNELS_REF", "FLASH_ATTN_REPO", "FLASH_ATTN_REF",
               "FLASHMLA_REPO", "FLASHMLA_REF", "CMAKE_SOURCES", "DEEPGEMM_REPO", "DEEPGEMM_REF", "VLLM_REPO",
               "VLLM_REF", "FLASHINFER_INDEX_URL", "FLASHINFER_CUBINS_URL")
    for release in ("v0.19.0-tfa", "v0.19.0"):
        plan = plan_for(release, bed.mirror_path)
        for arg in fetched:
            value = plan.build_args[arg]
            assert not any(h in value for h in upstream_hosts), f"{release}: {arg}={value} is not mirrored"
        assert plan.build_args["PYTHON_VERSION"] == "3.11"
        assert plan.build_network == "host"
    assert set(STANDIN_REPOS) <= set(load_mirror(bed.mirror_path).repos)


def test_registry_port_in_use_is_a_one_line_error(tmp_path):
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        done = subprocess.run([sys.executable, "-m", "gracectl", "testbed", "up", "--registry-port", str(port)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "GRACECTL_STATE_DIR": str(tmp_path / "bed")})
    assert done.returncode == 10, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: port {port} on 127.0.0.1 is in use: stop what listens there or pick another port "
                      f"(`ss -ltnp 'sport = :{port}'` shows it)"]
    assert "Traceback" not in done.stderr


def test_down_stops_only_what_up_started(tmp_path):
    """A second, partial test bed (registry, git daemon, index on free ports) in its own state dir."""
    bed = Testbed(tmp_path / "bed")
    bed.state.registry_port, bed.state.git_port, bed.state.index_port = free_port(), free_port(), free_port()
    bed.start_registry()
    bed.make_repos()
    bed.start_git_daemon()
    bed.make_index()
    bed.start_index()
    status = bed.status()["components"]
    pids = {name: status[name]["pid"] for name in ("registry", "git-daemon", "index")}
    assert all(status[name]["running"] for name in pids), status
    assert status["dockerd"]["started_by_testbed"] is False  # dockerd was already running: not ours
    stopped = Testbed(tmp_path / "bed").down()
    assert sorted(s.split(" (")[0] for s in stopped) == ["git-daemon", "index", "registry"]
    assert not any(pid_alive(pid, prog) for pid, prog in ((pids["registry"], "docker-registry"),
                                                         (pids["git-daemon"], "git"), (pids["index"], "python")))
    assert docker.answers(), "down must not stop a dockerd the test bed did not start"
    assert Testbed(tmp_path / "bed").down() == []
