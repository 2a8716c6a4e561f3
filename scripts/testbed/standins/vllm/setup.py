"""STAND-IN for vLLM's setup.py (gracectl test bed): mimics what vLLM's cmake build does with its inputs.

- the version comes from SETUPTOOLS_SCM_PRETEND_VERSION (vLLM uses setuptools_scm; the source has no .git);
- TRITON_KERNELS_SRC_DIR (the inner triton_kernels package) is copied, *.py files only, to
  vllm/third_party/triton_kernels (cmake/external_projects/triton_kernels.cmake);
- VLLM_FLASH_ATTN_SRC_DIR, FLASH_MLA_SRC_DIR, VLLM_CUTLASS_SRC_DIR and QUTLASS_SRC_DIR must be given and exist
  (vLLM would download them otherwise, which an air-gapped build must never do), and CMAKE_ARGS must carry
  -DFETCHCONTENT_FULLY_DISCONNECTED=ON: the build fails loudly without them;
- files beyond package_data (the chat templates) ship only through setuptools-scm's file finder, which needs
  the source's .git - as in vLLM (include_package_data with setuptools-scm installed).
"""

import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def fail(msg: str) -> None:
    sys.exit(f"stand-in vLLM build: {msg}")


def source_dir(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        fail(f"{var} is not set: the pinned source must come from the build, not from the network")
    path = Path(value)
    if not path.is_dir() or not any(path.iterdir()):
        fail(f"{var}={value} does not exist or is empty")
    return path


def fetched_commit(path: Path) -> str:
    for p in (path / ".fetched-commit", path.parent / ".fetched-commit"):
        if p.is_file():
            return p.read_text().strip()
    return "unknown"


version = os.environ.get("SETUPTOOLS_SCM_PRETEND_VERSION")
if not version:
    fail("SETUPTOOLS_SCM_PRETEND_VERSION is not set (the source tree has no .git to derive it from)")
kernels = source_dir("TRITON_KERNELS_SRC_DIR")
flash_attn = source_dir("VLLM_FLASH_ATTN_SRC_DIR")
flashmla = source_dir("FLASH_MLA_SRC_DIR")
source_dir("VLLM_CUTLASS_SRC_DIR")
source_dir("QUTLASS_SRC_DIR")
if "-DFETCHCONTENT_FULLY_DISCONNECTED=ON" not in os.environ.get("CMAKE_ARGS", ""):
    fail("CMAKE_ARGS lacks -DFETCHCONTENT_FULLY_DISCONNECTED=ON: a FetchContent without override would download")

vendored = ROOT / "vllm" / "third_party" / "triton_kernels"
shutil.rmtree(vendored, ignore_errors=True)
for src in kernels.rglob("*.py"):
    dest = vendored / src.relative_to(kernels)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
(ROOT / "vllm" / "_build_info.json").write_text(json.dumps({
    "version": version,
    "triton_kernels_commit": fetched_commit(kernels),
    "flash_attn_commit": fetched_commit(flash_attn),
    "flashmla_commit": fetched_commit(flashmla),
    "torch_cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST", ""),
    "cmake_build_type": os.environ.get("CMAKE_BUILD_TYPE", "RelWithDebInfo"),
}, indent=2) + "\n")

setup(
    name="vllm",
    version=version,
    description="STAND-IN for vLLM (gracectl test bed): drives the build plumbing, serves no model",
    packages=find_packages(include=["vllm", "vllm.*"]),
    package_data={"vllm": ["_build_info.json"]},
    include_package_data=True,
    install_requires=[line for line in (ROOT / "requirements" / "cuda.txt").read_text().splitlines()
                      if line and not line.startswith("#")],
    entry_points={"console_scripts": ["vllm = vllm.entrypoints.cli:main"]},
    python_requires=">=3.10",
)
