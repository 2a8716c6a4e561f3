"""gracectl.image.builders: the buildx side of a build (command construction, its metadata file), pure logic."""

from __future__ import annotations

import json

import pytest

from gracectl.image import builders
from gracectl.errors import GraceError, UsageError

DIGEST = "sha256:" + "ab" * 32


def test_no_builder_is_the_node_dockerd():
    assert builders.describe("") == "dockerd (docker build, BuildKit)"
    assert builders.describe("agents") == "buildx builder agents"


@pytest.mark.parametrize("name", ["a b", "-x", "x;y", "x/y"])
def test_a_builder_name_is_buildx_s(name):
    with pytest.raises(UsageError, match="--builder"):
        builders.check_name(name)


def test_buildx_command_push_and_cache():
    common = ["--platform", "linux/arm64", "--tag", "r/i:t"]
    cmd = builders.buildx_command("agents", common, context=".", cache_ref="r/i:buildcache", push=True,
                                  metadata_file="m.json")
    assert cmd[:5] == ["docker", "buildx", "build", "--builder", "agents"] and cmd[-1] == "."
    assert cmd[5:9] == common
    assert cmd[cmd.index("--cache-to") + 1] == "type=registry,ref=r/i:buildcache,mode=max"
    assert cmd[cmd.index("--cache-from") + 1] == "type=registry,ref=r/i:buildcache"
    assert "--load" not in cmd and cmd[cmd.index("--metadata-file") + 1] == "m.json"
    loaded = builders.buildx_command("agents", common, context=".")
    assert "--load" in loaded and "--output" not in loaded and "--cache-to" not in loaded


def test_metadata_gives_the_digest_and_the_node(tmp_path):
    meta = tmp_path / "m.json"
    meta.write_text(json.dumps({"containerimage.digest": DIGEST, "buildx.build.ref": "agents/gbk-b/x1y2z3"}))
    assert builders.read_metadata(meta) == builders.Pushed(digest=DIGEST, node="gbk-b")
    meta.write_text(json.dumps({"buildx.build.ref": "agents/gbk-b/x1y2z3"}))
    with pytest.raises(GraceError, match="no pushed digest"):
        builders.read_metadata(meta)
    with pytest.raises(GraceError, match="no readable metadata"):
        builders.read_metadata(tmp_path / "absent.json")


def test_each_image_of_a_pair_reads_the_others_cache_and_writes_its_own():
    """tfa and fallback share every stage but triton_kernels' and their metadata: the second builds from the
    first's cache (issue 30's pair cost), while each exports only its own."""
    from gracectl.image.plan import plan_for

    tfa = plan_for("v0.19.0-tfa", registry="reg:5000/ml", builder="agents")
    fallback = plan_for("v0.19.0", registry="reg:5000/ml", builder="agents")
    assert (tfa.cache_ref, tfa.twin_cache_ref) == (fallback.twin_cache_ref, fallback.cache_ref)
    for plan in (tfa, fallback):
        cmd, _ = plan.build_command(registry_cache=True, push=True)
        reads = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--cache-from"]
        writes = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--cache-to"]
        assert reads == [f"type=registry,ref={plan.cache_ref}", f"type=registry,ref={plan.twin_cache_ref}"]
        assert writes == [f"type=registry,ref={plan.cache_ref},mode=max"]
    assert plan_for("v0.19.0-tfa", builder="agents").twin_cache_ref == ""  # no registry, no cache
