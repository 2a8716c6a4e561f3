"""Level `imports`: the image's Python stack is the one it claims to be, and vLLM gets its triton_kernels."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys

import pytest

import triton_kernels_contract as tkc

pytestmark = pytest.mark.imports


def _public(version: str) -> str:
    return version.split("+")[0]


def test_torch_is_a_cuda_build_with_sm90():
    import torch

    assert torch.version.cuda, f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
    # The compile-time arch list (torch.cuda.get_arch_list() is empty without a GPU).
    arches = torch._C._cuda_getArchFlags().split()
    assert any(a.startswith("sm_90") for a in arches), (
        f"torch {torch.__version__} has no sm_90 kernels (arch list {arches})")


def test_torch_sees_an_sm90_gpu(gpu):
    import torch

    name, cap = torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0)
    print(f"GPU: {name} sm_{cap[0]}{cap[1]}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    assert cap == (9, 0), f"GPU {name} is sm_{cap[0]}{cap[1]}, the image is built for sm_90 (GH200/H100)"


@pytest.mark.parametrize("dist", ["torch", "triton"])
def test_version_matches_image(dist, expected):
    want = expected.get(dist)
    assert want, f"the expectations give no {dist} version"
    try:
        # The module's version, not the metadata's: it carries the local part (+cu129) of a CUDA build.
        have = importlib.import_module(dist).__version__
    except ImportError as exc:
        pytest.fail(f"{dist} does not import ({exc}), the image expects {want}", pytrace=False)
    # A local part (+cu129) is compared only when the expectation has one.
    assert (have if "+" in want else _public(have)) == want, f"{dist} is {have}, the image expects {want}"


def test_vllm_version_matches_image(expected):
    want = expected.get("vllm")
    if not tkc.vllm_installed():
        if want:
            pytest.fail(f"vLLM is not installed, the image expects vLLM {want}", pytrace=False)
        pytest.skip("vLLM is not installed and no vLLM version is expected (suite run outside a vLLM image)")
    try:
        have = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("vLLM is importable but has no package metadata (not pip-installed?)", pytrace=False)
    assert want, "the expectations give no vllm version"
    assert (have if "+" in want else _public(have)) == want, f"vLLM is {have}, the image expects {want}"


def test_triton_kernels_has_every_name_vllm_imports():
    how = "vLLM's import_triton_kernels()" if tkc.vllm_installed() else "import triton_kernels (no vLLM here)"
    try:
        module = tkc.load_triton_kernels()
    except Exception as exc:
        pytest.fail(f"triton_kernels cannot be loaded via {how}: {type(exc).__name__}: {exc}", pytrace=False)
    where = f"{tkc.package_dir(module)} ({tkc.loaded_mode(module)}, via {how})"
    print(f"triton_kernels loaded from {where}")
    problems = tkc.contract_problems()
    if problems:
        pytest.fail(f"triton_kernels at {where} lacks what vLLM 0.19.0 imports - vLLM would log 'Failed to "
                    f"import Triton kernels' and use its slow MoE path: {'; '.join(problems)}", pytrace=False)


def test_triton_kernels_is_the_expected_copy(expected):
    want = expected.get("triton_kernels")
    assert want in ("site-packages", "vendored"), (
        f"the expectations give triton_kernels={want!r}, want 'site-packages' or 'vendored'")
    module = tkc.load_triton_kernels()
    have = tkc.loaded_mode(module)
    print(f"triton_kernels loaded from {tkc.package_dir(module)} ({have})")
    assert have == want, (
        f"vLLM loads triton_kernels from {tkc.package_dir(module)} ({have}), the image expects {want}")


def test_vllm_triton_kernels_moe_imports_without_error():
    if not tkc.vllm_installed():
        pytest.skip("vLLM is not installed: its triton_kernels MoE module cannot be imported here")
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    # vLLM's loggers propagate to "vllm" (which itself may not propagate to root): listen there.
    handler = Collect(level=logging.DEBUG)
    vllm_logger = logging.getLogger("vllm")
    vllm_logger.addHandler(handler)
    name = "vllm.model_executor.layers.fused_moe.gpt_oss_triton_kernels_moe"
    try:
        if name in sys.modules:
            importlib.reload(sys.modules[name])
        else:
            importlib.import_module(name)
    finally:
        vllm_logger.removeHandler(handler)
    failures = [r.getMessage() for r in records if "Failed to import Triton kernels" in r.getMessage()]
    assert not failures, f"{name} logged: {failures[0]}"
