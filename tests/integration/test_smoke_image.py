"""`gracectl smoke` for real: the suite baked into linux/arm64 images built from vllm/Dockerfile, run under qemu.

- the fallback release (v0.19.0) passes the imports level with vLLM's vendored triton_kernels;
- a tfa image whose top-level triton_kernels was removed fails it: exit 6, one line naming the failed test,
  and a smoke record that says failed (promotion then refuses it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from gracectl.adapters import docker
from gracectl.checkout import REPO_ROOT

pytestmark = pytest.mark.integration


def gracectl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gracectl", *args], capture_output=True, text=True,
                          timeout=1500, cwd=REPO_ROOT)


def build(bed, release: str, out) -> str:
    record = out / f"{release}.json"
    r = gracectl("build", release, "--vllm-build", "source", "--mirror", str(bed.mirror_path), "--build-number", "9100", "--record", str(record))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(record.read_text())["image"]


def smoke(image: str, out) -> tuple[subprocess.CompletedProcess, dict]:
    record = out / f"smoke-{uuid.uuid4().hex[:8]}.json"
    r = gracectl("smoke", image, "--level", "imports", "--gpus", "none", "--record", str(record),
                 "--junit", str(record.with_suffix(".xml")))
    return r, json.loads(record.read_text())


def test_fallback_image_passes_imports_with_the_vendored_triton_kernels(bed, tmp_path):
    image = build(bed, "v0.19.0", tmp_path)
    r, record = smoke(image, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert record["passed"] is True and record["level"] == "imports"
    assert record["versions"]["triton_kernels_mode"] == "vendored"
    assert "/vllm/third_party/triton_kernels" in record["versions"]["triton_kernels"]


def test_tfa_image_without_its_triton_kernels_fails_imports(bed, tmp_path):
    image = build(bed, "v0.19.0-tfa", tmp_path)
    broken = f"gracectl-test/tfa-without-triton-kernels:{uuid.uuid4().hex[:8]}"
    # docker commit, not a build: BuildKit would look the local arm64 base up in a registry.
    container = docker.run(["create", "--entrypoint", "pip", image, "uninstall", "-y", "triton_kernels"]).stdout.strip()
    try:
        docker.run(["start", "--attach", container])
        docker.run(["commit", "--change", 'ENTRYPOINT ["vllm", "serve"]', container, broken])
    finally:
        docker.run(["rm", container])
    try:
        r, record = smoke(broken, tmp_path)
    finally:
        docker.run(["rmi", broken])
    assert r.returncode == 6, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "test_triton_kernels_is_the_expected_copy" in last
    assert record["passed"] is False
    assert any("test_triton_kernels_is_the_expected_copy" in t for t in record["failed_tests"])
    assert record["versions"]["triton_kernels_mode"] == "vendored"  # what it found, not what it should be


def test_the_sbom_lists_the_dpkg_database_of_a_real_arm64_image(bed):
    """The OS packages of the test bed's arm64 runtime base (debootstrapped Debian, under qemu): every package its
    dpkg database says is installed, with the distribution in each purl."""
    from gracectl.image import sbom

    image = f"{bed.state.base_image('runtime-base')}-arm64"
    found = sbom.os_packages(image)
    assert found["os"] == {"id": "debian", "version_id": "12"}
    names = {p["name"]: p for p in found["packages"]}
    assert {"libc6", "dpkg", "libibverbs1", "python3"} <= set(names) and len(names) > 100
    assert names["libibverbs1"]["arch"] == "arm64"
    bom = sbom.bom_from_inspect({"installed": []}, image, found)
    assert sbom.packages(bom)["deb:libibverbs1"]["origin"] == "dpkg"

