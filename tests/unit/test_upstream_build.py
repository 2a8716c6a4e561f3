"""The build recipe derived per release from its own docker/Dockerfile (gracectl.releases.upstream_build): every upstream
build step done or excluded with a true reason ([build_steps]), the values the build takes ([recipe]), the check
of build-time imports against the pinned wheel, and what the plan passes the Dockerfile. The real sdists come from
the test bed's upstream cache (scripts/test.sh runs this file again once `testbed up` has fetched them)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from gracectl.releases.manifest import load_manifest, load_release
from gracectl.image.plan import make_plan
from gracectl.releases.derive import wheel_contents
from gracectl.releases.train import PREFETCH_SCRIPT, compare, missing_api
from gracectl.releases.upstream_build import build_steps, has_file, recipe
from test_release_train import derived_from
from test_runtime_extras import SDISTS

REPO = Path(__file__).resolve().parents[2]


def write_sdist(root: Path, dockerfile: str, files: dict[str, str]) -> Path:
    for rel, text in {**files, "docker/Dockerfile": dockerfile}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


DOCKERFILE = textwrap.dedent("""\
    ARG CUDA_VERSION=13.0.2
    FROM nvidia/cuda:13.0.2-devel AS base
    COPY requirements/cuda.txt requirements/cuda.txt
    RUN uv pip install -r requirements/cuda.txt \\
        && CUTLASS_DSL_VERSION=$(uv pip show nvidia-cutlass-dsl | awk '/^Version:/{print $2}') \\
        && uv pip install --force-reinstall --no-deps "nvidia-cutlass-dsl-libs-cu13==${CUTLASS_DSL_VERSION}"
    FROM base AS rust-build
    COPY rust-toolchain.toml rust-toolchain.toml
    COPY tools/install_protoc.sh /tmp/install_protoc.sh
    RUN /tmp/install_protoc.sh
    FROM base AS build
    COPY requirements/build/cuda.txt requirements/build/cuda.txt
    COPY --from=rust-build /workspace/vllm/vllm-rs vllm/vllm-rs
    COPY --from=rust-build /workspace/vllm/_rust_*.so vllm/
    RUN if [ "$GIT_REPO_CHECK" != "0" ]; then bash tools/check_repo.sh ; fi
    FROM nvidia/cuda:13.0.2-base AS vllm-base
    RUN --mount=type=bind,from=build,src=/workspace/dist,target=/dist uv pip install /dist/*.whl
    ENV VLLM_ENABLE_CUDA_COMPATIBILITY=0
    FROM vllm-base AS vllm-openai
    ENV VLLM_USAGE_SOURCE production-docker-image
    """)
FILES = {"requirements/cuda.txt": "torch==2.11.0\n", "requirements/build/cuda.txt": "setuptools-rust\n",
         "rust-toolchain.toml": '[toolchain]\nchannel = "1.95"\n',
         "tools/install_protoc.sh": 'VERSION="${PROTOC_VERSION:-34.2}"\n', "tools/check_repo.sh": "exit 0\n",
         "docker/versions.json": '{"variable": {"GIT_REPO_CHECK": {"default": "0"}}}'}


def test_every_step_of_upstreams_build_is_found_by_what_it_runs(tmp_path):
    sdist = write_sdist(tmp_path, DOCKERFILE, FILES)
    keys = [s.key for s in build_steps(sdist)]
    assert keys == ["requirements/cuda.txt", "reinstall:nvidia-cutlass-dsl-libs-cu13", "rust-toolchain.toml",
                    "tools/install_protoc.sh", "requirements/build/cuda.txt", "env:VLLM_ENABLE_CUDA_COMPATIBILITY",
                    "env:VLLM_USAGE_SOURCE"]  # tools/check_repo.sh: a branch the default build does not take
    r = recipe(sdist, build_steps(sdist))
    assert r.build_requirements[0] == "requirements/build/cuda.txt"
    assert r.rust_toolchain == ("1.95", "rust-toolchain.toml:2")
    assert r.protoc_version == ("34.2", "tools/install_protoc.sh:1")
    assert r.rust_artifacts[0] == ("vllm/vllm-rs", "vllm/_rust_*.so")
    assert r.reinstall[0] == ("nvidia-cutlass-dsl-libs-cu13",)


def test_a_planted_upstream_build_step_the_manifest_ignores_fails_the_check(tmp_path):
    planted = DOCKERFILE.replace("FROM base AS build\n", "FROM base AS build\nCOPY tools/new_step.sh /tmp/\n"
                                 "RUN bash /tmp/new_step.sh\n")
    sdist = write_sdist(tmp_path, planted, {**FILES, "tools/new_step.sh": "true\n"})
    step = next(s for s in build_steps(sdist) if s.key == "tools/new_step.sh")
    d = derived_from("v0.25.0-tfa")
    d.data["build_steps"][step.key] = {"upstream": step.what, "excluded": "not reviewed: ..."}
    fails = [line for line in compare(load_release("v0.25.0-tfa"), d) if line.status == "FAIL"]
    assert [line.path for line in fails] == ["build_steps.tools/new_step.sh"]
    assert "neither does nor excludes it" in fails[0].text


def test_a_decision_whose_reason_names_a_file_the_release_lacks_fails_the_check(tmp_path):
    text = (REPO / "releases" / "v0.25.0-tfa.toml").read_text()
    text = text.replace("(`tools/setup_deepgemm_pythons.sh`)", "(`tools/gone_in_this_release.sh`)")
    (tmp_path / "v0.25.0-tfa.toml").write_text(text)
    m = load_manifest(tmp_path / "v0.25.0-tfa.toml")
    fails = [line for line in compare(m, derived_from("v0.25.0-tfa")) if line.status == "FAIL"]
    assert [line.path for line in fails] == ["build_steps.tools/setup_deepgemm_pythons.sh"]
    assert "`tools/gone_in_this_release.sh`" in fails[0].text


def flashinfer_files(with_headers: bool) -> dict[str, bytes]:
    loader = "def get_cubin(name, sha):\n    pass\n" + ("def download_trtllm_headers(*a):\n    pass\n"
                                                          if with_headers else "")
    return {"flashinfer/artifacts.py": b"class ArtifactPath: pass\nclass CheckSumHash: pass\n",
            "flashinfer/jit/__init__.py": b"from . import env as env\n",
            "flashinfer/jit/cubin_loader.py": loader.encode()}


def test_a_build_time_import_the_pinned_package_lacks_is_named():
    """FlashInfer 0.6.13 (vLLM 0.25.0's pin) has no download_trtllm_headers (0.6.6 had it): the prefetch's API is
    checked against the pinned wheel's own files before a build."""
    assert missing_api(PREFETCH_SCRIPT, "flashinfer", flashinfer_files(True)) == []
    assert missing_api(PREFETCH_SCRIPT, "flashinfer", flashinfer_files(False)) == \
        ["flashinfer.jit.cubin_loader.download_trtllm_headers"]


def test_a_hopper_only_build_is_not_asked_for_blackwell_only_extensions():
    names = ["vllm/_C.abi3.so", "vllm/_qutlass_C.abi3.so", "vllm/vllm-rs", "vllm/third_party/deep_gemm/"
             "_C.cpython-312-aarch64-linux-gnu.so", "vllm/__init__.py"]
    assert wheel_contents(names, "9.0a") == ["vllm/_C*.so", "vllm/third_party/deep_gemm/_C*.so", "vllm/vllm-rs"]
    assert "vllm/_qutlass_C*.so" in wheel_contents(names, "9.0a 10.0a")


def test_the_plan_passes_the_recipe_and_warns_on_the_unproven_source_mode():
    m = load_release("v0.25.0-tfa")
    assert m.sources.vllm.build == "wheel"
    plan = make_plan(m, commit="0" * 40)
    args = plan.build_args
    assert args["BUILD_REQUIREMENTS"] == "requirements/build/cuda.txt"
    assert args["RUST_TOOLCHAIN"] == "1.95" and args["PROTOC_URL"].endswith("protoc-34.2-linux-aarch_64.zip")
    assert args["REINSTALL_AFTER"] == "nvidia-cutlass-dsl-libs-cu13"
    assert args["NCCL_APT_SUFFIX"] == "+cuda13.0"
    assert args["FLASHINFER_PREFETCH"] == ""  # upstream 0.25.0 fetches no headers; sm_90a needs none
    assert "vllm/vllm-rs" in args["WHEEL_CONTENTS"].split()
    assert plan.warnings == []
    from gracectl.image.plan import Overrides

    source = make_plan(m, commit="0" * 40, overrides=Overrides(vllm_build="source"))
    assert source.warnings and "UNPROVEN" in source.warnings[0]


@pytest.mark.parametrize("version", ["0.19.0", "0.25.0"])
def test_the_recipe_matches_the_real_release(version):
    """Against the real sdist: 0.25.0 moved its build requirements to requirements/build/cuda.txt and its setup.py
    needs setuptools_rust, which only that file brings, so the old recipe (`pip install -r requirements/build.txt`)
    would have failed there; the manifest's recipe names the file the release has."""
    sdist = SDISTS / f"vllm-{version}"
    if not (sdist / ".members").is_file():
        pytest.skip(f"no vLLM {version} sdist with its member list at {sdist} (`gracectl release check` fetches it)")
    m = load_release(f"v{version}-tfa")
    for rel in m.recipe.build_requirements:
        assert has_file(sdist, rel)
    if version == "0.25.0":
        assert not has_file(sdist, "requirements/build.txt")  # the old recipe's file
        assert re.search(r"setuptools_rust", (sdist / "setup.py").read_text())
        assert "setuptools-rust" in (sdist / "requirements/build/cuda.txt").read_text()
        assert m.recipe.rust_toolchain and has_file(sdist, "rust")
    steps = {s.key for s in build_steps(sdist)}
    assert steps == set(m.build_steps), "the manifest's [build_steps] are not the release's own"
