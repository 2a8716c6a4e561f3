"""The triton_kernels contract derived from vLLM's source (smoke_tests/triton_kernels_contract.py): synthetic
vLLM sources and triton_kernels trees, the test bed's stand-in vLLM, and the real vLLM sdists where the
cache holds them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "smoke_tests"
sys.path.insert(0, str(SUITE))
from gracectl.testbed import state_dir  # noqa: E402
import triton_kernels_contract as tkc  # noqa: E402  (lives in the suite: it runs inside the image)

# The test bed's upstream cache (`gracectl testbed up`, and the release checks of the integration tier, fill it).
SDISTS = state_dir() / "upstream" / "sdist"
STANDIN_VLLM = REPO / "scripts" / "testbed" / "standins" / "vllm" / "vllm"


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return root


def sdist(version: str) -> Path:
    pkg = SDISTS / f"vllm-{version}" / "vllm"
    if not pkg.is_dir():
        pytest.skip(f"no vLLM {version} sdist at {pkg} (the upstream cache is made by the test bed)")
    return pkg


# ---------------------------------------------------------------------------- derivation

MOE_PY = """
    import logging
    from vllm.platforms import current_platform
    from vllm.utils.import_utils import get_triton_kernels_version
    logger = logging.getLogger(__name__)
    triton_kernels_version = get_triton_kernels_version()

    if triton_kernels_version is not None:
        try:
            import triton_kernels.swiglu
            if triton_kernels_version == "3.8":
                from triton_kernels.matmul import matmul, FnSpecs
            elif triton_kernels_version in ("3.5.1", "3.6"):
                from triton_kernels.matmul_ogs import matmul_ogs as mm, FnSpecs
                if triton_kernels_version != "3.5.1":
                    from triton_kernels.tensor import SparseMatrix
            try:
                from triton_kernels.tensor import BIT
            except ImportError:
                BIT = None
        except (AttributeError, ImportError) as e:
            logger.error("Failed to import Triton kernels: %s", e)

    def route(x):
        def inner():
            from vllm.third_party.triton_kernels.topk import topk
            return topk
        if get_triton_kernels_version() == "3.5.1" and x is None:
            from triton_kernels.routing import routing
        else:
            from triton_kernels.numerics import InFlexData
        if current_platform.is_rocm():
            from triton_kernels.tensor_details.layout import GFX950MXScaleLayout
        return inner

    def _patch_3_6():
        from triton_kernels.tensor import make_ragged_tensor_metadata

    def _layout_3_8_only(x):
        if triton_kernels_version == "3.8":
            from triton_kernels.tensor_details import layout
            return layout
        from triton_kernels.tensor_details.layout import StridedLayout

    if triton_kernels_version == "3.6":
        _patch_3_6()
    """


@pytest.fixture
def synthetic_vllm(tmp_path) -> Path:
    return write_tree(tmp_path / "vllm", {
        "__init__.py": "",
        "model_executor/moe.py": MOE_PY,
        # ROCm-only module (by name) and vLLM's own probes: no part of the contract.
        "model_executor/rocm_aiter_fused_moe.py": "from triton_kernels.aiter_only import thing\n",
        "utils/import_utils.py": """
            def get_triton_kernels_version():
                try:
                    import triton_kernels.matmul_ogs
                except ImportError:
                    return "3.8"
                return "3.6"
            """,
        "third_party/triton_kernels/topk.py": "from triton_kernels.tensor import Vendored\n",
        "unrelated.py": "import os\n",
    })


def test_derive_reads_branches_tries_and_functions(synthetic_vllm):
    contract = tkc.derive_contract(synthetic_vllm)
    by_name = {(n.module, n.name): n for n in contract.needs}
    gens = {key: n.generations for key, n in by_name.items()}
    assert gens[("swiglu", "")] is None
    assert gens[("matmul", "matmul")] == ("3.8",)
    assert gens[("matmul_ogs", "matmul_ogs")] == ("3.5.1", "3.6")        # `as mm`: the imported name counts
    assert gens[("tensor", "SparseMatrix")] == ("3.6",)                  # nested `!=` inside an elif
    assert gens[("topk", "topk")] is None                                # vendored spelling, nested function
    assert gens[("routing", "routing")] == ("3.5.1",)                    # `and` with a non-version test
    assert gens[("numerics", "InFlexData")] is None                      # its else: not the complement
    assert gens[("tensor", "make_ragged_tensor_metadata")] == ("3.6",)   # private function called under 3.6
    assert gens[("tensor_details", "layout")] == ("3.8",)
    assert gens[("tensor_details.layout", "StridedLayout")] == ("3.5.1", "3.6")  # after `if 3.8: return`
    assert by_name[("tensor", "BIT")].optional and not by_name[("swiglu", "")].optional
    assert by_name[("matmul", "FnSpecs")].where == ("vllm/model_executor/moe.py:12",)
    # ROCm branches and modules, vLLM's probes and the vendored package itself are left out.
    assert not {("tensor_details.layout", "GFX950MXScaleLayout"), ("aiter_only", "thing"),
                ("tensor", "Vendored")} & set(by_name)
    assert ("matmul_ogs", "") not in by_name


def test_required_per_generation(synthetic_vllm):
    contract = tkc.derive_contract(synthetic_vllm)
    assert tkc.required(contract, "3.8") == {
        "matmul": ["FnSpecs", "matmul"], "numerics": ["InFlexData"], "swiglu": [], "tensor_details": ["layout"],
        "topk": ["topk"]}
    assert tkc.required(contract, "3.6") == {
        "matmul_ogs": ["FnSpecs", "matmul_ogs"], "numerics": ["InFlexData"], "swiglu": [],
        "tensor": ["SparseMatrix", "make_ragged_tensor_metadata"], "tensor_details.layout": ["StridedLayout"],
        "topk": ["topk"]}
    assert tkc.required(contract, "3.5.1")["routing"] == ["routing"]
    with pytest.raises(ValueError, match="unknown triton_kernels generation '3.7'"):
        tkc.required(contract, "3.7")


def test_contract_is_json_and_deterministic(synthetic_vllm):
    contract = tkc.derive_contract(synthetic_vllm)
    text = json.dumps(contract.to_dict(), sort_keys=True)
    assert tkc.Contract.from_dict(json.loads(text)) == contract
    assert json.dumps(tkc.derive_contract(synthetic_vllm).to_dict(), sort_keys=True) == text
    keys = [(n.module, n.name) for n in contract.needs]
    assert keys == sorted(keys)


def test_rocm_flag_and_marker_try(tmp_path):
    # 0.19.0: a legacy flag set only on ROCm; 0.25.0: the same flag set where SparseMatrix does not import.
    pkg = write_tree(tmp_path / "vllm", {"a.py": """
        legacy = False
        try:
            from triton_kernels.tensor import SparseMatrix
        except ImportError:
            if current_platform.is_rocm():
                legacy = True
            else:
                raise
        def f():
            if legacy:
                from triton_kernels.routing import routing
        """, "b.py": """
        old = False
        try:
            from triton_kernels.tensor import SparseMatrix, make_ragged_tensor_metadata
        except ImportError:
            old = True
        def g():
            if old:
                from triton_kernels.routing import routing_from_bitmatrix
        """})
    gens = {(n.module, n.name, n.where[0].split(":")[0]): n.generations for n in tkc.derive_contract(pkg).needs}
    assert gens == {("tensor", "SparseMatrix", "vllm/a.py"): None,        # re-raised on CUDA: always needed
                    ("tensor", "SparseMatrix", "vllm/b.py"): ("3.6", "3.8"),
                    ("tensor", "make_ragged_tensor_metadata", "vllm/b.py"): ("3.6", "3.8"),
                    ("routing", "routing_from_bitmatrix", "vllm/b.py"): ("3.5.1",)}


def test_loads_by_path_without_vllm_or_torch():
    # As gracectl loads it before a build: by path, not registered in sys.modules.
    code = (f"import importlib.util, sys\n"
            f"s = importlib.util.spec_from_file_location('x', {str(SUITE / 'triton_kernels_contract.py')!r})\n"
            f"m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
            f"print(sorted(k for k in sys.modules if k.split('.')[0] in ('vllm', 'torch', 'triton')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SUITE)
    assert (p.returncode, p.stdout.strip()) == (0, "[]"), p.stderr


def test_an_unknown_generation_fails_loudly(tmp_path):
    pkg = write_tree(tmp_path / "vllm", {"a.py": """
        if triton_kernels_version == "3.9":
            from triton_kernels.new import thing
        """})
    with pytest.raises(ValueError, match=r"compares its triton_kernels version with \['3.9'\]"):
        tkc.derive_contract(pkg)


def test_standin_vllm_gives_the_0_19_0_names():
    needs = tkc.required(tkc.derive_contract(STANDIN_VLLM), "3.6")
    assert needs["matmul_ogs"] == sorted(["FnSpecs", "FusedActivation", "GatherIndx", "RoutingData", "ScatterIndx",
                                          "matmul_ogs", "PrecisionConfig", "FlexCtx"])
    assert needs["matmul_ogs_details"] == ["opt_flags"] and needs["tensor_details.layout"] == ["StridedLayout"]
    assert "SparseMatrix" in needs["tensor"]


# ---------------------------------------------------------------------------- trees

def tk_tree(root: Path, generation: str) -> Path:
    files = {"__init__.py": "", "swiglu.py": "", "topk.py": "def topk(): pass\n",
             "numerics.py": "from dataclasses import dataclass\n@dataclass\nclass InFlexData: pass\n",
             "tensor_details/__init__.py": "", "tensor_details/layout.py": "StridedLayout: type = object\n",
             "tensor.py": "BIT = 1\nif True:\n    from .tensor_details.layout import StridedLayout as FP4\n"}
    if generation == "3.8":
        files["matmul.py"] = "def matmul(): pass\nclass FnSpecs: pass\n"
    else:
        files["matmul_ogs.py"] = "def matmul_ogs(): pass\nFnSpecs, Other = 1, 2\n"
        files["routing.py"] = "def routing(): pass\n"
    if generation != "3.5.1":
        files["tensor.py"] += "class SparseMatrix: pass\ndef make_ragged_tensor_metadata(): pass\n"
    return write_tree(root / "triton_kernels", files)


@pytest.mark.parametrize("generation", tkc.GENERATIONS)
def test_tree_generation_and_a_complete_tree(tmp_path, synthetic_vllm, generation):
    tree = tk_tree(tmp_path, generation)
    assert tkc.tree_generation(tree) == generation
    assert tkc.missing_in_tree(tree, tkc.required(tkc.derive_contract(synthetic_vllm), generation)) == []


def test_missing_in_tree_names_what_is_missing(tmp_path, synthetic_vllm):
    contract = tkc.derive_contract(synthetic_vllm)
    stale = tk_tree(tmp_path, "3.5.1")  # a 3.5.1 tree checked against what 3.6 needs
    assert tkc.missing_in_tree(stale, tkc.required(contract, "3.6")) == [
        "triton_kernels.tensor.SparseMatrix (tensor.py defines no SparseMatrix)",
        "triton_kernels.tensor.make_ragged_tensor_metadata (tensor.py defines no make_ragged_tensor_metadata)"]
    assert tkc.missing_in_tree(stale, {"matmul": ["matmul"], "tensor_details": ["layout", "nope"]}) == [
        "triton_kernels.matmul (no matmul.py or matmul/__init__.py)",
        "triton_kernels.tensor_details.nope (tensor_details/__init__.py defines no nope)"]


# ---------------------------------------------------------------------------- inside the image

PROBLEMS = (f"import sys; sys.path.insert(0, {str(SUITE)!r}); import triton_kernels_contract as t; "
            f"print(t.contract_problems())")

def run_problems(tmp_path: Path, site: Path, contract_env: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != tkc.CONTRACT_ENV}
    env["PYTHONPATH"] = str(site)
    if contract_env:
        env[tkc.CONTRACT_ENV] = contract_env
    # cwd: not beside the synthetic vllm/ folder (that would be an installed vLLM)
    return subprocess.run([sys.executable, "-c", PROBLEMS], capture_output=True, text=True, env=env, cwd=site)


def test_contract_problems_without_vllm_reads_the_contract_file(tmp_path, synthetic_vllm):
    site = tmp_path / "site"
    tk_tree(site, "3.5.1")
    contract_json = tmp_path / "contract.json"
    contract_json.write_text(json.dumps(tkc.derive_contract(synthetic_vllm).to_dict()))
    p = run_problems(tmp_path, site, str(contract_json))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"  # the 3.5.1 tree has everything 3.5.1 needs
    p = run_problems(tmp_path, site, None)
    assert p.returncode == 1 and f"vLLM is not installed and ${tkc.CONTRACT_ENV} is not set" in p.stderr


# ---------------------------------------------------------------------------- real vLLM sdists

VLLM_0_19_0 = {
    "swiglu": [],
    "matmul_ogs": ["FnSpecs", "FusedActivation", "GatherIndx", "RoutingData", "ScatterIndx", "matmul_ogs",
                   "PrecisionConfig", "FlexCtx"],
    "tensor": ["BIT", "Bitmatrix", "SparseMatrix", "make_ragged_tensor_metadata", "FP4", "convert_layout",
               "wrap_torch_tensor"],
    "topk": ["topk"],
    "numerics": ["InFlexData"],
    "matmul_ogs_details.opt_flags": [],
    "tensor_details.layout": ["StridedLayout"],
}


def test_vllm_0_19_0_contract_is_the_known_list():
    contract = tkc.derive_contract(sdist("0.19.0"))
    want = {m: sorted(names) for m, names in VLLM_0_19_0.items()}
    assert all(n.generations is None for n in contract.needs)  # 0.19.0 knows one generation
    assert tkc.required(contract, "3.6") == want
    # ROCm-only (GFX950/CDNA4 layouts, the legacy routing behind a flag set on ROCm) is left out.
    assert not {n.module for n in contract.needs} & {"routing"}


def test_vllm_0_34_0_contract_per_generation():
    contract = tkc.derive_contract(sdist("0.34.0"))
    v38, v351, v36 = (tkc.required(contract, g) for g in ("3.8", "3.5.1", "3.6"))
    assert "matmul" in v38["matmul"] and not any(m.startswith("matmul_ogs") for m in v38)
    assert v351["routing"] == ["routing", "routing_from_bitmatrix"] and "SparseMatrix" not in v351["tensor"]
    assert "SparseMatrix" in v36["tensor"] and "routing" not in v36
    where = {n.dotted: n.where for n in contract.needs}
    assert where["triton_kernels.matmul.matmul"] == (
        "vllm/model_executor/layers/fused_moe/experts/gpt_oss_triton_kernels_moe.py:487",)


def test_contract_problems_with_vllm_installed_derives_from_its_source(tmp_path):
    site = tmp_path / "site"
    tk_tree(site, "3.6")
    shutil.copytree(STANDIN_VLLM, site / "vllm")  # the stand-in as installed vLLM (without its metadata)
    (site / "vllm" / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != tkc.CONTRACT_ENV}
    env["PYTHONPATH"] = str(site)
    p = subprocess.run([sys.executable, "-c", PROBLEMS], capture_output=True, text=True, env=env, cwd=site)
    assert p.returncode == 0, p.stderr
    assert "triton_kernels.matmul_ogs.GatherIndx is missing" in p.stdout
    assert "import triton_kernels.matmul_ogs_details failed" in p.stdout
