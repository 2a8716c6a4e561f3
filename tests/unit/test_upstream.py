"""gracectl.releases.upstream: what a vLLM release's own files pin, read from synthetic files laid out as vLLM lays them
out (written here: the shapes 0.19 and 0.34 use - Declare and Populate, git and source archives, variables,
ROCm branches, env overrides). The real sdists are read by tests/integration/test_release_upstream.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gracectl.errors import UpstreamError
from gracectl.releases.upstream import docker_args, dockerfile_installs, fetch_sources, requirement_pins


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


CMAKELISTS = """
if(VLLM_GPU_LANG STREQUAL "CUDA")
  # the revision, and a comment that says GIT_TAG v0.0.0 (ignored)
  set(CUTLASS_REVISION "v9.1.0")
  if (DEFINED ENV{VLLM_CUTLASS_SRC_DIR})
    set(VLLM_CUTLASS_SRC_DIR $ENV{VLLM_CUTLASS_SRC_DIR})
  endif()
  if(VLLM_CUTLASS_SRC_DIR)
    FetchContent_Declare(cutlass SOURCE_DIR ${VLLM_CUTLASS_SRC_DIR})
  else()
    FetchContent_Declare(
        cutlass
        GIT_REPOSITORY https://github.com/nvidia/cutlass.git
        GIT_TAG ${CUTLASS_REVISION}
    )
  endif()
endif()
"""

KERNELS_ARCHIVE = """
if (DEFINED ENV{TRITON_KERNELS_SRC_DIR})
  FetchContent_Declare(triton_kernels SOURCE_DIR $ENV{TRITON_KERNELS_SRC_DIR})
else()
  if (VLLM_TARGET_DEVICE STREQUAL "rocm")
    set(TRITON_GIT "https://github.com/ROCm/triton.git")
    set(TRITON_KERNELS_TAG "0123456789abcdef0123456789abcdef01234567")
  else()
    set(TRITON_GIT "https://github.com/triton-lang/triton.git")
    set(TRITON_KERNELS_TAG "v3.5.1")
  endif()
  string(REGEX REPLACE "\\\\.git$" "" TRITON_REPO_URL "${TRITON_GIT}")
  string(REPLACE "https://github.com/" "https://codeload.github.com/" TRITON_REPO_URL "${TRITON_REPO_URL}")
  set(TRITON_KERNELS_URL "${TRITON_REPO_URL}/tar.gz/${TRITON_KERNELS_TAG}")
  FetchContent_Declare(
          triton_kernels
          URL ${TRITON_KERNELS_URL}
          SOURCE_SUBDIR python/triton_kernels/triton_kernels
  )
endif()
"""

POPULATE = """
if (DEFINED ENV{DEEPGEMM_SRC_DIR})
  set(DEEPGEMM_SRC_DIR $ENV{DEEPGEMM_SRC_DIR})
endif()
if(DEEPGEMM_SRC_DIR)
  set(deepgemm_SOURCE_DIR "${DEEPGEMM_SRC_DIR}")
else()
  set(_REPO "https://github.com/vllm-project/DeepGEMM.git")
  set(_TAG "82ca617e5879d0efb0aba5b91b1c81852588af6f")
  FetchContent_Populate(
    deepgemm
    SOURCE_DIR "${_src}"
    GIT_REPOSITORY "${_REPO}"
    GIT_TAG "${_TAG}"
  )
endif()
"""

FLASHMLA = """
if (DEFINED ENV{FLASH_MLA_SRC_DIR})
  set(FLASH_MLA_SRC_DIR $ENV{FLASH_MLA_SRC_DIR})
endif()
if(FLASH_MLA_SRC_DIR)
  FetchContent_Declare(flashmla SOURCE_DIR ${FLASH_MLA_SRC_DIR})
else()
  FetchContent_Declare(
        flashmla
        GIT_REPOSITORY https://github.com/vllm-project/FlashMLA
        GIT_TAG 692917b1cda61b93ac9ee2d846ec54e75afe87b1
  )
endif()
"""


def test_fetch_sources_every_shape(tmp_path):
    root = write(tmp_path, {
        "CMakeLists.txt": CMAKELISTS,
        "cmake/external_projects/triton_kernels.cmake": KERNELS_ARCHIVE,
        "cmake/external_projects/deepgemm.cmake": POPULATE,
        "cmake/external_projects/flashmla.cmake": FLASHMLA,
        # Not a CUDA FetchContent source of vLLM's: the CPU build's (cmake/, not external_projects/).
        "cmake/cpu_extension.cmake": "FetchContent_Declare(onednn GIT_REPOSITORY https://x.invalid/o.git GIT_TAG v1)",
    })
    got = {s.key: s for s in fetch_sources(root)}
    assert set(got) == {"cmake.cutlass", "cmake.triton_kernels", "cmake.deepgemm", "flashmla"}
    cutlass = got["cmake.cutlass"]
    assert (cutlass.repo, cutlass.ref, cutlass.env) == ("https://github.com/nvidia/cutlass.git", "v9.1.0",
                                                        "VLLM_CUTLASS_SRC_DIR")
    assert cutlass.origin == "CMakeLists.txt:4"  # the set() that holds the value, not the GIT_TAG line
    tk = got["cmake.triton_kernels"]  # the CUDA branch of a source archive; the ROCm commit is not taken
    assert (tk.repo, tk.ref, tk.env, tk.subdir) == ("https://github.com/triton-lang/triton.git", "v3.5.1",
                                                    "TRITON_KERNELS_SRC_DIR", "python/triton_kernels/triton_kernels")
    assert tk.origin == "cmake/external_projects/triton_kernels.cmake:10"  # the tag's set()
    dg = got["cmake.deepgemm"]
    assert (dg.repo, dg.ref, dg.env) == ("https://github.com/vllm-project/DeepGEMM.git",
                                         "82ca617e5879d0efb0aba5b91b1c81852588af6f", "DEEPGEMM_SRC_DIR")
    mla = got["flashmla"]  # a stage of its own; ".git" added so that mirrors key it like the others
    assert mla.repo == "https://github.com/vllm-project/FlashMLA.git" and mla.env == "FLASH_MLA_SRC_DIR"


def test_an_archive_that_is_not_github_is_refused(tmp_path):
    root = write(tmp_path, {"CMakeLists.txt": "FetchContent_Declare(x URL https://example.invalid/x.zip)"})
    with pytest.raises(UpstreamError, match="not a GitHub source archive"):
        fetch_sources(root)


def test_an_unresolvable_variable_is_refused(tmp_path):
    root = write(tmp_path, {"CMakeLists.txt": "FetchContent_Declare(x GIT_REPOSITORY https://github.com/a/b.git "
                                              "GIT_TAG ${NOWHERE})"})
    with pytest.raises(UpstreamError, match=r"cannot resolve .*\$\{NOWHERE\}"):
        fetch_sources(root)


def test_requirement_pins_with_lines(tmp_path):
    root = write(tmp_path, {"requirements/cuda.txt": "-r common.txt\n# torch==0.0\ntorch==2.14.0\n"
                                                     "nvidia-cutlass-dsl[cu13]==4.8.0\ntorchcodec >= 0.14\n"
                                                     "tokenspeed-mla==2.0.3; platform_system == \"Linux\"\n"})
    pins = requirement_pins(root)
    assert pins["torch"].value == "2.14.0" and pins["torch"].origin == "requirements/cuda.txt:3"
    assert pins["nvidia-cutlass-dsl"].value == "4.8.0" and pins["tokenspeed-mla"].value == "2.0.3"
    assert "torchcodec" not in pins  # a range pins nothing
    with pytest.raises(UpstreamError, match="requirements/rocm.txt"):
        requirement_pins(root, "requirements/rocm.txt")


def test_docker_args_prefer_versions_json(tmp_path):
    versions = {"_comment": "generated", "variable": {"CUDA_VERSION": {"default": "13.0.3"}}}
    root = write(tmp_path, {"docker/Dockerfile": "ARG CUDA_VERSION=12.9.1\nARG PYTHON_VERSION=3.12\n"
                                                 "RUN uv pip install flashinfer-jit-cache==${V}\n",
                            "docker/versions.json": json.dumps(versions, indent=2)})
    args = docker_args(root)
    assert args["CUDA_VERSION"].value == "13.0.3" and args["CUDA_VERSION"].origin == "docker/versions.json:5"
    assert args["PYTHON_VERSION"].origin == "docker/Dockerfile:2"  # versions.json lacks it
    assert dockerfile_installs(root, "flashinfer-jit-cache") == "docker/Dockerfile:3"
    assert dockerfile_installs(root, "bitsandbytes") == ""


def test_index_credentials_never_reach_a_cache_path_or_a_message(tmp_path):
    from gracectl.adapters.package_index import PackageIndex, cache_key, without_userinfo

    url = "https://robot:s3cret@pypi.example:8443/simple"
    assert without_userinfo(url) == "https://pypi.example:8443/simple"
    assert "s3cret" not in PackageIndex(url, tmp_path)._host() and "s3cret" not in cache_key(url + "@v1")
    with pytest.raises(UpstreamError) as err:
        PackageIndex(url, tmp_path, offline=True).project("vllm")
    assert "s3cret" not in str(err.value) and "robot" not in str(err.value)


@pytest.mark.parametrize("ranges", [True, False], ids=["server-with-ranges", "server-without-ranges"])
def test_a_wheel_member_read_through_ranges_is_the_member(tmp_path, ranges):
    """zipfile over _HttpRangeFile reads the right bytes whether the server answers a Range with 206 or, as
    python's http.server does, with the whole file (200)."""
    import functools
    import http.server
    import threading
    import zipfile

    from gracectl.adapters.package_index import _HttpRangeFile

    members = {f"pkg/m{i}.py": bytes([i]) * (5000 + i) for i in range(20)}
    with zipfile.ZipFile(tmp_path / "w.whl", "w") as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def send_head(self):
            if not ranges or "Range" not in self.headers or self.command != "GET":
                return super().send_head()
            start, end = map(int, self.headers["Range"].removeprefix("bytes=").split("-"))
            body = (tmp_path / "w.whl").read_bytes()[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return __import__("io").BytesIO(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with zipfile.ZipFile(_HttpRangeFile(f"http://127.0.0.1:{server.server_port}/w.whl")) as remote:
            assert {n: remote.read(n) for n in remote.namelist()} == members
    finally:
        server.shutdown()
