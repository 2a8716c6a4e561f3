"""The SBOM of an image from pip's inspect report (gracectl.sbom), and the package diff of two images."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gracectl import sbom
from gracectl.errors import UsageError
from gracectl.smoke import deselections, pytest_args


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
        sbom.load(str(tmp_path / "c.json"))


def test_only_the_tests_a_named_standin_breaks_are_deselected():
    assert deselections(["cuda.runtime_packages: cuda-nvcc-12-9 (not installed: x)"]) == {}
    line = "torch.version: 2.10.0+cu129 -> 2.10.0 (STAND-IN: PyPI's CPU torch)"
    assert deselections([line]) == {"test_imports.py::test_torch_is_a_cuda_build_with_sm90": line}
    args = pytest_args("imports", list(deselections([line])))
    assert "--deselect=test_imports.py::test_torch_is_a_cuda_build_with_sm90" in args


def test_every_standin_deselection_names_a_test_of_the_suite():
    from gracectl.plan import REPO_ROOT
    from gracectl.smoke import STANDIN_DESELECT

    for tests in STANDIN_DESELECT.values():
        for test in tests:
            path, name = test.split("::")
            assert f"def {name}(" in (REPO_ROOT / "smoke_tests" / path).read_text(), test
