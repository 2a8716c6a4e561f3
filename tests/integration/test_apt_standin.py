"""The base stage's CUDA packages and NCCL pin, run for real (linux/arm64 under qemu) against the test bed's STAND-IN
of NVIDIA's CUDA apt repository (gracectl.testbed.apt_standin), built here in a temporary folder and served on a
free port, so the shared test bed is not touched. The stand-in has NCCL's layout: two builds for this CUDA and a
newer one for another CUDA, as NVIDIA's repository has them.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import re
import threading
import uuid

import pytest

from gracectl.adapters import docker, proc
from gracectl.checkout import DOCKERFILE, REPO_ROOT
from gracectl.image.plan import Overrides, make_plan
from gracectl.releases.manifest import load_release
from gracectl.releases.mirrors import load_mirror
from gracectl.testbed.apt_standin import DECOY_NCCL, NCCL_VERSIONS, make_apt_repo, standin_packages

pytestmark = pytest.mark.integration
RELEASE = "v0.25.0-tfa"  # its recipe pins NCCL's +cuda13.0 build
# The stage FROM the runtime base: the one that installs the CUDA packages (found by what it is built FROM, so a
# rename of the stage does not break this test).
RUNTIME_STAGE = re.search(r"^FROM \$\{RUNTIME_BASE_IMAGE\} AS (\S+)", DOCKERFILE.read_text(), re.M).group(1)


@pytest.fixture()
def serve(tmp_path):
    """serve(packages) -> the sources line of a stand-in repository with `packages`, on a free port."""
    servers = []

    def start(packages: dict[str, list[str]]) -> str:
        root = make_apt_repo(tmp_path / f"apt-{len(servers)}", packages)
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"deb [trusted=yes] http://127.0.0.1:{server.server_address[1]}/ ./"

    yield start
    for server in servers:
        server.shutdown()


def release_plan(bed, apt_source: str = ""):
    """The release's plan on the test bed's mirror, its apt sources the one given (the packages the test bed
    maps, as its mirror file does, to the stand-in repository's)."""
    m = load_release(RELEASE)
    mirror = load_mirror(bed.mirror_path).model_copy(update={
        "packages": {p: p for p in m.cuda.runtime_packages}, "apt_sources": [apt_source] if apt_source else []})
    return make_plan(m, mirror=mirror, overrides=Overrides(build_number=9200, vllm_build="source"))


def build_runtime_stage(bed, apt_source: str) -> tuple[str, int, str]:
    """(image tag, exit code, output) of building the runtime stage of the release's plan with `apt_source`."""
    tag = f"gracectl-apt-standin:{uuid.uuid4().hex[:8]}"
    staged = dataclasses.replace(release_plan(bed, apt_source), target=RUNTIME_STAGE)
    args, env = staged.build_command(tags=[tag])
    done = proc.run(docker.command(args), env=env, cwd=REPO_ROOT, check=False)
    return tag, done.returncode, done.stdout + done.stderr


def test_the_cuda_packages_and_this_cudas_newest_nccl_come_from_the_mirrors_apt_sources(bed, serve):
    plan = release_plan(bed)
    suffix = plan.build_args["NCCL_APT_SUFFIX"]
    cuda = [p for p in plan.build_args["CUDA_RUNTIME_PACKAGES"].split() if not p.startswith("libnccl")]
    assert suffix == "+cuda13.0" and cuda, plan.build_args  # the test bed maps the packages to the stand-in's
    source = serve(standin_packages(set(plan.build_args["CUDA_RUNTIME_PACKAGES"].split()), {suffix}))
    tag, code, output = build_runtime_stage(bed, source)
    try:
        assert code == 0, output[-3000:]
        listed = docker.run(["run", "--rm", "--entrypoint", "sh", tag, "-c",
                             "dpkg-query -W -f '${Package}=${Version}\\n' libnccl2 libnccl-dev " + " ".join(cuda)
                             + "; ls /etc/apt/sources.list.d/"]).stdout.split()
    finally:
        docker.run(["rmi", "-f", tag], check=False)
    newest = f"{NCCL_VERSIONS[-1]}{suffix}"
    assert f"libnccl2={newest}" in listed and f"libnccl-dev={newest}" in listed, listed
    assert not any(DECOY_NCCL in line for line in listed), listed  # not the newest of ANY CUDA
    assert all(any(line.startswith(f"{p}=") for line in listed) for p in cuda), listed
    assert "gracectl-mirror.list" not in listed  # the site's mirror is not named in the image


def test_a_mirror_without_this_cudas_nccl_build_fails_the_build_saying_so(bed, serve):
    plan = release_plan(bed)
    packages = standin_packages(set(plan.build_args["CUDA_RUNTIME_PACKAGES"].split()), {"+cuda12.9"})
    tag, code, output = build_runtime_stage(bed, serve(packages))
    docker.run(["rmi", "-f", tag], check=False)
    assert code != 0 and "error: no libnccl-dev build +cuda13.0 in the apt sources" in output, output[-3000:]
