"""What a build resolved (gracectl.image.build_inputs), without dockerd: BuildKit's FROM lines, the image's distributions
matched to the index file they came from, and a loud error for anything without a digest."""

from __future__ import annotations

import pytest

from gracectl.image import build_inputs
from gracectl.errors import GraceError

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
LOG = f"""#3 [internal] load metadata for 127.0.0.1:5000/testbed/runtime-base:bookworm
#5 [base 1/3] FROM 127.0.0.1:5000/testbed/runtime-base:bookworm@{D1}
#5 CACHED
#9 [linux/arm64 build-base 1/6] FROM docker.io/library/debian:bookworm@{D2}
#12 [build-vllm 3/4] RUN echo FROM evil@{D1}
"""


def test_base_images_are_the_digests_buildkit_printed_for_each_from():
    assert build_inputs.base_images(LOG) == {"127.0.0.1:5000/testbed/runtime-base:bookworm": D1,
                                             "docker.io/library/debian:bookworm": D2}
    assert build_inputs.normalized_image("debian:bookworm") == "docker.io/library/debian:bookworm"
    assert build_inputs.normalized_image("nvidia/cuda:12.9.1-base") == "docker.io/nvidia/cuda:12.9.1-base"
    assert build_inputs.normalized_image(f"127.0.0.1:5000/x:y@{D1}") == "127.0.0.1:5000/x:y"


INDEX = "http://127.0.0.1:5080/simple"
FILES = {
    "numpy": [{"filename": "numpy-2.2.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
               "url": f"{INDEX}/numpy/numpy-2.2.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
               "sha256": "a" * 64},
              {"filename": "numpy-2.2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
               "url": f"{INDEX}/numpy/x86.whl", "sha256": "b" * 64}],
    "nvidia-cusparselt-cu13": [
        {"filename": f"nvidia_cusparselt_cu13-0.8.0-py3-none-manylinux2014_{arch}.whl", "sha256": sha,
         "url": f"{INDEX}/nvidia-cusparselt-cu13/nvidia_cusparselt_cu13-0.8.0-py3-none-manylinux2014_{arch}.whl"}
        for arch, sha in (("x86_64", "7" * 64), ("aarch64", "8" * 64))],
    # PyPI's pip of the version Debian bundles: other bytes than the bundled wheel the venv was made from
    "pip": [{"filename": "pip-23.0.1-py3-none-any.whl", "url": f"{INDEX}/pip/pip-23.0.1-py3-none-any.whl",
             "sha256": "9" * 64}],
    "fire": [{"filename": "fire-0.7.0.tar.gz", "url": f"{INDEX}/fire/fire-0.7.0.tar.gz", "sha256": "f" * 64}],
    "triton": [{"filename": "triton-3.6.0-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
                "url": f"{INDEX}/triton/triton-3.6.0.whl", "sha256": "c" * 64}],
}


def dist(name, version, tags, installer="uv", direct_url=""):
    return {"name": name, "version": version, "tags": tags, "installer": installer, "direct_url": direct_url}


@pytest.fixture
def index(monkeypatch):
    asked = []

    def published_files(url, name):
        asked.append((url, name))
        return FILES.get(name, []) if url == INDEX else []

    monkeypatch.setattr(build_inputs.package_index, "published_files", published_files)
    return asked


def test_each_installed_wheel_is_pinned_by_the_sha256_of_the_file_it_came_from(index):
    found = {
        "dists": [dist("numpy", "2.2.0", ["cp311-cp311-manylinux_2_17_aarch64", "cp311-cp311-manylinux2014_aarch64"]),
                  dist("triton", "3.6.0", ["cp311-cp311-manylinux_2_27_aarch64", "cp311-cp311-manylinux_2_28_aarch64"],
                       direct_url="file:///wheels/triton/triton-3.6.0-cp311-cp311-manylinux_2_27_aarch64."
                                  "manylinux_2_28_aarch64.whl"),
                  dist("triton_kernels", "1.0.0", ["py3-none-any"], installer="pip",
                       direct_url="file:///wheels/triton_kernels/triton_kernels-1.0.0-py3-none-any.whl"),
                  dist("pip", "23.0.1", ["py3-none-any"], installer="pip"),
                  dist("fire", "0.7.0", ["py3-none-any"]),  # an sdist-only project: uv built the wheel
                  # NVIDIA's wheel says manylinux2014_sbsa inside, _aarch64 in its file name
                  dist("nvidia-cusparselt-cu13", "0.8.0", ["py3-none-manylinux2014_sbsa"])],
        "supported": ["cp311-cp311-manylinux_2_36_aarch64", "py3-none-manylinux2014_aarch64", "py3-none-any"],
        "bundled": {"pip-23.0.1-py3-none-any.whl": {"path": "/usr/share/python-wheels/pip-23.0.1-py3-none-any.whl",
                                                    "sha256": "e" * 64}},
        "files": {"wheels.sha256": f"{'c' * 64}  /wheels/triton/triton-3.6.0-cp311-cp311-manylinux_2_27_aarch64."
                                   f"manylinux_2_28_aarch64.whl\n{'d' * 64}  /wheels/triton_kernels/triton_kernels-1.0.0"
                                   "-py3-none-any.whl\n"},
    }
    got = {p["name"]: p for p in build_inputs.python_inputs(found, ["http://unused/simple", INDEX])}
    # the aarch64 wheel of the two numpy files, by its tags
    assert got["numpy"] == {"name": "numpy", "version": "2.2.0", "uri": FILES["numpy"][0]["url"], "sha256": "a" * 64,
                            "from": "package index"}
    # a wheel a stage downloaded from the index: its own sha256, the index's URL
    assert got["triton"]["sha256"] == "c" * 64 and got["triton"]["uri"] == f"{INDEX}/triton/triton-3.6.0.whl"
    assert got["triton-kernels"] == {"name": "triton-kernels", "version": "1.0.0", "sha256": "d" * 64,
                                     "uri": "file:///wheels/triton_kernels/triton_kernels-1.0.0-py3-none-any.whl",
                                     "from": "built by this build"}
    assert got["pip"]["sha256"] == "e" * 64 and got["pip"]["from"] == "runtime base image (ensurepip)"
    assert got["fire"]["sha256"] == "f" * 64 and got["fire"]["from"] == "package index (sdist, built here)"
    assert got["nvidia-cusparselt-cu13"]["sha256"] == "8" * 64  # the aarch64 file, by this platform's tags


def test_a_distribution_without_a_known_sha256_fails_the_build_loudly(index, monkeypatch):
    on_other_arch = {"dists": [dist("numpy", "2.2.0", ["cp312-cp312-manylinux_2_17_aarch64"])], "bundled": {},
                     "files": {}}
    with pytest.raises(GraceError, match="numpy 2.2.0 .*on none of"):
        build_inputs.python_inputs(on_other_arch, [INDEX])
    unrecorded = {"dists": [dist("vllm", "0.19.0", ["py3-none-any"], direct_url="file:///wheels/vllm/vllm.whl")],
                  "bundled": {}, "files": {"wheels.sha256": ""}}
    with pytest.raises(GraceError, match="vllm 0.19.0 .*not in /opt/gracectl/wheels.sha256"):
        build_inputs.python_inputs(unrecorded, [INDEX])
    unpublished = dict(FILES, numpy=[{**FILES["numpy"][0], "sha256": ""}])
    monkeypatch.setattr(build_inputs.package_index, "published_files", lambda url, name: unpublished.get(name, []))
    with pytest.raises(GraceError, match="numpy"):
        build_inputs.python_inputs({"dists": [dist("numpy", "2.2.0", ["cp311-cp311-manylinux_2_17_aarch64",
                                                                      "cp311-cp311-manylinux2014_aarch64"])],
                                    "bundled": {}, "files": {}}, [INDEX])
