"""vLLM's real cmake files (its 0.19.0 source release, kept by `gracectl testbed up`) against vllm/Dockerfile:
every source the vLLM build would fetch with FetchContent is given to it by a pinned stage instead."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gracectl.manifest import load_release
from gracectl.plan import DOCKERFILE
from gracectl.testbed.upstream import vllm_sdist

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sdist(bed) -> Path:
    return vllm_sdist(bed.root, load_release("v0.19.0-tfa").sources.vllm.ref.removeprefix("v"))


def build_vllm_step() -> str:
    stage = DOCKERFILE.read_text().split("AS build-vllm", 1)[1].split("\nFROM ", 1)[0]
    return next(run for run in stage.split("\nRUN ") if "pip wheel" in run)


def overrides_in_cmake(root: Path) -> set[str]:
    """The env overrides (`$ENV{X_SRC_DIR}`) that guard vLLM's FetchContent declarations, read from its cmake."""
    names = set()
    for path in [root / "CMakeLists.txt", *sorted((root / "cmake").rglob("*.cmake"))]:
        text = path.read_text()
        if "FetchContent_Declare" in text:
            names |= set(re.findall(r"ENV\{(\w+_SRC_DIR)\}", text))
    return names


def test_every_fetchcontent_override_is_set_by_build_vllm(sdist):
    wanted = overrides_in_cmake(sdist)
    assert {"VLLM_CUTLASS_SRC_DIR", "QUTLASS_SRC_DIR", "TRITON_KERNELS_SRC_DIR"} <= wanted, wanted
    step = build_vllm_step()
    given = set(re.findall(r"(\w+_SRC_DIR)=/deps/", step))
    assert wanted <= given, f"vLLM's cmake would fetch these itself: {sorted(wanted - given)}"
    assert "-DFETCHCONTENT_FULLY_DISCONNECTED=ON" in step


def test_manifest_pins_are_vllms_own(sdist):
    m = load_release("v0.19.0-tfa")
    cmake = (sdist / "CMakeLists.txt").read_text()
    assert f'set(CUTLASS_REVISION "{m.sources.cutlass.ref}")' in cmake
    assert m.sources.qutlass.ref in (sdist / "cmake" / "external_projects" / "qutlass.cmake").read_text()
    assert m.sources.flash_attn.ref in (sdist / "cmake" / "external_projects" / "vllm_flash_attn.cmake").read_text()
    assert m.sources.flashmla.ref in (sdist / "cmake" / "external_projects" / "flashmla.cmake").read_text()
    assert f"ARG DEEPGEMM_GIT_REF={m.sources.deepgemm.ref}" in (sdist / "docker" / "Dockerfile").read_text()
    cuda_txt = (sdist / "requirements" / "cuda.txt").read_text()
    assert f"flashinfer-python=={m.flashinfer.version}" in cuda_txt
    for dist, version in (("torch", m.torch.version), ("torchvision", m.torch.torchvision),
                          ("torchaudio", m.torch.torchaudio)):
        assert f"{dist}=={version.split('+')[0]}" in cuda_txt
