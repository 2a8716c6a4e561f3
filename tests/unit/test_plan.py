"""The plan: build args, tags, labels, mirror mapping, overrides and the exact build command."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest

from gracectl.releases import manifest as manifest_module

from gracectl.errors import UsageError
from gracectl.releases.manifest import load_manifest, load_release
from gracectl.releases.mirrors import Mirror, load_mirror
from gracectl.checkout import REPO_ROOT as REPO
from gracectl.image.plan import Overrides, make_plan, vllm_version
from gracectl.releases.train import to_toml

COMMIT = "1a2b3c4d5e6f" + "0" * 28


def cli_plan(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "gracectl", "plan", *args, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("release, image, mode", [("v0.19.0-tfa", "gh200-vllm-tfa", "site-packages"),
                                                  ("v0.19.0", "gh200-vllm", "vendored")])
def test_cli_plan_json_is_complete(release, image, mode):
    p = cli_plan(release)
    assert p["release"] == release and p["platform"] == "linux/arm64" and p["target"] == "vllm-openai"
    assert p["tags"]["moving"] == f"{image}:{release}"
    assert p["tags"]["build"].startswith(f"{image}:{release}-b0-")
    assert p["build_args"]["TRITON_KERNELS"] == mode
    assert p["labels"]["io.gracectl.triton_kernels"] == mode
    cmd = p["build_command"]
    assert "--platform" in cmd and cmd[cmd.index("--platform") + 1] == "linux/arm64"
    assert cmd[cmd.index("--file") + 1] == "vllm/Dockerfile"
    assert f"TRITON_KERNELS={mode}" in cmd
    assert p["final_stages"][-1] == "vllm-openai"
    # Every build arg is on the command line, exactly once.
    assert sum(1 for a in cmd if a == "--build-arg") == len(p["build_args"])


def test_cli_plan_human_output_shows_graph_args_tags_and_command():
    r = subprocess.run([sys.executable, "-m", "gracectl", "plan", "v0.19.0-tfa"], capture_output=True, text=True,
                       env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    for needle in ("build-triton-kernels", "TRITON_KERNELS_REPO", "gh200-vllm-tfa:v0.19.0-tfa",
                   "io.gracectl.pin.flashmla", "vllm/Dockerfile", "pinned by tag only"):
        assert needle in r.stdout, needle
    # The manifest's default is wheel mode (the proven path): the source build's stages are not built.
    assert "not built for this release: build-flash-attn, build-flashmla, build-cmake-sources, rust-build, " \
           "build, vllm-from-source, triton-kernels-vendored" in r.stdout
    assert "WARNING" not in r.stdout
    source = subprocess.run([sys.executable, "-m", "gracectl", "plan", "v0.19.0-tfa", "--vllm-build", "source"],
                            capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert "WARNING vLLM build mode 'source' is UNPROVEN for v0.19.0-tfa" in " ".join(source.stdout.split())


def test_cli_plan_wheel_mode_names_the_stages_it_does_not_build():
    r = subprocess.run([sys.executable, "-m", "gracectl", "plan", "v0.19.0", "--vllm-build", "wheel", "--json"],
                       capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["build_args"]["VLLM_BUILD"] == "wheel" and p["labels"]["io.gracectl.vllm-build"] == "wheel"
    assert set(p["not_built"]) >= {"build", "build-flash-attn", "build-flashmla", "build-cmake-sources",
                                   "vllm-from-source"}
    bad = subprocess.run([sys.executable, "-m", "gracectl", "plan", "v0.19.0", "--vllm-build", "egg"],
                         capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and "--vllm-build must be one of source, wheel" in bad.stderr


def test_releases_command_lists_both():
    r = subprocess.run([sys.executable, "-m", "gracectl", "releases", "--json"], capture_output=True, text=True)
    rows = {row["release"]: row for row in json.loads(r.stdout)}
    assert rows["v0.19.0-tfa"]["fallback"] == "gh200-vllm:v0.19.0"
    assert rows["v0.19.0"]["triton_kernels"] == "vendored"


def test_build_tag_names_release_build_and_commit():
    p = make_plan(load_release("v0.19.0-tfa"), overrides=Overrides(build_number=42, registry="reg.example:5000/ml"),
                  commit=COMMIT)
    assert p.build_tag == "reg.example:5000/ml/gh200-vllm-tfa:v0.19.0-tfa-b42-1a2b3c4"
    assert p.moving_tag == "reg.example:5000/ml/gh200-vllm-tfa:v0.19.0-tfa"
    assert p.fallback == "reg.example:5000/ml/gh200-vllm:v0.19.0"


def test_the_nonroot_target_is_the_same_build_one_stage_further_under_its_own_tags():
    m = load_release("v0.19.0-tfa")
    nonroot = make_plan(m, overrides=Overrides(build_number=42, target="vllm-openai-nonroot"), commit=COMMIT)
    assert nonroot.final_stages[-2:] == ["vllm-openai", "vllm-openai-nonroot"]
    assert nonroot.moving_tag == "gh200-vllm-tfa:v0.19.0-tfa-nonroot"
    assert nonroot.build_tag == "gh200-vllm-tfa:v0.19.0-tfa-nonroot-b42-1a2b3c4"
    assert nonroot.fallback == "gh200-vllm:v0.19.0-nonroot"
    cmd, _ = nonroot.build_command()
    assert cmd[cmd.index("--target") + 1] == "vllm-openai-nonroot"
    # The same arguments and labels as the default image: every stage below the last one comes from the same cache.
    default = make_plan(m, overrides=Overrides(build_number=42), commit=COMMIT)
    assert (default.build_args, default.labels) == (nonroot.build_args, nonroot.labels)
    assert default.target == "vllm-openai" and default.moving_tag == "gh200-vllm-tfa:v0.19.0-tfa"


def test_vllm_ref_override_changes_only_vllm_inputs():
    m = load_release("v0.19.0-tfa")
    base = make_plan(m, overrides=Overrides(vllm_build="source"), commit=COMMIT)
    other = make_plan(m, overrides=Overrides(vllm_ref="f" * 40, vllm_build="source"), commit=COMMIT)
    changed = {k for k in base.build_args if base.build_args[k] != other.build_args[k]}
    assert changed == {"VLLM_REF", "VLLM_VERSION"}
    relabelled = {k for k in base.labels if base.labels[k] != other.labels[k]}
    assert relabelled == {"io.gracectl.pin.vllm", "io.gracectl.version.vllm"}
    assert other.labels["io.gracectl.pin.vllm"].endswith("@" + "f" * 40)
    assert other.build_args["VLLM_VERSION"] == "0.19.0+gfffffff"
    assert vllm_version(m, "v0.19.1") == "0.19.1"


@pytest.mark.parametrize("kwargs", [{"vllm_ref": "main"}, {"image_tag": "bad tag"}, {"build_number": -1},
                                    {"registry": "https://reg"}, {"target": "vllm-openai-base"}])
def test_bad_overrides(kwargs):
    with pytest.raises(UsageError):
        Overrides(**kwargs)


def test_mirror_maps_every_external_input(tmp_path):
    m = load_release("v0.19.0-tfa")
    mirror_file = tmp_path / "mirror.toml"
    mirror_file.write_text(
        'build_network = "host"\npython_version = "3.11"\n'
        '[images]\n"nvcr.io/nvidia/cuda:12.9.1-devel-ubuntu24.04" = "127.0.0.1:5000/b:1"\n'
        '"nvcr.io/nvidia/cuda:12.9.1-base-ubuntu24.04" = "127.0.0.1:5000/r:1"\n'
        '[repos]\n"https://github.com/vllm-project/vllm.git" = "git://127.0.0.1/vllm.git"\n'
        '[refs]\n"29210221863736a08f71a866459e368ad1ac4a95" = "' + "e" * 40 + '"\n'
        '[indexes]\n"https://pypi.org/simple" = "http://127.0.0.1:8080/simple"\n'
        '"https://download.pytorch.org/whl/cu129" = "http://127.0.0.1:8080/simple"\n'
    )
    p = make_plan(m, mirror=load_mirror(mirror_file), commit=COMMIT)
    a = p.build_args
    assert a["BUILD_BASE_IMAGE"] == "127.0.0.1:5000/b:1" and a["RUNTIME_BASE_IMAGE"] == "127.0.0.1:5000/r:1"
    assert a["VLLM_REPO"] == "git://127.0.0.1/vllm.git" and a["FLASH_ATTN_REF"] == "e" * 40
    assert a["PIP_INDEX_URL"] == a["TORCH_INDEX_URL"] == "http://127.0.0.1:8080/simple"
    assert a["PYTHON_VERSION"] == "3.11" and p.labels["io.gracectl.python"] == "3.11"
    cmd, env = p.build_command()
    assert cmd[cmd.index("--network") + 1] == "host" and env == {"DOCKER_BUILDKIT": "1"}
    # The upstream name stays in the base-name label: the image says what it was built from.
    assert p.labels["org.opencontainers.image.base.name"] == "nvcr.io/nvidia/cuda:12.9.1-base-ubuntu24.04"


def test_mirror_without_cuda_packages_is_a_named_standin(tmp_path):
    m = load_release("v0.19.0-tfa")
    assert not make_plan(m, commit=COMMIT).standins  # upstream: every package installed, nothing stood in for
    mirror_file = tmp_path / "mirror.toml"
    mirror_file.write_text(
        'standin_reason = "no NVIDIA apt repository here"\n'
        '[packages]\n"cuda-nvcc-12-9" = ""\n"libnccl-dev" = "libnccl-dev-site"\n'
        '[downloads]\n"' + m.flashinfer.cubins_url + '" = "http://127.0.0.1:8080/cubins/"\n'
        '[indexes]\n"' + m.flashinfer.jit_cache_index_url + '" = "http://127.0.0.1:8080/simple"\n'
    )
    p = make_plan(m, mirror=load_mirror(mirror_file), commit=COMMIT)
    packages = p.build_args["CUDA_RUNTIME_PACKAGES"].split()
    assert "cuda-nvcc-12-9" not in packages and "libnccl-dev-site" in packages and "cuda-cudart-12-9" in packages
    assert p.standins == ["cuda.runtime_packages: cuda-nvcc-12-9 (not installed: no NVIDIA apt repository here)"]
    assert p.build_args["FLASHINFER_CUBINS_URL"] == "http://127.0.0.1:8080/cubins/"
    assert p.build_args["FLASHINFER_INDEX_URL"] == "http://127.0.0.1:8080/simple"
    out = subprocess.run([sys.executable, "-m", "gracectl", "plan", "v0.19.0-tfa", "--mirror", str(mirror_file)],
                         capture_output=True, text=True)
    assert "STAND-IN" in out.stdout and "cuda-nvcc-12-9" in out.stdout, out.stdout[-500:] + out.stderr[-500:]


def test_bad_mirror_file(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text('build_network = "bridge-ish"\n')
    with pytest.raises(UsageError, match="build_network"):
        load_mirror(f)
    with pytest.raises(UsageError, match="does not exist"):
        load_mirror(tmp_path / "absent.toml")


def test_dockerd_is_the_default_and_a_named_builder_runs_buildx():
    p = make_plan(load_release("v0.19.0"), commit=COMMIT)
    plain, env = p.build_command(tags=["a:1", "a:2"])
    assert plain[:2] == ["docker", "build"] and env == {"DOCKER_BUILDKIT": "1"}
    assert [plain[i + 1] for i, x in enumerate(plain) if x == "--tag"] == ["a:1", "a:2"]
    assert plain[-1] == "." and p.to_dict()["builder"] == "dockerd (docker build, BuildKit)"
    named = make_plan(load_release("v0.19.0"), overrides=Overrides(builder="agents"), commit=COMMIT)
    bx, env = named.build_command(metadata_file="meta.json")
    assert bx[:5] == ["docker", "buildx", "build", "--builder", "agents"] and env == {}
    assert "--cache-from" not in bx  # no registry: no shared cache
    assert "--load" in bx and bx[bx.index("--metadata-file") + 1] == "meta.json" and bx[-1] == "."
    assert named.to_dict()["builder"] == "buildx builder agents"
    assert named.to_dict()["build_command"][:5] == bx[:5]
    with pytest.raises(UsageError, match="--builder"):
        Overrides(builder="no spaces")


def test_a_builder_pushes_an_oci_index_by_digest_without_loading():
    p = make_plan(load_release("v0.19.0"), overrides=Overrides(builder="agents", registry="reg:5000/ml"),
                  commit=COMMIT)
    bx, _ = p.build_command(push=True, metadata_file="meta.json")
    assert "--load" not in bx and "--push" not in bx
    assert bx[bx.index("--output") + 1] == "type=registry,oci-mediatypes=true"
    # an index for one platform (the frontend's platform map), and no BuildKit attestations beside the image
    assert "BUILDKIT_MULTI_PLATFORM=1" in bx and "--provenance=false" in bx and "--sbom=false" in bx
    assert bx[bx.index("--platform") + 1] == "linux/arm64"
    assert bx[bx.index("--tag") + 1] == p.build_tag


def test_registry_cache_per_builder():
    p = make_plan(load_release("v0.19.0-tfa"), overrides=Overrides(registry="reg:5000/ml", builder="agents"),
                  commit=COMMIT)
    assert p.cache_ref == "reg:5000/ml/gh200-vllm-tfa:buildcache"
    bx, _ = p.build_command(registry_cache=True)
    assert bx[bx.index("--cache-from") + 1] == "type=registry,ref=reg:5000/ml/gh200-vllm-tfa:buildcache"
    assert bx[bx.index("--cache-to") + 1] == "type=registry,ref=reg:5000/ml/gh200-vllm-tfa:buildcache,mode=max"
    # Plain docker build has no cache exporter: inline cache in the image, reused from the released image.
    p.builder = ""
    plain, _ = p.build_command(registry_cache=True)
    assert plain[plain.index("--cache-from") + 1] == "reg:5000/ml/gh200-vllm-tfa:v0.19.0-tfa"
    assert "BUILDKIT_INLINE_CACHE=1" in plain and plain[-1] == "."


def test_wheel_mode_skips_the_source_build_stages_and_keeps_triton_kernels_choice():
    m = load_release("v0.19.0-tfa")
    src = make_plan(m, commit="0" * 40, overrides=Overrides(vllm_build="source"))
    whl = make_plan(m, commit="0" * 40)
    assert whl.build_args["VLLM_BUILD"] == "wheel"  # the manifest's default: the proven path
    for stage in ("build", "build-flash-attn", "build-flashmla", "build-cmake-sources"):
        assert stage in src.final_stages and stage not in whl.final_stages
    # the tfa release still installs triton_kernels into site-packages, and DeepGEMM is still built
    for stage in ("triton-kernels-site-packages", "build-triton-kernels", "build-deepgemm", "vllm-from-wheel"):
        assert stage in whl.final_stages
    assert whl.labels["io.gracectl.vllm-build"] == "wheel"


def test_manifest_build_mode_is_read_and_a_commit_has_no_official_wheel(tmp_path):
    # The fallback extends the tfa manifest: it says only what differs, here its vLLM build mode.
    (tmp_path / "v0.19.0-tfa.toml").write_text((REPO / "releases" / "v0.19.0-tfa.toml").read_text())
    path = tmp_path / "v0.19.0.toml"
    path.write_text((REPO / "releases" / "v0.19.0.toml").read_text() + '\n[sources.vllm]\nbuild = "wheel"\n')
    m = load_manifest(path)
    assert m.sources.vllm.build == "wheel"
    assert make_plan(m, commit="0" * 40).build_args["VLLM_BUILD"] == "wheel"
    with pytest.raises(UsageError, match="only a release tag has an official wheel"):
        make_plan(m, commit="0" * 40, overrides=Overrides(vllm_ref="a" * 40))
    # the operator's override wins over the manifest
    assert make_plan(m, commit="0" * 40, overrides=Overrides(vllm_build="source")).build_args["VLLM_BUILD"] == "source"


def test_mirror_versions_map_the_torch_pins_and_the_plan_names_them_standin():
    mirror = Mirror(versions={"2.10.0+cu129": "2.10.0", "0.25.0+cu129": "0.25.0"},
                    versions_reason="STAND-IN: CPU torch", downloads={
                        "https://edge.urm.nvidia.com/artifactory/sw-kernelinferencelibrary-public-generic-local/": ""})
    p = make_plan(load_release("v0.19.0"), mirror=mirror, commit="0" * 40)
    assert p.build_args["TORCH_VERSION"] == "2.10.0" and p.build_args["TORCHVISION_VERSION"] == "0.25.0"
    assert p.build_args["TORCHAUDIO_VERSION"] == "2.10.0"
    assert p.labels["io.gracectl.torch"] == "2.10.0"
    assert p.build_args["FLASHINFER_CUBINS_URL"] == ""
    assert any(s.startswith("torch.version: 2.10.0+cu129 -> 2.10.0 (STAND-IN: CPU torch)") for s in p.standins)
    assert any(s.startswith("flashinfer.cubins_url:") for s in p.standins)


def cmake_manifest(tmp_path, edit=None):
    """v0.19.0-tfa with sources.cmake = {cutlass, deepselect}, then `edit(data)` applied to its TOML data."""
    data = tomllib.loads((REPO / "releases" / "v0.19.0-tfa.toml").read_text())
    data["sources"]["cmake"] = {
        "cutlass": {"repo": "https://github.com/NVIDIA/cutlass.git", "ref": "v4.2.1", "env": "VLLM_CUTLASS_SRC_DIR"},
        "deepselect": {"repo": "https://github.com/example/DeepSelect.git", "ref": "d" * 40,
                       "env": "DEEPSELECT_SRC_DIR", "subdir": "csrc"}}
    if edit:
        edit(data)
    path = tmp_path / "v0.19.0-tfa.toml"
    path.write_text(to_toml(data))
    return load_manifest(path)


def test_cmake_sources_are_the_manifests_own_set(tmp_path):
    m = cmake_manifest(tmp_path)
    mirror = Mirror(repos={"https://github.com/example/DeepSelect.git": "git://127.0.0.1/ds.git"},
                    refs={"v4.2.1": "c" * 40})
    p = make_plan(m, mirror=mirror, commit=COMMIT)
    assert p.build_args["CMAKE_SOURCES"] == (
        "VLLM_CUTLASS_SRC_DIR|https://github.com/NVIDIA/cutlass.git|" + "c" * 40 + "| "
        "DEEPSELECT_SRC_DIR|git://127.0.0.1/ds.git|" + "d" * 40 + "|csrc")
    assert p.labels["io.gracectl.pin.cmake"] == (
        "cutlass=https://github.com/NVIDIA/cutlass.git@" + "c" * 40 + " deepselect=git://127.0.0.1/ds.git@" + "d" * 40)
    assert "sources.cmake.cutlass: https://github.com/NVIDIA/cutlass.git@v4.2.1 (tag, no commit)" in p.unpinned
    assert not any("deepselect" in u for u in p.unpinned)  # pinned by commit
    # The wheel mode references none of them.
    whl = make_plan(m, mirror=mirror, commit=COMMIT, overrides=Overrides(vllm_build="wheel"))
    assert "build-cmake-sources" not in whl.final_stages


def test_no_deepgemm_wheel_builds_nothing_and_passes_empty_args(tmp_path):
    m = cmake_manifest(tmp_path, lambda d: d["sources"].pop("deepgemm"))
    assert m.sources.deepgemm is None and "deepgemm" not in m.sources.pinned()
    p = make_plan(m, commit=COMMIT)
    assert p.build_args["DEEPGEMM_REF"] == p.build_args["DEEPGEMM_REPO"] == ""
    assert p.labels["io.gracectl.pin.deepgemm"] == ""
    assert "build-deepgemm" in p.final_stages and "build-deepgemm" in p.to_dict()["not_built"]
    assert "build-deepgemm" not in make_plan(load_release("v0.19.0-tfa"), commit=COMMIT).to_dict()["not_built"]


def test_empty_jit_cache_index_and_overrides_are_passed_through(tmp_path):
    def edit(d):
        d["flashinfer"]["jit_cache_index_url"] = ""
        d["python"]["overrides"] = ["flashinfer-python==0.7.4", "foo==1.0"]
        d["provenance"].update({"python.overrides.flashinfer-python": "override: 0.7.3 is not on the index",
                                "python.overrides.foo": "override: a test"})

    m = cmake_manifest(tmp_path, edit)
    mirror = Mirror(indexes={"https://flashinfer.ai/whl/cu129": "http://127.0.0.1/simple"})
    p = make_plan(m, mirror=mirror, commit=COMMIT)
    assert p.build_args["FLASHINFER_INDEX_URL"] == ""
    assert p.build_args["PIP_OVERRIDES"] == "flashinfer-python==0.7.4 foo==1.0"
    # the JIT cache (where there is one) and the labels follow the overridden FlashInfer
    assert p.build_args["FLASHINFER_VERSION"] == p.labels["io.gracectl.version.flashinfer"] == "0.7.4"
    cmd, _ = p.build_command()
    assert "FLASHINFER_INDEX_URL=" in cmd and "PIP_OVERRIDES=flashinfer-python==0.7.4 foo==1.0" in cmd


def test_testbed_mirror_leaves_repos_without_a_standin_unmapped(tmp_path, monkeypatch):
    # A release whose sources include repositories the test bed has no stand-in for (a later vLLM's DeepSelect)
    # and no flashinfer-jit-cache: the mirror file maps what it can; such a release is built there as a wheel.
    from gracectl.testbed.mirror_file import REAL, STANDIN, write_mirror
    from gracectl.testbed.standins import STANDIN_REPOS
    from gracectl.testbed.state import State

    releases = tmp_path / "releases"
    releases.mkdir()
    def edit(d):
        d["flashinfer"].pop("jit_cache_index_url")
        d["torch"].update({k: d["torch"][k].split("+")[0] for k in ("version", "torchvision", "torchaudio")})
        d["torch"].update(index_url="https://pypi.org/simple", cuda_build_on_index=True)

    cmake_manifest(releases, edit)
    monkeypatch.setattr(manifest_module, "_releases_dir", releases)  # as the edge hands GRACECTL_RELEASES_DIR down
    st = State(registry_port=5200, git_port=9618, index_port=5280, proxy_port=5290)
    st.repos = {url: {"commit": "c" * 40} for url in STANDIN_REPOS}
    for stack in (STANDIN, REAL):
        mirror = load_mirror(write_mirror(st, tmp_path / f"{stack}.toml", stack))
        assert "https://github.com/example/DeepSelect.git" not in mirror.repos and "" not in mirror.indexes
        p = make_plan(load_release("v0.19.0-tfa", releases), mirror=mirror, commit=COMMIT,
                      overrides=Overrides(vllm_build="wheel"))
        assert p.build_args["FLASHINFER_INDEX_URL"] == ""
        assert not mirror.versions and p.build_args["TORCH_VERSION"] == "2.10.0"  # only +cuNNN pins are mapped
        assert p.build_args["VLLM_REPO"].startswith("git://127.0.0.1:9618/")


def test_plan_prints_the_builder():
    """`gracectl plan` names what the build runs on: the node's dockerd unless a buildx builder is named."""
    for args, said in (([], "builder dockerd (docker build, BuildKit)"),
                       (["--builder", "agents"], "builder buildx builder agents")):
        out = subprocess.run([sys.executable, "-m", "gracectl", "plan", "v0.19.0", *args], capture_output=True,
                             text=True)
        assert out.returncode == 0 and said in out.stdout, out.stderr[-500:]
