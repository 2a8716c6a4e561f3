"""Upstream release sources the test bed keeps for tests and for `gracectl release check` (never committed).

vLLM's source release (the sdist on PyPI) is the upstream truth for what its build fetches and pins; the real
triton_kernels trees are the ones vLLM's official wheels vendor (vllm/third_party/triton_kernels, file for file
Triton's python/triton_kernels/triton_kernels at the release's cmake pin), read out of the wheel with HTTP range
requests. Both go through adapters.package_index (checked against the index's sha256, cached in the state
folder's upstream/ cache, which `release check` shares: GRACECTL_UPSTREAM_CACHE in .ci/run).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gracectl.adapters.package_index import PackageIndex
from gracectl.errors import TestbedError, UpstreamError
from gracectl.testbed.progress import say

PYPI_SIMPLE = "https://pypi.org/simple"
VENDORED = "vllm/third_party/triton_kernels/"


def upstream_cache(root: Path) -> Path:
    return root / "upstream"


def vllm_sdist(root: Path, version: str) -> Path:
    """The extracted build files and Python source of vllm-<version>.tar.gz, fetched once."""
    try:
        return PackageIndex(PYPI_SIMPLE, upstream_cache(root)).sdist("vllm", version)
    except UpstreamError as exc:
        raise TestbedError(f"{exc}: the host needs PyPI for test-bed set-up") from None


def vendored_triton_kernels(root: Path, version: str) -> Path:
    """The triton_kernels package the official vllm==<version> aarch64 wheel vendors, extracted once (its
    *.py files: what vLLM's cmake copies), read out of the wheel without downloading it."""
    dest = upstream_cache(root) / "triton_kernels" / f"vllm-{version}-vendored" / "triton_kernels"
    if (dest / "__init__.py").is_file():
        return dest
    say(f"reading triton_kernels out of the official vllm=={version} aarch64 wheel (HTTP range requests)")
    try:
        wheel, files = PackageIndex(PYPI_SIMPLE, upstream_cache(root)).wheel_files("vllm", version, VENDORED)
    except UpstreamError as exc:
        raise TestbedError(f"{exc}: the host needs PyPI for test-bed set-up") from None
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for name, data in files.items():
        if name.endswith(".py"):
            target = partial / name[len(VENDORED):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    if not (partial / "__init__.py").is_file():
        raise TestbedError(f"{wheel} vendors no {VENDORED}__init__.py")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest
