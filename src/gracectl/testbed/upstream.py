"""Upstream release sources the test bed keeps for tests that check the build against them (never committed).

vLLM's source release (the sdist on PyPI) is the upstream truth for what its build fetches: the tests read its
real CMakeLists.txt and cmake/ files. Fetched through PyPI's JSON simple API (PEP 691), checked against the
sha256 PyPI publishes, and cached in the state folder (outside the clone in CI).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import urllib.request
from pathlib import Path

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
