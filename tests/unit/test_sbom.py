"""The SBOM of an image from pip's inspect report (gracectl.image.sbom), and the package diff of two images."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gracectl.image import sbom
from gracectl.errors import UsageError
from gracectl.image.smoke import deselections, pytest_args


def dist(name, version, url="", installer="uv"):
    d = {"metadata": {"name": name, "version": version}, "installer": installer}
    if url:
        d["direct_url"] = {"url": url, "archive_info": {}}
    return d


REPORT_A = {"version": "1", "installed": [dist("torch", "2.10.0"), dist("Triton", "3.6.0", "file:///wheels/triton/t.whl"),
                                          dist("triton_kernels", "1.0.0", "file:///wheels/triton_kernels/tk.whl"),
                                          dist("vllm", "0.19.0")]}
REPORT_B = {"version": "1", "installed": [dist("torch", "2.10.0"), dist("triton", "3.6.0", "file:///wheels/triton/t.whl"),
                                          dist("vllm", "0.19.0", "file:///wheels/vllm/v.whl"), dist("numba", "0.61.2")]}


def test_bom_is_cyclonedx_with_one_component_per_distribution_and_its_origin():
    bom = sbom.bom_from_inspect(REPORT_A, "reg/img:tag")
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    assert bom["metadata"]["component"]["name"] == "reg/img:tag"
    comps = {c["name"]: c for c in bom["components"]}
    assert comps["Triton"]["purl"] == "pkg:pypi/triton@3.6.0"
    props = {p["name"]: p["value"] for p in comps["Triton"]["properties"]}
    assert props == {"gracectl:origin": "file:///wheels/triton/t.whl", "gracectl:installer": "uv"}
    assert {p["name"]: p["value"] for p in comps["torch"]["properties"]}["gracectl:origin"] == "package index"


def test_diff_names_added_removed_and_changed_packages():
    a, b = sbom.bom_from_inspect(REPORT_A, "a"), sbom.bom_from_inspect(REPORT_B, "b")
    d = sbom.diff(a, b)
    assert d["removed"] == {"triton-kernels": "1.0.0"}
    assert d["added"] == {"numba": "0.61.2"}
    assert list(d["changed"]) == ["vllm"]  # same version, another origin (a wheel file, not the index)
    assert d["changed"]["vllm"]["to"]["origin"] == "file:///wheels/vllm/v.whl"
    assert d["same"] == 2
    assert sbom.diff(a, a) == {"added": {}, "removed": {}, "changed": {}, "same": 4}


def test_report_packages_diffs_two_sbom_record_files(tmp_path):
    for name, report in (("a", REPORT_A), ("b", REPORT_B)):
        record = {"kind": "sbom", "image": f"img-{name}", "packages": len(report["installed"]),
                  "bom": sbom.bom_from_inspect(report, f"img-{name}")}
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    r = subprocess.run([sys.executable, "-m", "gracectl", "report", "--packages", str(tmp_path / "a.json"),
                        "--packages", str(tmp_path / "b.json")], capture_output=True, text=True,
                       env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "1 only in A, 1 only in B, 1 changed, 2 the same" in r.stdout
    assert "triton-kernels" in r.stdout and "numba" in r.stdout
    (tmp_path / "c.json").write_text(json.dumps({"kind": "smoke"}))
    with pytest.raises(UsageError, match="is not an SBOM record"):
        sbom.read_record(tmp_path / "c.json")


DPKG_OUTPUT = ('PRETTY_NAME="Ubuntu 24.04.2 LTS"\nID=ubuntu\nVERSION_ID="24.04"\n@@dpkg@@\n'
               "curl\t8.5.0-2ubuntu10.6\tarm64\tii \n"
               "cuda-cudart-12-9\t12.9.79-1\tarm64\tii \n"
               "libnccl2\t2.27.3-1+cuda12.9\tarm64\tii \n"
               "removed-pkg\t1.0\tarm64\trc \n")


def test_the_sbom_lists_the_os_and_cuda_packages_of_the_dpkg_database(monkeypatch):
    from gracectl.adapters import docker

    calls = []
    monkeypatch.setattr(docker, "run", lambda args, **kw: calls.append(args) or
                        subprocess.CompletedProcess(args, 0, DPKG_OUTPUT, ""))
    dpkg = sbom.os_packages("img")
    assert calls[0][:8] == ["run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "sh"]
    assert dpkg["os"] == {"id": "ubuntu", "version_id": "24.04"}
    assert [p["name"] for p in dpkg["packages"]] == ["curl", "cuda-cudart-12-9", "libnccl2"]  # installed only
    bom = sbom.bom_from_inspect(REPORT_A, "img", dpkg)
    comps = {c["name"]: c for c in bom["components"]}
    assert comps["cuda-cudart-12-9"]["purl"] == "pkg:deb/ubuntu/cuda-cudart-12-9@12.9.79-1?arch=arm64&distro=ubuntu-24.04"
    assert {p["name"]: p["value"] for p in comps["libnccl2"]["properties"]} == {"gracectl:origin": "dpkg",
                                                                                 "gracectl:cuda": "true"}
    assert "gracectl:cuda" not in {p["name"] for p in comps["curl"]["properties"]}
    # What a rollback changes, OS packages included (named deb:NAME beside the Python distributions).
    newer = {**dpkg, "packages": [{**p, "version": "12.9.80-1"} if p["name"] == "cuda-cudart-12-9" else p
                                  for p in dpkg["packages"] if p["name"] != "curl"]}
    d = sbom.diff(bom, sbom.bom_from_inspect(REPORT_A, "img", newer))
    assert d["removed"] == {"deb:curl": "8.5.0-2ubuntu10.6"} and list(d["changed"]) == ["deb:cuda-cudart-12-9"]
    assert d["same"] == 5  # four Python distributions and libnccl2


def test_an_sbom_is_attested_as_cyclonedx_about_the_image():
    stmt = sbom.statement("reg/img", "sha256:" + "ab" * 32, {"bom": {"bomFormat": "CycloneDX"}})
    assert stmt["predicateType"] == "https://cyclonedx.org/bom" and stmt["predicate"] == {"bomFormat": "CycloneDX"}
    assert stmt["subject"] == [{"name": "reg/img", "digest": {"sha256": "ab" * 32}}]


def test_only_the_tests_a_named_standin_breaks_are_deselected():
    assert deselections(["cuda.runtime_packages: cuda-nvcc-12-9 (not installed: x)"]) == {}
    line = "torch.version: 2.10.0+cu129 -> 2.10.0 (STAND-IN: PyPI's CPU torch)"
    assert deselections([line]) == {"test_imports.py::test_torch_is_a_cuda_build_with_sm90": line}
    args = pytest_args("imports", list(deselections([line])))
    assert "--deselect=test_imports.py::test_torch_is_a_cuda_build_with_sm90" in args


def test_every_standin_deselection_names_a_test_of_the_suite():
    from gracectl.checkout import SMOKE_TESTS
    from gracectl.image.smoke import STANDIN_DESELECT

    for tests in STANDIN_DESELECT.values():
        for test in tests:
            path, name = test.split("::")
            assert f"def {name}(" in (SMOKE_TESTS / path).read_text(), test
