#!/usr/bin/env python3
"""Fetch, at build time, the TRTLLM batched-GEMM headers that FlashInfer's MoE JIT otherwise downloads from
FLASHINFER_CUBINS_REPOSITORY at run time (which fails on air-gapped GPU nodes).

Needed exactly when the installed vLLM requires flashinfer-python (the real vLLM 0.19.0 does): then a missing
FlashInfer or a failed download fails the build. A vLLM that does not require FlashInfer needs nothing.
"""

import os
import sys
from importlib import metadata


def vllm_requires_flashinfer() -> bool:
    return any(r.split(";")[0].strip().startswith("flashinfer-python") for r in metadata.requires("vllm") or [])


if not os.environ.get("FLASHINFER_CUBINS_REPOSITORY"):
    # A mirror without FlashInfer's cubin repository (the plan lists it as STAND-IN): the MoE JIT will need it.
    print("flashinfer-prefetch: STAND-IN mirror: no FlashInfer cubin repository, TRTLLM headers not fetched")
    sys.exit(0)
if not vllm_requires_flashinfer():
    print("flashinfer-prefetch: the installed vLLM does not require flashinfer-python; nothing to fetch")
    sys.exit(0)

from flashinfer.artifacts import ArtifactPath, CheckSumHash  # noqa: E402
from flashinfer.jit import env as jit_env  # noqa: E402
from flashinfer.jit.cubin_loader import download_trtllm_headers, get_cubin  # noqa: E402

artifact = ArtifactPath.TRTLLM_GEN_BMM
dest = jit_env.FLASHINFER_CUBIN_DIR / "flashinfer" / "trtllm" / "batched_gemm" / "trtllmGen_bmm_export"
checksums = get_cubin(f"{artifact}/checksums.txt", CheckSumHash.TRTLLM_GEN_BMM)
download_trtllm_headers("bmm", dest, f"{artifact}/include/trtllmGen_bmm_export", artifact, checksums)
headers = sorted(p.name for p in dest.glob("*.h"))
if not headers:
    sys.exit(f"flashinfer-prefetch: no headers arrived in {dest}")
print(f"flashinfer-prefetch: {len(headers)} TRTLLM BMM headers in {dest}")
