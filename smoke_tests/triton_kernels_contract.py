"""What vLLM 0.19.0 needs from triton_kernels, how vLLM picks the package, and the stale copy for the
planted-fault run.

vLLM catches a failed `from triton_kernels... import ...` and only LOGS "Failed to import Triton kernels",
then serves MoE models on a slower path (vLLM issues 39664, 36004): so the image must be checked here,
name by name, or a broken triton_kernels goes unnoticed until someone measures throughput.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

# Module (relative to triton_kernels) -> names vLLM 0.19.0 imports from it (UPSTREAM-FACTS.md: from
# fused_moe/gpt_oss_triton_kernels_moe.py, fused_moe/config.py, fused_moe/oracle/mxfp4.py,
# quantization/utils/mxfp4_utils.py). An empty list: vLLM imports the module itself.
VLLM_IMPORTS: dict[str, list[str]] = {
    "swiglu": [],
    "matmul_ogs": ["FnSpecs", "FusedActivation", "GatherIndx", "RoutingData", "ScatterIndx", "matmul_ogs",
                   "PrecisionConfig", "FlexCtx"],
    "tensor": ["BIT", "Bitmatrix", "SparseMatrix", "make_ragged_tensor_metadata", "FP4", "convert_layout",
               "wrap_torch_tensor"],
    "topk": ["topk"],
    "numerics": ["InFlexData"],
    "matmul_ogs_details.opt_flags": [],
    "tensor_details.layout": ["StridedLayout"],
}

VENDORED = "vllm.third_party.triton_kernels"
# Set to 1 to run the suite against a stale (3.5-era, no SparseMatrix) copy of the image's triton_kernels.
PLANT_STALE_ENV = "GRACECTL_PLANT_STALE_TRITON_KERNELS"
# Set to 1 to run it against a copy whose Hopper MXFP4 upcast reads every weight scale one exponent too high
# (each MXFP4 weight doubled inside matmul_ogs): the MXFP4 kernels and upstream levels must then fail.
PLANT_MX_SCALE_ENV = "GRACECTL_PLANT_MX_SCALE_OFF_BY_ONE"


def vllm_installed() -> bool:
    """vLLM is importable as a regular package (a folder named vllm/ in the working directory, such as this
    repository's vllm/ with its Dockerfile, is only a namespace package and does not count)."""
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None


def load_triton_kernels() -> ModuleType:
    """The triton_kernels module vLLM would use: vLLM's own import_triton_kernels() when vLLM is installed
    (a top-level package wins, else vllm.third_party.triton_kernels is aliased), else a plain import."""
    if vllm_installed():
        from vllm.utils.import_utils import import_triton_kernels

        import_triton_kernels()
        if "triton_kernels" not in sys.modules:
            raise ImportError("vLLM found no triton_kernels: neither a top-level package nor " + VENDORED)
        return sys.modules["triton_kernels"]
    import triton_kernels

    return triton_kernels


def loaded_mode(module: ModuleType) -> str:
    """"vendored" for vLLM's copy (aliased into sys.modules, its __name__ stays the vendored one),
    "site-packages" for a top-level package (site-packages or PYTHONPATH)."""
    return "vendored" if module.__name__ == VENDORED else "site-packages"


def package_dir(module: ModuleType) -> Path:
    return Path(module.__file__).resolve().parent


def contract_problems() -> list[str]:
    """Every name of VLLM_IMPORTS that cannot be imported, as vLLM imports it (`triton_kernels.<module>`)."""
    problems = []
    for module_name, names in VLLM_IMPORTS.items():
        full = f"triton_kernels.{module_name}"
        try:
            module = importlib.import_module(full)
        except Exception as exc:  # any import-time failure is what vLLM would hit
            problems.append(f"import {full} failed: {type(exc).__name__}: {exc}")
            continue
        problems += [f"{full}.{name} is missing" for name in names if not hasattr(module, name)]
    return problems


def find_installed_package() -> Path:
    """Folder of the image's triton_kernels (top-level first, as vLLM), found without importing it."""
    for name in ("triton_kernels", VENDORED):
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # vllm not installed
            spec = None
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0])
    raise FileNotFoundError("no triton_kernels package (top-level or vendored) to copy")


# The class with its decorators, up to the next top-level line (decorator lines matched without DOTALL:
# a DOTALL `@.*` would run from the file's first decorator and delete every class before SparseMatrix).
_SPARSE_MATRIX_CLASS = re.compile(r"^(?:@[^\n]*\n)*class SparseMatrix\b.*?(?=^\S|\Z)", re.M | re.S)


def make_stale_copy(source: Path, dest_root: Path) -> Path:
    """Copy the package `source` to dest_root/triton_kernels and delete class SparseMatrix from its
    tensor.py, as in a triton_kernels from before Triton 3.6. Returns dest_root (to put on sys.path)."""
    dest = dest_root / "triton_kernels"
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
    tensor_py = dest / "tensor.py"
    text, n = _SPARSE_MATRIX_CLASS.subn("", tensor_py.read_text())
    if n != 1:
        raise RuntimeError(f"expected one `class SparseMatrix` in {source / 'tensor.py'}, found {n}")
    tensor_py.write_text(text)
    return dest_root


def make_patched_copy(source: Path, dest_root: Path, file: str, anchor: str, replacement: str) -> Path:
    """Copy the package `source` to dest_root/triton_kernels with `anchor` (exactly once in `file`) replaced.
    Returns dest_root (to put on sys.path)."""
    dest = dest_root / "triton_kernels"
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
    path = dest / file
    text = path.read_text()
    if text.count(anchor) != 1:
        raise RuntimeError(f"expected one {anchor.strip()!r} in {source / file}")
    path.write_text(text.replace(anchor, replacement))
    return dest_root


# The planted MX-scale fault: in the Hopper MXFP4 -> bf16 upcast that matmul_ogs runs on each weight tile, the
# scale bytes (e8m0 exponents) are raised by one before use.
MX_SCALE_FILE = "tensor_details/layout_details/hopper_value.py"
_MX_SCALE_ANCHOR = "    # upcast scale to bfloat16\n"
_MX_SCALE_FAULT = "    scale = (scale + 1).to(scale.dtype)  # PLANTED FAULT (gracectl smoke): one exponent too high\n"
# The planted router fault: topk's softmax over the selected logits runs at temperature 1/1.5.
TOPK_FILE = "topk_details/_topk_forward.py"
_TOPK_ANCHOR = "tl.softmax(y_values.to(tl.float32), dim=1"
_TOPK_FAULT = "tl.softmax(y_values.to(tl.float32) * 1.5, dim=1"  # PLANTED FAULT


def make_mx_scale_fault_copy(source: Path, dest_root: Path) -> Path:
    return make_patched_copy(source, dest_root, MX_SCALE_FILE, _MX_SCALE_ANCHOR, _MX_SCALE_ANCHOR + _MX_SCALE_FAULT)


def make_topk_fault_copy(source: Path, dest_root: Path) -> Path:
    return make_patched_copy(source, dest_root, TOPK_FILE, _TOPK_ANCHOR, _TOPK_FAULT)


PLANT_TOPK_ENV = "GRACECTL_PLANT_TOPK_SOFTMAX_FAULT"
# Planted-fault switches (env var -> how the faulty copy is made), for conftest.py.
PLANTED_FAULTS = {
    PLANT_STALE_ENV: ("stale triton_kernels without SparseMatrix", make_stale_copy),
    PLANT_MX_SCALE_ENV: ("triton_kernels whose Hopper MXFP4 upcast is one scale exponent off", make_mx_scale_fault_copy),
    PLANT_TOPK_ENV: ("triton_kernels whose topk softmax runs at temperature 1/1.5", make_topk_fault_copy),
}
