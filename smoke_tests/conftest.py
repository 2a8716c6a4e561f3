"""Shared setup of the smoke suite that runs INSIDE an image (`gracectl smoke IMAGE`).

- Expected versions come from /opt/gracectl/image.json (written by the Dockerfile from the image labels), or
  from `--expect-json FILE` / env GRACECTL_EXPECT_JSON so the suite also runs outside an image.
- GPU tests skip with a visible reason when the container has no NVIDIA device (`--gpus none`), and fail in one
  line naming both when the node's driver is older than the image's minimum (image.json's min_driver).
- Planted faults: with one of triton_kernels_contract.PLANTED_FAULTS' switches set to 1 (e.g.
  GRACECTL_PLANT_TOPK_TIE_FLIPPED=1) a faulty copy of the image's triton_kernels is put first on sys.path before
  any test imports it. Which levels must then fail is each Plant's `caught_by`, and that list is tested, not
  written down: `python plant_check.py` runs each claimed level clean and planted and fails unless a test that
  passed clean fails planted (MEASUREMENTS.md, "Smoke levels on GPUs", has the last table).
- The versions and the GPU seen are written into the JUnit XML as testsuite properties; gracectl reads them
  into the smoke record.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

import node_driver
import triton_kernels_contract as tkc

IMAGE_JSON = "/opt/gracectl/image.json"
EXPECT_ENV = "GRACECTL_EXPECT_JSON"
# Expected-value keys, and the image-label names that may carry them in image.json.
EXPECT_KEYS = {
    "torch": ("torch", "io.gracectl.torch"),
    "triton": ("triton", "io.gracectl.version.triton"),
    "vllm": ("vllm", "io.gracectl.version.vllm"),
    "triton_kernels": ("triton_kernels", "io.gracectl.triton_kernels"),
    "torchvision": ("torchvision", "io.gracectl.version.torchvision"),
    "torchaudio": ("torchaudio", "io.gracectl.version.torchaudio"),
    "flashinfer": ("flashinfer", "io.gracectl.version.flashinfer"),
    "cuda": ("cuda", "io.gracectl.cuda"),
    "release": ("release", "io.gracectl.release"),
    "min_driver": ("min_driver", "io.gracectl.min-driver"),
    # image.json only, where "" is an answer: what the build installed (no packages, no JIT cache, no
    # overrides, DeepGEMM inside vLLM's wheel rather than a wheel of its own).
    "cuda_runtime_packages": ("cuda_runtime_packages",),
    "flashinfer_jit_cache": ("flashinfer_jit_cache",),
    "pip_overrides": ("pip_overrides",),
    "deepgemm": ("deepgemm",),
    # What of the manifest's [runtime_extras] the build installed ("KIND:KEY ..."): the imports level checks each.
    "runtime_extras": ("runtime_extras", "io.gracectl.runtime-extras"),
}


def pytest_addoption(parser):
    parser.addoption("--expect-json", default=None,
                     help=f"JSON with expected torch/triton/vllm versions and triton_kernels mode "
                          f"(default: ${EXPECT_ENV}, else {IMAGE_JSON})")


_planted: tuple[str, str] | None = None  # (what, folder put first on sys.path)


def pytest_configure(config):
    global _planted
    for env, plant in tkc.PLANTED_FAULTS.items():
        if os.environ.get(env) == "1":
            folder = tempfile.mkdtemp(prefix="planted-triton-kernels-")
            plant.make_copy(tkc.find_installed_package(), Path(folder))
            sys.path.insert(0, folder)
            # Subprocesses (the upstream level's pytest, the collectives workers) see the same copy.
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH")) if p)
            _planted = (plant.what, folder)
            break


def pytest_unconfigure(config):
    if _planted:
        shutil.rmtree(_planted[1], ignore_errors=True)


def pytest_report_header(config):
    lines = [f"expectations: {_expect_source(config) or 'none found'}"]
    if _planted:
        lines.append(f"PLANTED FAULT: {_planted[0]}, first on sys.path: {_planted[1]}")
    return lines


def _expect_source(config) -> str | None:
    path = config.getoption("--expect-json") or os.environ.get(EXPECT_ENV)
    if path:
        return path
    return IMAGE_JSON if os.path.exists(IMAGE_JSON) else None


def load_expectations(path: str) -> dict[str, str]:
    """Expected values by EXPECT_KEYS name; image.json may hold them flat, by label name, or under "labels"."""
    data = json.loads(Path(path).read_text())
    flat = {**data.get("labels", {}), **data}
    found = {}
    for key, names in EXPECT_KEYS.items():
        for name in names:
            if isinstance(flat.get(name), str) and (flat[name] or len(names) == 1):
                found[key] = flat[name]
                break
    return found


@pytest.fixture(scope="session")
def expected(pytestconfig) -> dict[str, str]:
    source = _expect_source(pytestconfig)
    if source is None:
        pytest.fail(f"no expected versions: {IMAGE_JSON} is missing (not a gracectl image?) and neither "
                    f"--expect-json nor ${EXPECT_ENV} is given", pytrace=False)
    return load_expectations(source)


def gpu_device_present() -> bool:
    """An NVIDIA device node is in the container (docker run --gpus ...)."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


@pytest.fixture(scope="session")
def gpu(pytestconfig):
    """Skip (visibly) without a GPU; with one, the node's driver must meet the image's minimum and torch must see
    the GPU, else the test fails."""
    if not gpu_device_present():
        pytest.skip("no NVIDIA GPU in this container (/dev/nvidia* absent; run with --gpus all)")
    source = _expect_source(pytestconfig)
    want = load_expectations(source) if source else {}
    driver = node_driver.node_driver()
    if driver:  # before torch calls CUDA: an old driver fails it with a message naming neither version
        problem = node_driver.floor_problem(driver, want.get("min_driver", ""), want.get("cuda", "?"),
                                            want.get("release", "?"))
        if problem:
            pytest.fail(problem, pytrace=False)
    import torch

    assert torch.cuda.is_available(), (
        f"/dev/nvidia* is present but torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: "
        "CPU-only torch or a driver too old for its CUDA")
    return torch.device("cuda")


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.fixture(scope="session", autouse=True)
def _record_environment(record_testsuite_property):
    """After the tests: versions seen, which triton_kernels was loaded, the GPU -> JUnit properties."""
    yield
    seen = {"python": sys.version.split()[0]}
    for dist in ("torch", "triton", "vllm", "flash_attn"):
        # The module's own version when loaded: it keeps the local part (2.10.0+cu129) that metadata may drop.
        seen[dist] = getattr(sys.modules.get(dist), "__version__", None) or _dist_version(dist)
    module = sys.modules.get("triton_kernels")
    if module is not None and getattr(module, "__file__", None):
        seen["triton_kernels"] = str(tkc.package_dir(module))
        seen["triton_kernels_mode"] = tkc.loaded_mode(module)
    torch = sys.modules.get("torch")
    if torch is not None:
        seen["cuda"] = torch.version.cuda
        if gpu_device_present() and torch.cuda.is_available():
            seen["gpu"] = torch.cuda.get_device_name(0)
            seen["gpu_capability"] = "sm_%d%d" % torch.cuda.get_device_capability(0)
    for name, value in seen.items():
        if value is not None:
            record_testsuite_property(name, value)
