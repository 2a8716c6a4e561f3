"""STAND-IN for torch._C: only the compile-time CUDA arch list a cu129 torch reports (no kernels here)."""


def _cuda_getArchFlags() -> str:
    return "sm_80 sm_90 sm_100 sm_120"
