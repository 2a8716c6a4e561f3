"""Upstream release sources the test bed keeps for tests that check the build against them (never committed).

vLLM's source release (the sdist on PyPI) is the upstream truth for what its build fetches: the tests read its
real CMakeLists.txt and cmake/ files. Fetched through PyPI's JSON simple API (PEP 691), checked against the
sha256 PyPI publishes, and cached in the state folder (outside the clone in CI).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from gracectl.adapters import proc
from gracectl.errors import TestbedError
from gracectl.testbed.progress import say

PYPI_SIMPLE = "https://pypi.org/simple"
# The files of the sdist the tests read; the rest (csrc, tests, docs: ~30 MB) is not kept.
KEEP = ("CMakeLists.txt", "cmake/", "setup.py", "use_existing_torch.py", "requirements/", "docker/Dockerfile")


def vllm_sdist(root: Path, version: str) -> Path:
    """The extracted build files of vllm-<version>.tar.gz under root/upstream/, fetched once."""
    dest = root / "upstream" / f"vllm-{version}"
    if (dest / "CMakeLists.txt").is_file():
        return dest
    name = f"vllm-{version}.tar.gz"
    say(f"fetching {name} from PyPI (vLLM's source release: its cmake files are what the tests check against)")
    try:
        req = urllib.request.Request(f"{PYPI_SIMPLE}/vllm/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            files = {f["filename"]: f for f in json.load(r)["files"]}
        if name not in files:
            raise TestbedError(f"PyPI lists no {name}")
        with urllib.request.urlopen(files[name]["url"], timeout=300) as r:
            data = r.read()
    except OSError as exc:
        raise TestbedError(f"could not fetch {name} from PyPI ({exc}): the host needs PyPI for test-bed set-up")
    if hashlib.sha256(data).hexdigest() != files[name]["hashes"]["sha256"]:
        raise TestbedError(f"{name} from PyPI does not match the sha256 PyPI publishes for it")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    tmp = partial / name
    tmp.write_bytes(data)
    with tarfile.open(tmp) as tar:
        prefix = f"vllm-{version}/"
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefix)
                   and m.name[len(prefix):].startswith(KEEP)]
        for m in members:
            m.name = m.name[len(prefix):]
        tar.extractall(partial, members=members, filter="data")
    tmp.unlink()
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest


def vllm_wheel(root: Path, version: str, index_url: str) -> Path:
    """The triton_kernels package vendored in the official vLLM <version> aarch64 wheel (vllm/third_party/
    triton_kernels: Triton's release/3.6.x python/triton_kernels/triton_kernels, file for file), extracted under
    root/upstream/ once. The wheel comes through `index_url` (the test bed's PyPI proxy), which keeps it for the
    real-stack image builds. Never committed: the real upstream code lives only in the state folder."""
    dest = root / "upstream" / f"vllm-{version}-triton_kernels" / "triton_kernels"
    if (dest / "matmul_ogs.py").is_file():
        return dest
    say(f"fetching the official vllm=={version} aarch64 wheel (~385 MB) through {index_url} for its triton_kernels")
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        proc.run([sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--only-binary=:all:",
                  "--platform", "manylinux_2_31_aarch64", "--python-version", "3.12", "--implementation", "cp",
                  "--index-url", index_url + "/", "-d", tmp, f"vllm=={version}"], timeout=3600)
        wheels = list(Path(tmp).glob(f"vllm-{version}-*.whl"))
        if not wheels:
            raise TestbedError(f"pip downloaded no vllm-{version} wheel from {index_url}")
        prefix = "vllm/third_party/triton_kernels/"
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                if name.startswith(prefix) and name.endswith(".py"):
                    target = partial / name[len(prefix):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
    if not (partial / "matmul_ogs.py").is_file():
        raise TestbedError(f"the vllm {version} wheel has no {prefix}matmul_ogs.py")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest
