"""gracectl smoke/bench runner (command lines, JUnit -> record, record files) and the smoke suite's
triton_kernels contract check with a planted stale package.

Docker is the one thing replaced here (run_in_image); the suite, pytest and the JUnit XML are real. The
real-image runs are on the GPU (see the report in the lead's notes) and in the integration tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gracectl.image import bench, smoke
from gracectl.adapters import docker
from gracectl.errors import CommandFailedError, SmokeFailedError, UsageError
from gracectl.record_files import write_json

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "smoke_tests"
sys.path.insert(0, str(SUITE))
import triton_kernels_contract as tkc  # noqa: E402  (lives in the suite: it runs inside the image)

# No vLLM in these runs: the contract is derived from the test bed's stand-in vLLM (vLLM 0.19.0's imports).
STANDIN_VLLM = REPO / "scripts" / "testbed" / "standins" / "vllm" / "vllm"
STANDIN_NEEDS = tkc.required(tkc.derive_contract(STANDIN_VLLM), "3.6")


# ---------------------------------------------------------------------------- command lines


def test_marker_expression_levels():
    assert smoke.marker_expression("kernels") == "kernels"
    assert smoke.marker_expression("all") == "imports or kernels or upstream or collectives or engine or server"
    with pytest.raises(UsageError, match="unknown smoke level 'gpu'"):
        smoke.marker_expression("gpu")


def test_container_command_with_and_without_gpus(tmp_path):
    args = smoke.container_command("sha256:abc", ["-m", "pytest"], out_dir=tmp_path, gpus="all")
    assert args == [docker.binary(), "run", "--rm", "--pull", "never", "--gpus", "all", "--ipc=host",
                    "-e", "PYTHONUNBUFFERED=1", "-v", f"{tmp_path}:/gracectl-out", "--entrypoint", "python",
                    "sha256:abc", "-m", "pytest"]
    no_gpu = smoke.container_command("img:tag", [], out_dir=tmp_path, gpus="none")
    assert "--gpus" not in no_gpu and no_gpu[-1] == "img:tag"
    with pytest.raises(UsageError, match="--gpus must be one of"):
        smoke.container_command("img", [], out_dir=tmp_path, gpus="0,1")
    labelled = smoke.container_command("img", [], out_dir=tmp_path, gpus="none", run_id="jenkins-gh200-42")
    assert labelled[labelled.index("--label") + 1] == "io.gracectl.run=jenkins-gh200-42"


def test_pytest_args_run_the_baked_suite_at_the_level():
    assert smoke.pytest_args("all") == [
        "-m", "pytest", "/opt/gracectl/smoke_tests", "-m", "imports or kernels or upstream or collectives or engine or server", "-rA",
        "--junitxml=/gracectl-out/junit.xml"]


def test_bench_args_and_bad_tokens():
    assert bench.bench_args([16, 8192]) == ["/opt/gracectl/smoke_tests/bench_moe.py", "--tokens", "16,8192",
                                            "--json", "/gracectl-out/bench.json"]
    with pytest.raises(UsageError):
        bench.bench_args([0])


def test_bench_record_adds_common_fields_and_rejects_other_json():
    rec = bench.bench_record("img:1", "sha256:1", {"kind": "bench", "schema": 1, "gpu": {"name": "H100"},
                                                   "results": [{"name": "moe_gemm1_tokens16"}]}, created="T")
    assert rec == {"kind": "bench", "schema": 1, "image": "img:1", "image_id": "sha256:1", "created": "T",
                   "gpu": {"name": "H100"}, "results": [{"name": "moe_gemm1_tokens16"}]}
    with pytest.raises(CommandFailedError, match="no bench record"):
        bench.bench_record("img:1", "sha256:1", {"kind": "smoke"})


def test_cli_rejects_bad_level_and_tokens_with_usage_exit_code():
    for args, message in ((["smoke", "img", "--level", "gpu"], "unknown smoke level"),
                          (["bench", "img", "--tokens", "1,x"], "--tokens takes comma-separated integers")):
        p = subprocess.run([sys.executable, "-m", "gracectl", *args], capture_output=True, text=True)
        assert p.returncode == 2, p.stderr
        assert p.stderr.strip().startswith("error: ") and message in p.stderr


# ---------------------------------------------------------------------------- JUnit -> record (real pytest XML)

MINI_SUITE = '''
import pytest

@pytest.fixture(scope="session", autouse=True)
def _props(record_testsuite_property):
    yield
    record_testsuite_property("torch", "2.10.0+cu129")
    record_testsuite_property("triton_kernels", "/opt/venv/lib/python3.12/site-packages/triton_kernels")
    record_testsuite_property("gpu", "NVIDIA GH200 480GB")
    record_testsuite_property("gpu_capability", "sm_90")

def test_ok():
    pass

@pytest.mark.parametrize("dist", ["triton"])
def test_version(dist):
    pytest.fail(f"{dist} is 3.5.1, the image expects 3.6.0", pytrace=False)

def test_gpu_only():
    pytest.skip("no NVIDIA GPU in this container")
'''


def run_mini_suite(tmp_path: Path, body: str = MINI_SUITE) -> Path:
    (tmp_path / "suite").mkdir(exist_ok=True)
    (tmp_path / "suite" / "pytest.ini").write_text("[pytest]\n")  # rootdir = the suite, as in the image
    (tmp_path / "suite" / "test_mini.py").write_text(body)
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "suite"),
                    f"--junitxml={junit}"], capture_output=True, text=True, cwd=tmp_path)
    return junit


def test_parse_junit_and_smoke_record(tmp_path):
    junit = smoke.parse_junit(run_mini_suite(tmp_path))
    outcomes = {t["name"]: t["outcome"] for t in junit.tests}
    assert outcomes == {"test_mini::test_ok": "passed", "test_mini::test_version[triton]": "failed",
                        "test_mini::test_gpu_only": "skipped"}
    rec = smoke.smoke_record("gh200-vllm-tfa:v0.19.0-tfa", "sha256:" + "a" * 64, "imports", junit, created="T")
    assert rec["passed"] is False
    assert rec["failed_tests"] == ["test_mini::test_version[triton]"]
    assert rec["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 1}
    failed = next(t for t in rec["tests"] if t["outcome"] == "failed")
    assert failed["message"] == "Failed: triton is 3.5.1, the image expects 3.6.0"
    skipped = next(t for t in rec["tests"] if t["outcome"] == "skipped")
    assert "no NVIDIA GPU" in skipped["message"]
    assert rec["versions"] == {"torch": "2.10.0+cu129",
                               "triton_kernels": "/opt/venv/lib/python3.12/site-packages/triton_kernels"}
    assert rec["gpu"] == {"name": "NVIDIA GH200 480GB", "capability": "sm_90"}
    assert {k: rec[k] for k in ("kind", "schema", "image", "level", "created")} == {
        "kind": "smoke", "schema": 1, "image": "gh200-vllm-tfa:v0.19.0-tfa", "level": "imports", "created": "T"}


def test_record_with_only_skips_is_not_passing(tmp_path):
    junit = smoke.parse_junit(run_mini_suite(tmp_path, "import pytest\ndef test_a():\n    pytest.skip('no GPU')\n"))
    rec = smoke.smoke_record("i", "sha256:1", "kernels", junit)
    assert rec["passed"] is False and rec["failed_tests"] == []


def test_write_record_replaces_whole_file(tmp_path):
    path = tmp_path / "out" / "smoke-record.json"
    write_json(path, {"kind": "smoke", "n": 1})
    write_json(path, {"kind": "smoke", "n": 2})
    assert json.loads(path.read_text()) == {"kind": "smoke", "n": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["smoke-record.json"]


# ---------------------------------------------------------------------------- run_smoke, docker replaced


@pytest.fixture
def local_runner(tmp_path, monkeypatch):
    """run_in_image that runs the python args here: the mini suite instead of the baked one, out_dir real."""
    suite = tmp_path / "suite"

    def fake_run_in_image(image, python_args, *, gpus, timeout, run_id=""):
        out_dir = tmp_path / "container-out"
        out_dir.mkdir()
        args = [a.replace(smoke.OUT_IN_CONTAINER, str(out_dir)).replace(smoke.SUITE_IN_IMAGE, str(suite))
                for a in python_args]
        result = subprocess.run([sys.executable, *args, "-p", "no:cacheprovider"], capture_output=True, text=True)
        return "sha256:" + "b" * 64, subprocess.CompletedProcess(args, result.returncode, result.stdout, ""), out_dir

    monkeypatch.setattr(smoke, "run_in_image", fake_run_in_image)
    return suite


def test_run_smoke_failure_writes_record_and_names_failed_tests(tmp_path, local_runner):
    local_runner.mkdir()
    (local_runner / "pytest.ini").write_text("[pytest]\nmarkers =\n    imports: x\n")
    (local_runner / "test_imports.py").write_text(textwrap.dedent('''
        import pytest
        pytestmark = pytest.mark.imports
        def test_good():
            pass
        def test_contract():
            pytest.fail("triton_kernels.tensor.SparseMatrix is missing", pytrace=False)
    '''))
    junit, record = tmp_path / "w" / "junit.xml", tmp_path / "w" / "smoke-record.json"
    with pytest.raises(SmokeFailedError) as err:
        smoke.run_smoke("img:t", level="imports", junit_path=junit, record_path=record, gpus="none")
    assert err.value.exit_code == 6
    assert str(err.value) == f"smoke level imports of img:t failed: test_imports::test_contract (record: {record})"
    rec = json.loads(record.read_text())
    assert rec["image_id"] == "sha256:" + "b" * 64 and rec["passed"] is False
    assert junit.exists()
    assert not (tmp_path / "container-out").exists()  # the mounted folder is cleaned up


def test_run_smoke_without_junit_is_a_command_failure(tmp_path, local_runner):
    local_runner.mkdir()  # a conftest that cannot load: pytest stops before writing any JUnit XML
    (local_runner / "conftest.py").write_text("raise RuntimeError('broken image')\n")
    with pytest.raises(CommandFailedError, match="smoke suite did not run in img:t"):
        smoke.run_smoke("img:t", junit_path=tmp_path / "j.xml", record_path=tmp_path / "r.json", gpus="none")
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------------------- planted fault (contract logic)

FAKE_TENSOR_PY = '''
from dataclasses import dataclass

BIT = object()
FP4 = object()


@dataclass
class Storage:  # a decorated class before the one removed, as in the real tensor.py
    data: object


class Bitmatrix:
    pass


@dataclass
class SparseMatrix:
    indx: object
    vals: object

    def __post_init__(self):
        self.mask_metadata = None


def make_ragged_tensor_metadata(*a):
    pass


def convert_layout(*a):
    pass


def wrap_torch_tensor(*a):
    pass
'''

FAKE_MODULES = {
    "__init__.py": "",
    "swiglu.py": "",
    "matmul_ogs.py": "".join(f"class {n}: pass\n" for n in STANDIN_NEEDS["matmul_ogs"]),
    "tensor.py": FAKE_TENSOR_PY,
    "topk.py": "from triton_kernels.tensor import SparseMatrix\ndef topk(): pass\n",
    "numerics.py": "class InFlexData: pass\n",
    "matmul_ogs_details/__init__.py": "",
    "matmul_ogs_details/opt_flags.py": "",
    "tensor_details/__init__.py": "",
    "tensor_details/layout.py": "class StridedLayout: pass\n",
}


@pytest.fixture
def fake_triton_kernels(tmp_path) -> Path:
    """A plain-Python stand-in with the package layout and every name vLLM imports (no real triton here)."""
    root = tmp_path / "site"
    for rel, text in FAKE_MODULES.items():
        (root / "triton_kernels" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "triton_kernels" / rel).write_text(text)
    return root


def test_make_stale_copy_drops_only_sparse_matrix(fake_triton_kernels, tmp_path):
    dest = tkc.make_stale_copy(fake_triton_kernels / "triton_kernels", tmp_path / "stale")
    text = (dest / "triton_kernels" / "tensor.py").read_text()
    assert "SparseMatrix" not in text
    # Everything else stays: only the one class is gone.
    assert text == FAKE_TENSOR_PY.replace(FAKE_TENSOR_PY[FAKE_TENSOR_PY.index("@dataclass\nclass SparseMatrix"):
                                                         FAKE_TENSOR_PY.index("def make_ragged")], "")
    assert (fake_triton_kernels / "triton_kernels" / "tensor.py").read_text() == FAKE_TENSOR_PY  # source untouched
    with pytest.raises(RuntimeError, match="expected one `class SparseMatrix`"):
        tkc.make_stale_copy(dest / "triton_kernels", tmp_path / "again")


def run_contract_tests(site: Path, expect: dict, tmp_path: Path, *, stale: bool) -> subprocess.CompletedProcess:
    expect_json = tmp_path / "expect.json"
    expect_json.write_text(json.dumps(expect))
    env = {**os.environ, "PYTHONPATH": str(site), tkc.CONTRACT_ENV: str(STANDIN_VLLM)}
    env.pop(tkc.PLANT_STALE_ENV, None)
    if stale:
        env[tkc.PLANT_STALE_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(SUITE / "test_imports.py"), "-m", "imports", "-rA",
         "-k", "has_every_name or expected_copy", f"--expect-json={expect_json}"],
        capture_output=True, text=True, env=env, cwd=tmp_path)


def test_contract_passes_on_a_complete_package(fake_triton_kernels, tmp_path):
    # image.json may carry the expectations under the label names.
    p = run_contract_tests(fake_triton_kernels, {"labels": {"io.gracectl.triton_kernels": "site-packages"}},
                           tmp_path, stale=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed" in p.stdout
    assert f"triton_kernels loaded from {fake_triton_kernels / 'triton_kernels'} (site-packages" in p.stdout


def test_planted_stale_package_fails_imports_naming_sparse_matrix(fake_triton_kernels, tmp_path):
    p = run_contract_tests(fake_triton_kernels, {"triton_kernels": "site-packages"}, tmp_path, stale=True)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "PLANTED FAULT: stale triton_kernels without SparseMatrix" in p.stdout
    assert "FAILED" in p.stdout and "test_triton_kernels_has_every_name_vllm_imports" in p.stdout
    failure = next(line for line in p.stdout.splitlines() if line.startswith("triton_kernels at "))
    assert "triton_kernels.tensor.SparseMatrix is missing" in failure
    assert "import triton_kernels.topk failed: ImportError: cannot import name 'SparseMatrix'" in failure
    assert "Failed to import Triton kernels" in failure


def test_a_vllm_folder_in_the_working_directory_is_not_vllm(tmp_path):
    (tmp_path / "vllm").mkdir()  # like this repository's vllm/ (the Dockerfile), a namespace package
    (tmp_path / "vllm" / "Dockerfile").write_text("FROM scratch\n")
    code = f"import sys; sys.path[:0] = ['', {str(SUITE)!r}]; import triton_kernels_contract as t; print(t.vllm_installed())"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert p.stdout.strip() == "False", p.stderr
