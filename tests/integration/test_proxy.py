"""The test bed's caching PyPI proxy (proxpi): real PyPI packages, kept on disk, reached over plain HTTP."""

from __future__ import annotations

import sys
import tomllib

import pytest

from gracectl.adapters import proc
from gracectl.testbed.mirror_file import REAL

pytestmark = pytest.mark.integration


def test_proxy_serves_pypi_files_and_keeps_them(bed, tmp_path):
    status = bed.status()["components"]["proxy"]
    assert status["running"] and status["address"] == bed.state.proxy_url
    proc.run([sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--index-url",
              bed.state.proxy_url + "/", "-d", str(tmp_path), "six==1.17.0"], timeout=300)
    assert [p.name for p in tmp_path.glob("six-1.17.0*.whl")]
    cached = list((bed.root / "pypi-proxy-cache").rglob("six-1.17.0*.whl"))
    assert cached, "the proxy did not keep the file it served"


def test_real_mirror_takes_pypi_through_the_proxy_and_names_each_standin(bed):
    mirror = tomllib.loads(bed.mirror_for(REAL).read_text())
    assert mirror["indexes"]["https://pypi.org/simple"] == bed.state.proxy_url
    assert mirror["versions"] == {"2.10.0+cu129": "2.10.0", "0.25.0+cu129": "0.25.0"}
    assert "CPU build" in mirror["versions_reason"]
    # the real triton_kernels (from the official vLLM wheel) is in the Triton repository the real stack uses
    url = mirror["repos"]["https://github.com/triton-lang/triton.git"]
    files = proc.run(["git", "--git-dir", str(bed.standins.git_root / "triton-lang/triton-real.git"), "ls-tree",
                      "-r", "--name-only", "v3.6.0"]).stdout.split()
    assert url.endswith("triton-lang/triton-real.git")
    assert "python/triton_kernels/triton_kernels/matmul_ogs.py" in files
    assert "python/triton_kernels/triton_kernels/tensor_details/layout.py" in files
