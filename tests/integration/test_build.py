"""`gracectl build` for real: vllm/Dockerfile, linux/arm64 under qemu, the test bed's mirrors.

Two builds of v0.19.0-tfa: the release as is, then with only the vLLM ref changed (to a commit made just now,
so no earlier build has it cached): the second must rebuild the build stage (the vLLM wheel) and the final stage
only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from gracectl.tags import provenance
from gracectl.image import sbom
from gracectl.adapters import docker, proc
from gracectl.image.build import compare, read_record, rebuilt_stages
from gracectl.releases.mirrors import load_mirror
from gracectl.checkout import REPO_ROOT
from gracectl.image.plan import plan_for
from gracectl.testbed.processes import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))  # the SLSA schema lives with the unit tests
from slsa_schema import SLSA_V1_PINNED  # noqa: E402

pytestmark = pytest.mark.integration
RELEASE = "v0.19.0-tfa"


def gracectl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gracectl", *args], capture_output=True, text=True,
                          timeout=1500, cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def builds(bed, tmp_path_factory):
    """(record of the release build, record of the rebuild with a new vLLM commit, that commit)."""
    out = tmp_path_factory.mktemp("builds")
    first = gracectl("build", RELEASE, "--vllm-build", "source", "--mirror", str(bed.mirror_path), "--build-number", "9001",
                     "--record", str(out / "first.json"))
    assert first.returncode == 0, first.stderr[-3000:]
    commit = bed.add_vllm_commit(f"test_build {uuid.uuid4().hex}")
    second = gracectl("build", RELEASE, "--vllm-build", "source", "--mirror", str(bed.mirror_path), "--build-number", "9002",
                      "--vllm-ref", commit, "--record", str(out / "second.json"))
    assert second.returncode == 0, second.stderr[-3000:]
    return read_record(out / "first.json"), read_record(out / "second.json"), commit


def test_build_record_holds_pins_image_and_stages(bed, builds):
    record, _, _ = builds
    plan = plan_for(RELEASE, bed.mirror_path, build_number=9001, vllm_build="source")
    assert record["status"] == "built" and record["image"] == plan.build_tag
    assert record["build_args"] == plan.build_args and record["labels"] == plan.labels
    info = docker.inspect_image(plan.build_tag)
    assert info["Id"] == record["image_id"] and info["Size"] == record["size"] > 0
    assert info["Architecture"] == "arm64"
    # Every label as the plan computed it (the Dockerfile declares none: the build command gives them).
    assert {k: info["Config"]["Labels"].get(k) for k in plan.labels} == plan.labels
    # every stage of the final image's build that has steps shows up with its time and cache use
    with_steps = {"vllm-base", "base", "build-triton", "build-triton-kernels", "build-flash-attn",
                  "build-flashmla", "build", "vllm-openai"}
    assert with_steps <= set(record["stages"]), record["stages"].keys()
    assert "triton-kernels-vendored" not in record["stages"]  # not needed by the site-packages release
    log = open(record["log"]).read()
    assert "#" in log and "[build " in log
    assert record["started"] <= record["finished"]


def test_rebuild_with_only_the_vllm_ref_changed_reuses_every_other_stage(builds):
    first, second, commit = builds
    assert sorted(rebuilt_stages(second)) == ["build", "vllm-openai"], second["stages"]
    diff = compare(first, second)
    assert set(diff["changed_build_args"]) == {"VLLM_REF", "VLLM_VERSION"}
    assert diff["changed_build_args"]["VLLM_REF"][1] == commit
    assert second["labels"]["io.gracectl.version.vllm"] == f"0.19.0+g{commit[:7]}"
    assert second["labels"]["io.gracectl.pin.vllm"].endswith("@" + commit)
    assert second["image_id"] != first["image_id"]


def test_image_holds_what_the_build_fetched(bed, builds):
    """Inside the arm64 image (qemu): vLLM's build saw the pinned flash-attn/FlashMLA sources and vendored
    triton_kernels; the top-level triton_kernels is installed (site-packages release)."""
    _, second, commit = builds
    mirror = load_mirror(bed.mirror_path)
    out = docker.run(["run", "--rm", "--entrypoint", "sh", second["image_id"], "-c",
                      "vllm info && python -c 'import triton_kernels, vllm.third_party.triton_kernels as v; "
                      "print(triton_kernels.__file__); print(v.__file__)'"]).stdout
    info = json.loads(out[: out.rindex("}") + 1])
    assert info["version"] == f"0.19.0+g{commit[:7]}"
    assert info["flash_attn_commit"] == mirror.ref("29210221863736a08f71a866459e368ad1ac4a95")
    assert info["flashmla_commit"] == mirror.ref("692917b1cda61b93ac9ee2d846ec54e75afe87b1")
    paths = out[out.rindex("}") + 1:].split()
    assert paths[0].endswith("site-packages/triton_kernels/__init__.py")
    assert paths[1].endswith("site-packages/vllm/third_party/triton_kernels/__init__.py")


def test_failed_build_is_one_line_and_moves_no_tag(bed, builds, tmp_path):
    """A git mirror that does not answer: the build fails in build-flashmla, the tag stays where it was."""
    first, _, _ = builds
    dead = f"git://127.0.0.1:{free_port()}/vllm-project/FlashMLA.git"
    live = load_mirror(bed.mirror_path).repo("https://github.com/vllm-project/FlashMLA.git")
    broken = tmp_path / "mirror.toml"
    broken.write_text(bed.mirror_path.read_text().replace(f'"{live}"', f'"{dead}"'))
    plan = plan_for(RELEASE, broken, build_number=9001, vllm_build="source")
    docker.run(["tag", first["image_id"], plan.build_tag])  # the tag the failed build would have moved
    done = gracectl("build", RELEASE, "--vllm-build", "source", "--mirror", str(broken), "--build-number", "9001",
                    "--record", str(tmp_path / "failed.json"))
    assert done.returncode == 4
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "build failed in stage build-flashmla" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert docker.inspect_image(plan.build_tag)["Id"] == first["image_id"]
    record = json.loads((tmp_path / "failed.json").read_text())
    assert record["status"] == "failed" and record["image_id"] == "" and os.path.exists(record["log"])


def test_build_push_publishes_by_digest_under_the_immutable_tag(bed, builds, tmp_path):
    first, _, _ = builds
    number = str(int(time.time()))
    done = gracectl("build", RELEASE, "--vllm-build", "source", "--mirror", str(bed.mirror_path), "--build-number", number,
                    "--registry", bed.state.registry, "--push", "--record", str(tmp_path / "pushed.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    record = read_record(tmp_path / "pushed.json")
    plan = plan_for(RELEASE, bed.mirror_path, build_number=int(number), registry=bed.state.registry,
                    vllm_build="source")
    assert record["status"] == "pushed" and record["image"] == plan.build_tag
    inspected = json.loads(proc.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{plan.build_tag}"]).stdout)
    assert inspected["Digest"] == record["digest"]
    assert record["pushed"].endswith("@" + record["digest"])
    assert inspected["Labels"]["io.gracectl.pin.triton_kernels"] == plan.labels["io.gracectl.pin.triton_kernels"]
    # the same build inputs as the first build: the very same image, only pushed
    assert record["image_id"] == first["image_id"]


def test_the_provenance_of_a_real_build_pins_every_input_by_what_the_build_resolved(bed, builds):
    """Every resolvedDependency of the release build: an absolute uri and a digest, each one checked here against its
    source (the registry's manifest, the git daemon's ref, the index's file, the image's own distributions)."""
    import jsonschema

    record, _, _ = builds
    plan = plan_for(RELEASE, bed.mirror_path, build_number=9001, vllm_build="source").to_dict()
    stmt = provenance.statement(f"{bed.state.registry}/gh200-vllm-tfa", record["image_id"], plan, record,
                                builder="urn:gracectl:builder:test", invocation="test_build", records={})
    jsonschema.Draft202012Validator(SLSA_V1_PINNED).validate(stmt)
    deps = stmt["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert all(d["uri"] and d["digest"] and "pinned" not in d.get("annotations", {}) for d in deps), deps
    by_name = {d["name"]: d for d in deps}
    for arg in ("BUILD_BASE_IMAGE", "RUNTIME_BASE_IMAGE"):  # the digest the mirror's tag names now
        image = plan["build_args"][arg]
        raw = proc.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{image}"], echo=False).stdout
        assert by_name[arg.lower()]["digest"] == {"sha256": hashlib.sha256(raw.encode()).hexdigest()}
    git = [d for d in deps if d["uri"].startswith("git+git://")]
    assert {"vllm", "triton_kernels", "flash_attn", "flashmla", "deepgemm", "cmake:cutlass"} <= {d["name"] for d in git}
    for d in git:  # the commit the mirror's ref names (a tag peeled to its commit)
        repo, _, ref = d["uri"].removeprefix("git+").rpartition("@")
        listed = proc.run(["git", "ls-remote", repo, ref, f"{ref}^{{}}"], echo=False, check=False).stdout.split()
        assert d["digest"]["gitCommit"] == (listed[-2] if listed else ref), d
    wheels = {d["name"].removeprefix("pypi:"): d for d in deps if d["name"].startswith("pypi:")}
    installed = {sbom.normalize(dist["metadata"]["name"])
                 for dist in sbom.inspect_image(record["image_id"])["installed"]}
    assert set(wheels) == installed
    for d in wheels.values():
        if d["uri"].startswith("http"):  # the very file the index serves
            with urllib.request.urlopen(d["uri"], timeout=60) as r:
                assert hashlib.sha256(r.read()).hexdigest() == d["digest"]["sha256"], d
    assert wheels["vllm"]["annotations"]["from"] == "built by this build"
    assert wheels["torch"]["annotations"]["from"] == "package index"
    print(f"provenance: {len(deps)} inputs, {len(json.dumps(stmt))} bytes")
