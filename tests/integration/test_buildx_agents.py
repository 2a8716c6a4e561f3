"""Builds through a buildx builder of two remote BuildKit daemons, for real: each buildkitd in its own network
namespace with its own address (gracectl.testbed.build_agents), joined into one builder with `docker buildx create
--driver remote` and `--append`. buildx and buildkitd are the ones scripts/go-tools.sh built from their Go modules.

The same stand-in release is built twice through the builder with the registry cache (`mode=max`): first on agent
A, then - A gone and out of the builder, as a build host taken away - on agent B, which takes its steps from the
cache A exported.
Both push by digest (no `--load`): an OCI index naming the image's platform, so a pull for another platform is
refused by the real dockerd with the real registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from gracectl.adapters import docker
from gracectl.image.build import read_record
from gracectl.image.plan import REPO_ROOT, plan_for
from gracectl.pipeline.workdir import OUTPUTS
from gracectl.testbed.build_agents import BuildAgents
from gracectl.testbed.registry_server import RegistryServer
from gracectl.testbed.upstream import upstream_cache
from test_signing import go_tool

pytestmark = pytest.mark.integration
RELEASE = "v0.19.0-tfa"
BUILDER = "gracectl-test-agents"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture(scope="module")
def docker_env(tmp_path_factory) -> dict[str, str]:
    """A DOCKER_CONFIG of the test's own: buildx (go-tools' build) as its CLI plugin, and the builders it makes
    kept there, not in the machine's ~/.docker."""
    config = tmp_path_factory.mktemp("docker-config")
    (config / "cli-plugins").mkdir()
    (config / "cli-plugins" / "docker-buildx").symlink_to(go_tool("docker-buildx", "DOCKER_BUILDX"))
    return {"DOCKER_CONFIG": str(config)}


@pytest.fixture(scope="module")
def agents(bed, docker_env):
    """The two agents and their builder, and a registry of their own (a real docker-registry) that the builds push
    to and export their cache to; base images come from the test bed's registry."""
    buildkitd = go_tool("buildkitd", "BUILDKITD")
    # The agents' state and that registry on a tmpfs (12 GB at most; the first agent's build holds ~4 GB): built
    # layers and caches of every run never pile up on the machine's disk.
    found = BuildAgents(bed.root / "build-agents", registries=[bed.state.registry], buildkitd=buildkitd,
                        env=docker_env, tmpfs_gb=12)
    try:
        found.mount()
        with RegistryServer(found.root / "registry").start() as server:
            found.registries.append(server.address)
            found.up()
            found.builder(BUILDER)
            found.registry = server.address
            yield found
            found.remove_builder(BUILDER)
    finally:
        found.down()


def gracectl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gracectl", *args], capture_output=True, text=True, timeout=3000,
                          cwd=REPO_ROOT, env={**os.environ, **env})


@pytest.fixture(scope="module")
def builds(bed, agents, docker_env, tmp_path_factory):
    """(first record, second record, registry namespace): the release built on agent A, then on agent B."""
    out = tmp_path_factory.mktemp("buildx-builds")
    # A namespace of this run's own: its cache ref is empty, so the first build is cold and B's hits are A's.
    registry = f"{agents.registry}/buildx-{uuid.uuid4().hex[:8]}"
    common = [RELEASE, "--vllm-build", "source", "--mirror", str(bed.mirror_path), "--registry", registry,
              "--builder", BUILDER, "--push", "--registry-cache"]
    first = gracectl("build", *common, "--build-number", "1", "--record", str(out / "first.json"), env=docker_env)
    assert first.returncode == 0, first.stderr[-3000:]
    # Agent A goes away and leaves the builder (buildx would wait on a dead first node): the next build lands on B.
    agents.stop(agents.agents[0])
    agents.leave(BUILDER, agents.agents[0])
    second = gracectl("build", *common, "--build-number", "2", "--record", str(out / "second.json"), env=docker_env)
    assert second.returncode == 0, second.stderr[-3000:]
    return read_record(out / "first.json"), read_record(out / "second.json"), registry


def test_doctor_and_plan_name_the_builder(agents, docker_env):
    """First in the module: the builds below take agent A out of the builder."""
    doctor = gracectl("doctor", "--stage", "build", "--builder", BUILDER, env={**docker_env,
                                                                             "GRACECTL_MIN_FREE_GB": "0"})
    line = next(line for line in doctor.stdout.splitlines() if " buildkit " in f" {line} ")
    assert line.startswith("ok") and f"buildx builder {BUILDER}: driver remote" in line, doctor.stdout
    assert all(f"{a.name} ({a.endpoint})" in line for a in agents.agents), line
    plan = gracectl("plan", RELEASE, "--builder", BUILDER, env=docker_env)
    assert f"builder buildx builder {BUILDER}" in plan.stdout
    assert f"docker buildx build --builder {BUILDER}" in plan.stdout.replace("\n", " ")


def steps(record: dict) -> tuple[int, int]:
    """(cached, total) steps of a build, from BuildKit's plain progress (gracectl.image.build.BuildProgress)."""
    stages = record["stages"].values()
    return sum(s["cached"] for s in stages), sum(s["steps"] for s in stages)


def test_the_second_agent_builds_the_release_from_the_first_ones_cache(builds, agents, record_property):
    first, second, _ = builds
    a, b = agents.agents
    assert (first["node"], second["node"]) == (a.name, b.name)
    assert first["builder"] == second["builder"] == f"buildx builder {BUILDER}"
    cached_a, total_a = steps(first)
    cached_b, total_b = steps(second)
    print(f"\nagent {a.name}: {cached_a} of {total_a} steps cached, {first['seconds']} s; "
          f"agent {b.name}: {cached_b} of {total_b} steps cached, {second['seconds']} s")
    record_property("first_build", f"{cached_a}/{total_a} cached, {first['seconds']} s")
    record_property("second_build", f"{cached_b}/{total_b} cached, {second['seconds']} s")
    assert cached_a < total_a  # cold: a fresh cache ref and a fresh daemon
    assert total_b == total_a and cached_b == total_b, second["stages"]  # every step from A's exported cache
    assert first["digest"] == second["digest"]  # the same image, built twice on two hosts


def test_the_bake_file_builds_the_same_digest(builds, bed, docker_env, tmp_path):
    """Issue 30's bake file: `gracectl plan --bake` of the release (and its pair's other image), built by
    `docker buildx bake` on the same builder, gives the digest `gracectl build` pushed."""
    first, _, registry = builds
    bake = tmp_path / "docker-bake.hcl"
    wrote = gracectl("plan", RELEASE, "--vllm-build", "source", "--mirror", str(bed.mirror_path), "--registry",
                     registry, "--builder", BUILDER, "--build-number", "5", "--bake", str(bake), env=docker_env)
    assert wrote.returncode == 0, wrote.stderr[-3000:]
    assert 'target "v0-19-0-tfa"' in bake.read_text() and 'target "v0-19-0"' in bake.read_text()
    metadata = tmp_path / "bake-metadata.json"
    # the plan's steps reach the test bed's mirrors on the host network: bake asks for that grant explicitly
    baked = subprocess.run([docker.binary(), "buildx", "bake", "--allow=network.host", "-f", str(bake), "--builder",
                            BUILDER, "--metadata-file", str(metadata), "v0-19-0-tfa"], capture_output=True, text=True,
                           cwd=REPO_ROOT, env={**os.environ, **docker_env}, timeout=1800)
    assert baked.returncode == 0, baked.stderr[-3000:]
    digest = json.loads(metadata.read_text())["v0-19-0-tfa"]["containerimage.digest"]
    assert digest == first["digest"], (digest, first["digest"])


def test_the_builder_pushes_an_oci_index_naming_the_platform(builds, bed):
    first, _, registry = builds
    plan = plan_for(RELEASE, bed.mirror_path, build_number=1, registry=registry, vllm_build="source",
                    builder=BUILDER)
    assert first["status"] == "pushed" and first["image"] == plan.build_tag
    assert first["pushed"] == f"{plan.build_tag.rsplit(':', 1)[0]}@{first['digest']}"
    assert first["image_id"] == ""  # nothing loaded into this node's dockerd
    host, _, path = plan.build_tag.partition("/")
    repository, tag = path.rsplit(":", 1)
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_INDEX})
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = answer.read()
        assert answer.headers["Content-Type"] == OCI_INDEX
    assert f"sha256:{hashlib.sha256(body).hexdigest()}" == first["digest"]
    index = json.loads(body)
    assert [m["platform"] for m in index["manifests"]] == [{"architecture": "arm64", "os": "linux"}]


def test_a_pull_for_another_platform_says_so(builds):
    first, _, _ = builds
    pulled = subprocess.run(["/usr/bin/docker", "pull", "--platform", "linux/amd64", first["pushed"]],
                            capture_output=True, text=True, timeout=300)
    assert pulled.returncode != 0
    assert "no matching manifest for linux/amd64" in pulled.stderr, pulled.stderr


def image_layers(registry: str, pushed: str) -> dict[str, int]:
    """digest -> size of every blob of the pushed image (its config and layers), read from the registry by digest."""
    repository, digest = pushed.removeprefix(f"{registry}/").split("@")

    def get(ref: str, accept: str) -> dict:
        request = urllib.request.Request(f"http://{registry}/v2/{repository}/manifests/{ref}",
                                         headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    index = get(digest, OCI_INDEX)
    manifest = get(index["manifests"][0]["digest"], "application/vnd.oci.image.manifest.v1+json")
    return {d["digest"]: d["size"] for d in [manifest["config"], *manifest["layers"]]}


def test_the_pair_and_a_one_input_rebuild_on_the_second_agent(bed, builds, agents, docker_env, tmp_path,
                                                             record_property):
    """Issue 30's cost of the pair, measured on agent B through the shared cache: the fallback (vendored
    triton_kernels) beside the tfa image in the registry, and the tfa image rebuilt with only the vLLM ref changed."""
    first, _, registry = builds
    common = ["--vllm-build", "source", "--mirror", str(bed.mirror_path), "--registry", registry, "--builder",
              BUILDER, "--push", "--registry-cache"]
    fallback = gracectl("build", "v0.19.0", *common, "--build-number", "3", "--record", str(tmp_path / "fb.json"),
                        env=docker_env)
    assert fallback.returncode == 0, fallback.stderr[-3000:]
    commit = bed.add_vllm_commit(f"test_buildx_agents {uuid.uuid4().hex}")
    rebuild = gracectl("build", RELEASE, *common, "--build-number", "4", "--vllm-ref", commit, "--record",
                       str(tmp_path / "rebuild.json"), env=docker_env)
    assert rebuild.returncode == 0, rebuild.stderr[-3000:]
    fb, rb = read_record(tmp_path / "fb.json"), read_record(tmp_path / "rebuild.json")
    tfa_blobs, fb_blobs = image_layers(agents.registry, first["pushed"]), image_layers(agents.registry, fb["pushed"])
    shared = set(tfa_blobs) & set(fb_blobs)
    pair = sum({**tfa_blobs, **fb_blobs}.values())
    line = (f"registry bytes: tfa {sum(tfa_blobs.values())}, fallback {sum(fb_blobs.values())}, the pair {pair} "
            f"({len(shared)} of {len(tfa_blobs)} blobs shared; fallback-only {len(set(fb_blobs) - shared)}); "
            f"fallback on {fb['node']}: {steps(fb)[0]} of {steps(fb)[1]} steps cached, {fb['seconds']} s; "
            f"one-input rebuild (VLLM_REF) on {rb['node']}: {steps(rb)[0]} of {steps(rb)[1]} cached, "
            f"{rb['seconds']} s")
    print("\n" + line)
    record_property("pair_cost", line)
    assert fb["node"] == rb["node"] == agents.agents[1].name
    assert shared and pair < sum(tfa_blobs.values()) + sum(fb_blobs.values())
    # the fallback reads the tfa image's cache (Plan.twin_cache_ref): only what differs is built and stored anew
    # (the config and the small layers of triton_kernels' install, the fetched-sources list, image.json): the pair
    # costs the registry one image and under 1% (before the twin cache: 2 of 10 blobs shared, the pair 1.34x)
    assert pair - sum(tfa_blobs.values()) < 0.01 * sum(tfa_blobs.values()) and steps(fb)[0] > 0, line
    assert 0 < steps(rb)[0] < steps(rb)[1]  # the vLLM stages rebuilt, every other step from the cache


def read_manifest(ref: str, accept: str = OCI_INDEX) -> tuple[str, bytes] | None:
    """(content type, body) of HOST/REPO:TAG or HOST/REPO@DIGEST read from the registry directly, None if absent."""
    host, _, path = ref.partition("/")
    repository, reference = path.split("@") if "@" in path else path.rsplit(":", 1)
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{reference}", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def test_the_split_pipeline_smokes_and_pushes_the_digest_the_builder_pushed(bed, builds, agents, docker_env, tmp_path):
    """Issue 30's split layout, the stages a Jenkins run with BUILDER walks: `ci plan` and `ci build` on the build
    agent (the builder pushes by digest, UNTAGGED: nothing named points at an unsmoked image), the work dir carried
    to the GPU node as Jenkins' stash does, `ci smoke` pulls exactly that digest into dockerd, reads its inputs and
    SBOM there and smokes it, `ci push` tags that very manifest (the OCI index) with the records, `ci promote`."""
    _, _, registry = builds
    env = {**docker_env, "RELEASE": RELEASE, "REGISTRY": registry, "BUILDER": BUILDER, "VLLM_BUILD": "source",
           "GRACECTL_MIRROR": str(bed.mirror_path), "GRACECTL_UPSTREAM_CACHE": str(upstream_cache(bed.root)),
           "SMOKE_LEVEL": "imports", "GRACECTL_SMOKE_GPUS": "none", "PUSH": "true", "PROMOTE": "true",
           "BUILD_NUMBER": "7", "GRACECTL_RUN_ID": f"split-{uuid.uuid4().hex[:8]}", "GRACECTL_MIN_FREE_GB": "0"}
    agent_dir, gpu_dir = tmp_path / "arm64-build", tmp_path / "gh200"

    def ci(stage: str, where: Path) -> dict:
        done = gracectl("ci", stage, "--workdir", str(where), env=env)
        assert done.returncode == 0, f"ci {stage}: {done.stderr[-3000:]}"
        return json.loads((where / OUTPUTS[stage]).read_text())

    ci("plan", agent_dir)
    built = ci("build", agent_dir)
    build_tag = built["tags"]["build"]
    assert built["status"] == "pushed" and built["node"] == agents.agents[1].name and not built["image_id"]
    assert built["pushed"] == f"{build_tag.rsplit(':', 1)[0]}@{built['digest']}"
    assert read_manifest(build_tag) is None  # pushed by digest only: no tag names it before its smoke passed
    assert docker.inspect_image(built["pushed"]) is None  # nothing was loaded into a dockerd
    shutil.copytree(agent_dir, gpu_dir)  # Jenkins' stash and unstash
    try:
        smoked = ci("smoke", gpu_dir)
        assert smoked["passed"] is True and smoked["image"] == built["pushed"] and smoked["digest"] == built["digest"]
        assert smoked["resolved"]["images"] and smoked["sbom"]["packages"] > 0
        pushed = ci("push", gpu_dir)
        kind, body = read_manifest(build_tag)
        assert pushed["digest"] == built["digest"] == f"sha256:{hashlib.sha256(body).hexdigest()}"
        assert kind == OCI_INDEX  # the index itself was tagged, not an image taken out of it
        assert {"smoke", "sbom"} <= set(pushed["records"])
        promoted = ci("promote", gpu_dir)
        assert promoted["moved"] and read_manifest(promoted["tag"])[1] == body
    finally:
        subprocess.run(["/usr/bin/docker", "image", "rm", "--force", built["pushed"]], capture_output=True)
