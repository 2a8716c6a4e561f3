"""The node's NVIDIA driver against the image's minimum (image.json's min_driver): one line naming both.

An image's CUDA fails at its first call on an older driver ("CUDA driver version is insufficient"), which says
neither version. The smoke suite's GPU fixture checks this first, inside the image; `gracectl doctor` on the smoke
node runs the same check (this file, loaded by path as triton_kernels_contract is), so both say the same line.
Standard library only: it runs in the image.
"""

from __future__ import annotations

import ctypes
import re
import subprocess

QUERY = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]


def version_key(version: str) -> tuple[int, ...]:
    """580.65.06 -> (580, 65, 6): NVIDIA's driver versions compare field by field, as numbers."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def from_query(output: str) -> str:
    """The driver of `nvidia-smi --query-gpu=driver_version --format=csv,noheader` (one line per GPU, all alike)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[0] if lines and version_key(lines[0]) else ""


def floor_problem(driver: str, floor: str, cuda: str, release: str) -> str:
    """"" when `driver` meets `floor`; else the one line saying both (and what to do)."""
    if not floor or version_key(driver) >= version_key(floor):
        return ""
    return (f"this node's NVIDIA driver {driver} is older than the minimum {floor} of image {release} (CUDA {cuda}): "
            f"its CUDA fails at the first call; upgrade the node's driver to {floor} or newer, or see CLAWMINE.md "
            f"'Driver floor' (VLLM_ENABLE_CUDA_COMPATIBILITY)")


def node_driver() -> str:
    """The driver the container sees: nvidia-smi (mounted by NVIDIA's container toolkit), else NVML; "" if neither."""
    try:
        done = subprocess.run(QUERY, capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and from_query(done.stdout):
            return from_query(done.stdout)
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        buf = ctypes.create_string_buffer(96)
        if nvml.nvmlInit_v2() == 0 and nvml.nvmlSystemGetDriverVersion(buf, len(buf)) == 0:
            return buf.value.decode()
    except (OSError, AttributeError):
        pass
    return ""
