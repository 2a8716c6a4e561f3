"""Level `imports`: the image's Python stack is the one it claims to be, and vLLM gets its triton_kernels."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
import sys
from pathlib import Path

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


@pytest.mark.parametrize("dist", ["torch", "triton", "torchvision", "torchaudio"])
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
        pytest.fail(f"triton_kernels at {where} lacks what this image's vLLM imports - vLLM would log 'Failed to "
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
    # vLLM's triton_kernels MoE module, wherever this release keeps it (fused_moe/ in 0.19, fused_moe/experts/ later).
    found = sorted(tkc.installed_vllm_dir().rglob("gpt_oss_triton_kernels_moe.py"))
    assert found, "the installed vLLM has no gpt_oss_triton_kernels_moe.py (its triton_kernels MoE path)"
    name = ".".join(("vllm", *found[0].relative_to(tkc.installed_vllm_dir()).with_suffix("").parts))
    try:
        if name in sys.modules:
            importlib.reload(sys.modules[name])
        else:
            importlib.import_module(name)
    finally:
        vllm_logger.removeHandler(handler)
    failures = [r.getMessage() for r in records if "Failed to import Triton kernels" in r.getMessage()]
    assert not failures, f"{name} logged: {failures[0]}"


# ---- runtime prerequisites: what vLLM's own image keeps for JIT compilation and serving ----------------------

TINY_EXTENSION = r"""
#include <Python.h>
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(6 * 7); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gracectl_stub", NULL, -1, methods};
PyMODINIT_FUNC PyInit_gracectl_stub(void) { return PyModule_Create(&module); }
"""


def test_triton_compiles_a_c_extension_with_the_images_compiler(tmp_path, monkeypatch):
    # Triton builds its CUDA launcher stub this way on first use (a C compiler and Python.h): without them every
    # Triton kernel, triton_kernels' MoE included, fails at its first launch. No GPU needed.
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))
    try:
        from triton.runtime.build import compile_module_from_src
    except ImportError as exc:
        pytest.fail(f"triton has no runtime build helper ({exc}): not a real Triton", pytrace=False)
    try:
        module = compile_module_from_src(TINY_EXTENSION, "gracectl_stub")
    except Exception as exc:  # noqa: BLE001 - the compiler's or Triton's own error is the finding
        pytest.fail(f"Triton could not compile a C extension in this image: {type(exc).__name__}: {exc}",
                    pytrace=False)
    assert module.answer() == 42


def test_nccl_can_load_libibverbs():
    # NCCL dlopens libibverbs.so.1 for InfiniBand; without it multi-node GH200 jobs silently fall back to TCP.
    import ctypes

    try:
        ctypes.CDLL("libibverbs.so.1")
    except OSError as exc:
        pytest.fail(f"libibverbs.so.1 does not load ({exc}): install libibverbs1 and ibverbs-providers",
                    pytrace=False)


def test_media_decoding_tools_present():
    import shutil

    assert shutil.which("ffmpeg"), "ffmpeg is not on PATH: video/audio inputs cannot be decoded"


def test_cuda_runtime_packages_installed(expected):
    # The manifest's cuda.runtime_packages as built into the image (a mirror without NVIDIA's apt repository,
    # such as the STAND-IN test bed, builds with none and the plan says so).
    import subprocess

    if "cuda_runtime_packages" not in expected:
        pytest.skip("the expectations carry no cuda_runtime_packages list (an image.json from before it was "
                    "written, or an --expect-json without it): nothing to check the image against")
    packages = expected["cuda_runtime_packages"].split()
    if not packages:
        pytest.skip("the expectations say this image was built with no CUDA runtime packages "
                    "(cuda_runtime_packages is empty: a mirror without NVIDIA's apt repository, the STAND-IN)")
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    assert not missing, f"CUDA runtime packages missing from the image: {missing}"
    for nvcc in (p for p in packages if p.startswith("cuda-nvcc")):
        if Path(f"/usr/share/doc/{nvcc}/STAND-IN").exists():  # gracectl.testbed.apt_standin marks its packages
            pytest.skip(f"{nvcc} is installed from the test bed's STAND-IN apt repository: an empty package, no "
                        "nvcc to run")
        out = subprocess.run(["/usr/local/cuda/bin/nvcc", "--version"], capture_output=True, text=True)
        assert out.returncode == 0, f"nvcc does not run: {out.stderr.strip()}"


def _overridden(expected: dict, dist: str) -> str:
    """The version a python.overrides entry of the manifest installs instead of the release's pin, or ""."""
    for req in expected.get("pip_overrides", "").split():
        name, _, version = req.partition("==")
        if name.lower() == dist:
            return version
    return ""


def test_torch_is_the_manifests_cuda(expected):
    import torch

    want = expected.get("cuda", "")
    if not want:
        pytest.skip("the expectations carry no CUDA version (no 'cuda' / io.gracectl.cuda in image.json or "
                    "--expect-json): nothing to compare torch's CUDA with")
    if not torch.version.cuda:
        pytest.skip("a CPU torch (covered by test_torch_is_a_cuda_build_with_sm90, deselected for a STAND-IN)")
    assert ".".join(torch.version.cuda.split(".")[:2]) == want, (
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, the image's CUDA is {want}")


def test_flashinfer_matches_image(expected):
    want = expected.get("flashinfer")
    assert want, "the expectations give no flashinfer version"
    want = _overridden(expected, "flashinfer-python") or want
    versions = {}
    for dist in ("flashinfer-jit-cache", "flashinfer-python", "flashinfer-cubin"):
        try:
            versions[dist] = _public(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            pass
    if "flashinfer_jit_cache" in expected and not expected["flashinfer_jit_cache"]:
        # The release's own image installs no JIT cache (0.34.0): FlashInfer compiles on first use.
        assert versions.get("flashinfer-python") == want, f"flashinfer-python is not {want}: {versions}"
        assert "flashinfer-jit-cache" not in versions, f"a JIT cache the release does not use: {versions}"
        return
    assert versions.get("flashinfer-jit-cache") == want, f"flashinfer-jit-cache is not {want}: {versions}"
    # FlashInfer refuses a JIT cache of another version than the library itself.
    assert set(versions.values()) == {want}, f"FlashInfer distributions disagree: {versions}"


def test_deepgemm_installed(expected):
    if expected.get("deepgemm", "wheel") == "wheel":  # a wheel of its own beside vLLM (0.19's image)
        try:
            importlib.metadata.version("deep_gemm")
        except importlib.metadata.PackageNotFoundError:
            pytest.fail("DeepGEMM (deep_gemm) is not installed: vLLM's Hopper FP8 block-scaled GEMMs need it",
                        pytrace=False)
        return
    # Later releases build it in their cmake (DEEPGEMM_SRC_DIR) into vllm/third_party/deep_gemm.
    if not tkc.vllm_installed():
        pytest.skip("vLLM is not installed here (test_vllm_version_matches_image fails where vLLM is expected)")
    files = [str(f) for f in importlib.metadata.files("vllm") or []]
    assert any(f.startswith("vllm/third_party/deep_gemm/_C") for f in files), (
        "the vLLM wheel carries no vllm/third_party/deep_gemm/_C*: vLLM's Hopper FP8 block-scaled GEMMs need it")


def test_vllm_wheel_kept_its_package_files():
    # setuptools-scm ships these only when the source's .git was present at build time.
    if not tkc.vllm_installed():
        pytest.skip("vLLM is not installed here (test_vllm_version_matches_image fails where vLLM is expected)")
    files = [str(f) for f in importlib.metadata.files("vllm") or []]
    templates = [f for f in files if f.startswith("vllm/transformers_utils/chat_templates/") and f.endswith(".jinja")]
    assert templates, "the vLLM wheel lacks vllm/transformers_utils/chat_templates/*.jinja (built without .git?)"


# ---- what vLLM's own final image installs beyond vLLM's requirements ([runtime_extras]) ---------------------------
# The list is the image's own record of what its build installed (image.json's / the label's "KIND:KEY ..."), so a
# package that the build dropped, or that was removed from the image afterwards, fails here by name.

# How vLLM uses each: the module (and name) it imports. A pip extra not listed is checked by importing its
# top-level modules.
EXTRA_USES = {
    "accelerate": ["accelerate:init_empty_weights"],  # bitsandbytes / big-model loading paths
    "bitsandbytes": ["bitsandbytes:functional"],  # --quantization bitsandbytes
    "hf-transfer": ["hf_transfer:download"],  # HF_HUB_ENABLE_HF_TRANSFER=1
    "modelscope": ["modelscope.hub.snapshot_download:snapshot_download"],  # VLLM_USE_MODELSCOPE=True
    "runai-model-streamer": ["runai_model_streamer:SafetensorsStreamer"],  # --load-format runai_streamer, s3://
    "timm": ["timm:create_model"],  # timm-based vision towers (MiniCPM-V, DeepSeek-VL2, ...)
}
# Packages whose every shared library is loaded when used (checked with ldd); the distributions an extra brings
# (runai-model-streamer-s3, ...) are always checked.
LDD_CHECKED = {"runai-model-streamer", "hf-transfer"}
# apt packages whose program is what is used (health checks run curl), else `dpkg -s` is the check. Each probe
# proves the IMAGE's program runs, whatever the host: numactl runs `true` under no policy (exec only, libnuma
# loaded), where `numactl --show`/`--hardware` fail on any kernel that exposes no NUMA to the container ("No NUMA
# support available on this system": docker's default seccomp, qemu) and `--version` exists only from 2.0.17.
EXTRA_PROGRAMS = {"curl": ["curl", "--version"], "numactl": ["numactl", "true"]}


def _recorded_extras(expected) -> list[str]:
    return expected.get("runtime_extras", "").split()


def _ldd_missing(path: str, extra_dirs: list[str]) -> list[str]:
    """The shared libraries `path` needs that the dynamic loader cannot find (`ldd`), with the directories
    `import torch` makes available (torch/lib, nvidia/*/lib) on the search path."""
    import os
    import subprocess

    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join([*extra_dirs, os.environ.get("LD_LIBRARY_PATH", "")])}
    out = subprocess.run(["ldd", path], capture_output=True, text=True, env=env)
    return sorted({line.split()[0] for line in out.stdout.splitlines() if "not found" in line})


def _torch_library_dirs() -> list[str]:
    import glob
    import os
    import site

    dirs = []
    for sp in site.getsitepackages():
        dirs += glob.glob(os.path.join(sp, "torch", "lib")) + glob.glob(os.path.join(sp, "nvidia", "*", "lib"))
    return dirs


def _dist_shared_libraries(dist: str) -> list[str]:
    files = importlib.metadata.files(dist) or []
    return [str(f.locate()) for f in files if ".so" in f.name and "/tests/" not in str(f)]


def _check_pip_extra(key: str) -> list[str]:
    problems = []
    try:
        dist = importlib.metadata.distribution(key)
    except importlib.metadata.PackageNotFoundError:
        return [f"{key} is not installed (pip)"]
    uses = EXTRA_USES.get(key) or [
        f"{m}:" for m in (dist.read_text("top_level.txt") or "").split() if not m.startswith("_")]
    for use in uses:
        module, _, name = use.partition(":")
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - the import error is the finding
            problems.append(f"{key}: import {module} failed: {type(exc).__name__}: {exc}")
            continue
        if name and not hasattr(mod, name):
            problems.append(f"{key}: {module} has no {name}")
    # The package's own backends its extras bring (runai-model-streamer[s3,gcs,azure]: runai-model-streamer-s3,
    # ...), and every shared library of the package and of those, resolved.
    dists = [key]
    for req in dist.requires or []:
        name = re.split(r"[\s;(<>=!~\[]", req, 1)[0]
        if "extra ==" in req and name.lower().replace("_", "-").startswith(key + "-"):
            dists.append(name)
    for name in dists:
        if name == key and key not in LDD_CHECKED:
            continue  # its libraries are chosen at run time (bitsandbytes: one per CUDA version, one loaded)
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{key}: {name} (of its extras) is not installed")
            continue
        for lib in _dist_shared_libraries(name):
            missing = _ldd_missing(lib, _torch_library_dirs())
            if missing:
                problems.append(f"{key}: {lib} needs {', '.join(missing)}, not found")
    return problems


def _check_apt_extra(key: str) -> list[str]:
    import shutil
    import subprocess

    if subprocess.run(["dpkg", "-s", key], capture_output=True).returncode != 0:
        return [f"{key} is not installed (apt)"]
    program = EXTRA_PROGRAMS.get(key)
    if program:
        if not shutil.which(program[0]):
            return [f"{key}: {program[0]} is not on PATH"]
        out = subprocess.run(program, capture_output=True, text=True)
        if out.returncode != 0:
            return [f"{key}: `{' '.join(program)}` failed: {(out.stderr or out.stdout).strip()[:200]}"]
    return []


def _check_deepep(gpu_present: bool) -> list[str]:
    """DeepEP: its extension's shared library and the CUDA libraries it needs (NVSHMEM's host library, torch's,
    the CUDA runtime) resolve; the driver (libcuda.so.1) only where a GPU is mounted. With a GPU: it imports."""
    try:
        importlib.metadata.distribution("deep_ep")
    except importlib.metadata.PackageNotFoundError:
        return ["deepep: deep_ep is not installed (build)"]
    libs = [lib for lib in _dist_shared_libraries("deep_ep") if "deep_ep_cpp" in lib]
    if not libs:
        return ["deepep: the deep_ep distribution has no deep_ep_cpp extension"]
    missing = [m for m in _ldd_missing(libs[0], _torch_library_dirs()) if gpu_present or m != "libcuda.so.1"]
    if missing:
        return [f"deepep: {libs[0]} needs {', '.join(missing)}, not found"]
    if gpu_present:
        import torch  # noqa: F401 - deep_ep's extension expects torch's libraries loaded

        try:
            importlib.import_module("deep_ep")
        except Exception as exc:  # noqa: BLE001
            return [f"deepep: import deep_ep failed: {type(exc).__name__}: {exc}"]
    return []


def _check_gdrcopy() -> list[str]:
    import ctypes
    import subprocess

    if subprocess.run(["dpkg", "-s", "libgdrapi"], capture_output=True).returncode != 0:
        return ["gdrcopy: libgdrapi is not installed (download)"]
    try:
        ctypes.CDLL("libgdrapi.so.2")
    except OSError as exc:
        return [f"gdrcopy: libgdrapi.so.2 does not load: {exc}"]
    return []


def check_runtime_extra(entry: str, gpu_present: bool = False) -> list[str]:
    """Problems with one recorded runtime extra ("KIND:KEY"), each naming the package; [] when it is usable."""
    kind, _, key = entry.partition(":")
    if kind == "pip":
        return _check_pip_extra(key)
    if kind == "apt":
        return _check_apt_extra(key)
    if kind == "build" and key == "deepep":
        return _check_deepep(gpu_present)
    if kind == "download" and key == "gdrcopy":
        return _check_gdrcopy()
    return [f"{entry}: the image records it installed, and the smoke suite has no check for it"]


def test_runtime_extras_the_image_installed_are_usable(expected):
    from conftest import gpu_device_present

    if "runtime_extras" not in expected:
        pytest.skip("the expectations carry no runtime_extras record (an image.json from before it was written)")
    recorded = _recorded_extras(expected)
    if not recorded:
        pytest.skip("the image records no runtime extras installed (all excluded or STAND-IN: `gracectl plan` lists "
                    "them)")
    problems = [p for entry in recorded for p in check_runtime_extra(entry, gpu_device_present())]
    print(f"runtime extras checked: {' '.join(recorded)}")
    assert not problems, "runtime extras the image records as installed are not usable: " + "; ".join(problems)
