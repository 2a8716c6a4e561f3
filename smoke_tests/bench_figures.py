"""The MoE benchmark's memory figures (used by bench_moe.py): the bytes a routed GEMM must read from HBM, and
the GPU's peak HBM bandwidth to hold the achieved rate against.

At decode sizes (up to ~2048 tokens at gpt-oss shapes) the routed GEMMs are memory-bound: each expert that a
token hits has its whole weight matrix read, whatever the number of its tokens. Their FLOP ratio to a dense
matmul says little there; the achieved bandwidth against the peak says how close to the limit they run.

Bytes counted (the least a kernel can read; a kernel reading an activation row once per expert, or spilling
partial sums, moves more, never less):
  - weights of the experts actually hit: bf16 2 bytes a value; MXFP4 half a byte plus one e8m0 scale byte
    per 32 values (the scales);
  - the fp32 biases of those experts;
  - the activations: GEMM1 the tokens' rows (gathered, each read once), GEMM2 every (token, expert) row;
  - GEMM2's fp32 gate weights (gammas).
Writes are not counted.

Plain Python (no torch): gracectl's unit tests check the arithmetic and the table on CPU.
"""

from __future__ import annotations

import ctypes

MX_BLOCK = 32
WEIGHT_BYTES = {"bf16": 2.0, "mxfp4": 0.5}

# Peak HBM bandwidth (bytes/s) by device name, from NVIDIA's datasheets; used where NVML cannot tell (no
# libnvidia-ml). Most specific names first: the first substring found in the device name wins.
PEAK_HBM_TABLE = (
    ("GH200 144G", 4.9e12),   # GH200 with 144 GB HBM3e
    ("GH200", 4.0e12),        # GH200 480GB: 96 GB HBM3
    ("H200", 4.8e12),         # H200 SXM/NVL 141 GB HBM3e
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),        # H100 SXM5 80 GB HBM3
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),       # 40 GB
)


def gemm_read_bytes(*, weights: str, experts_hit: int, k_dim: int, n_dim: int, act_rows: int,
                    gammas: int = 0) -> dict[str, int]:
    """The bytes one routed GEMM (act_rows x k_dim) @ (experts_hit x k_dim x n_dim) must read, by part, and
    "total". `weights`: "bf16" or "mxfp4"; `gammas`: the number of fp32 gate weights read (GEMM2)."""
    if weights not in WEIGHT_BYTES:
        raise ValueError(f"unknown weight format {weights!r} (known: {', '.join(WEIGHT_BYTES)})")
    if weights == "mxfp4" and k_dim % MX_BLOCK:
        raise ValueError(f"MXFP4 needs the reduction axis to be a multiple of {MX_BLOCK}, got {k_dim}")
    parts = {
        "weights": int(experts_hit * k_dim * n_dim * WEIGHT_BYTES[weights]),
        "scales": experts_hit * (k_dim // MX_BLOCK) * n_dim if weights == "mxfp4" else 0,
        "bias": experts_hit * n_dim * 4,
        "activations": act_rows * k_dim * 2,
        "gammas": gammas * 4,
    }
    return {**parts, "total": sum(parts.values())}


def achieved(total_bytes: int, ms: float, peak_bytes_per_s: float | None) -> dict:
    """hbm_gbps (GB/s, 1e9) and ratio_vs_hbm_peak (None without a peak) of reading total_bytes in ms."""
    rate = total_bytes / (ms * 1e-3)
    return {"hbm_gbps": round(rate / 1e9, 1),
            "ratio_vs_hbm_peak": round(rate / peak_bytes_per_s, 3) if peak_bytes_per_s else None}


def peak_from_table(name: str) -> float | None:
    for key, value in PEAK_HBM_TABLE:
        if key in name:
            return value
    return None


def peak_from_clock(max_mem_clock_mhz: float, bus_width_bits: int) -> float:
    """HBM peak bytes/s: two transfers per memory clock (double data rate) over the bus width."""
    return max_mem_clock_mhz * 1e6 * 2 * bus_width_bits / 8


def nvml_memory(index: int = 0) -> tuple[int, int]:
    """(max memory clock MHz, memory bus width bits) of GPU `index` from NVML (libnvidia-ml, which the NVIDIA
    container runtime mounts with the driver). Raises OSError/RuntimeError where it cannot tell."""
    lib = ctypes.CDLL("libnvidia-ml.so.1")
    if lib.nvmlInit_v2() != 0:
        raise RuntimeError("nvmlInit_v2 failed")
    try:
        handle, clock, width = ctypes.c_void_p(), ctypes.c_uint(), ctypes.c_uint()
        for call, args in (("nvmlDeviceGetHandleByIndex_v2", (ctypes.c_uint(index), ctypes.byref(handle))),
                           ("nvmlDeviceGetMaxClockInfo", (handle, ctypes.c_int(2), ctypes.byref(clock))),  # NVML_CLOCK_MEM
                           ("nvmlDeviceGetMemoryBusWidth", (handle, ctypes.byref(width)))):
            rc = getattr(lib, call)(*args)
            if rc != 0:
                raise RuntimeError(f"{call} returned NVML error {rc}")
        return clock.value, width.value
    finally:
        lib.nvmlShutdown()


def peak_hbm(name: str, index: int = 0) -> dict:
    """{"bytes_per_s", "source"}: from NVML's max memory clock and bus width where it answers, else the table
    by device name, else None (then no ratio is printed)."""
    try:
        clock, width = nvml_memory(index)
        if clock and width:
            return {"bytes_per_s": peak_from_clock(clock, width),
                    "source": f"NVML: max memory clock {clock} MHz x 2 (DDR) x {width}-bit bus",
                    "table_bytes_per_s": peak_from_table(name)}
    except (OSError, RuntimeError, AttributeError) as exc:
        nvml_error = f"{type(exc).__name__}: {exc}"
    else:
        nvml_error = "NVML gave no clock or bus width"
    value = peak_from_table(name)
    return {"bytes_per_s": value,
            "source": (f"datasheet table ({nvml_error})" if value else f"unknown GPU {name!r} ({nvml_error})")}
