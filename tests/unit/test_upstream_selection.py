"""The `upstream` level's choice of triton_kernels' own tests (smoke_tests/upstream_selection.py), on CPU:
selection by the parameters pytest itself reports (the module runs as the collecting pytest's plugin, here on
a small suite shaped like upstream's test_matmul.py), the loud failure on a renamed test or parameter, the
bound, the JUnit results keyed by node id, and the group verdict (any failure, a missing result, or fewer than
min_ran passed fails; skips do not count as ran). The GPU runs are in MEASUREMENTS.md, "Smoke levels on GPUs".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[2] / "smoke_tests"
sys.path.insert(0, str(SUITE))
import upstream_selection as sel  # noqa: E402

# Shaped like upstream's test_op: a dataclass of cases unpacked into parameters, a gather/scatter list with a
# duplicate entry, and the Hopper-layout cases LAST (where evenly spaced thinning never reached them).
FAKE_MATMUL = '''
import pytest

CASES = [(m, mode, act, w, hbm) for m in (16, 300, 1000) for mode in ("batched", "ragged")
         for act in ("float16", "bfloat16") for w in ("float16", "mxfloat4_e2m1") for hbm in (False,)]
CASES += [(16, "ragged", "bfloat16", "mxfloat4_e2m1", True), (1000, "plain", "bfloat16", "mxfloat4_e2m1", True)]

@pytest.mark.parametrize("m, mode, act_dtype_str, weight_dtype_str, hbm_swizzling", CASES)
@pytest.mark.parametrize("do_gather, do_scatter", [(False, False), (True, False), (False, True), (False, True)])
@pytest.mark.parametrize("has_y_gammas", [False, True])
def test_op(m, mode, act_dtype_str, weight_dtype_str, hbm_swizzling, do_gather, do_scatter, has_y_gammas):
    if m == 1000:
        pytest.skip("not on this GPU")
    assert not (do_gather and not has_y_gammas and m == 16 and hbm_swizzling)  # one planted failure

def test_plain():
    pass
'''

FAKE_LAYOUT = '''
import pytest

@pytest.mark.parametrize("mx_axis", [0, 1])
def test_roundtrip(mx_axis):
    pass
'''


@pytest.fixture
def suite(tmp_path) -> Path:
    (tmp_path / "test_matmul.py").write_text(FAKE_MATMUL)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test_layout.py").write_text(FAKE_LAYOUT)
    return tmp_path


def _pytest(suite: Path, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SUITE), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(suite),
                           "-p", "no:cacheprovider", *args], cwd=suite, env=env, capture_output=True, text=True,
                          timeout=120)


def collect(suite: Path, *files: str) -> list[dict]:
    out = suite / "params.json"
    done = _pytest(suite, "--collect-only", "-q", "-p", "upstream_selection", *files,
                   env_extra={sel.PARAMS_ENV: str(out)})
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


HOPPER_MXFP4 = sel.Group("mxfp4", (
    sel.Pick("test_matmul.py::test_op", {"mode": ("ragged",), "act_dtype_str": ("bfloat16",),
                                         "weight_dtype_str": ("mxfloat4_e2m1",), "hbm_swizzling": (True,),
                                         "do_gather": (True,), "do_scatter": (False,), "has_y_gammas": (False,)}),
    sel.Pick("test_matmul.py::test_op", {"mode": ("ragged",), "act_dtype_str": ("bfloat16",),
                                         "weight_dtype_str": ("mxfloat4_e2m1",), "hbm_swizzling": (True,),
                                         "do_gather": (False,), "do_scatter": (True,), "has_y_gammas": (True,)}),
), min_ran=2, why="test")


def test_the_plugin_reports_every_case_with_its_parameters(suite):
    collected = collect(suite, "test_matmul.py", "sub/test_layout.py")
    assert len(collected) == 26 * 4 * 2 + 1 + 2
    by_id = {c["nodeid"]: c["params"] for c in collected}
    assert by_id["test_matmul.py::test_plain"] == {}
    assert by_id["sub/test_layout.py::test_roundtrip[1]"] == {"mx_axis": 1}
    hopper = [p for p in by_id.values() if p.get("hbm_swizzling") is True]
    assert len(hopper) == 2 * 4 * 2 and all(p["weight_dtype_str"] == "mxfloat4_e2m1" for p in hopper)


def test_select_takes_the_cases_by_parameters_wherever_they_are_in_the_list(suite):
    collected = collect(suite, "test_matmul.py")
    chosen = sel.select(HOPPER_MXFP4, collected)
    params = {c["nodeid"]: c["params"] for c in collected}
    # GEMM1 (gather, no gammas) and GEMM2 (scatter + gammas) of the one ragged Hopper case; the duplicated
    # (False, True) entry of the gather/scatter list is taken once.
    assert [(params[n]["do_gather"], params[n]["do_scatter"], params[n]["has_y_gammas"]) for n in chosen] == [
        (True, False, False), (False, True, True)]
    assert all(params[n]["hbm_swizzling"] and params[n]["mode"] == "ragged" for n in chosen)
    # Sixteen evenly spaced picks (the old level's thinning) would have missed both.
    spaced = {collected[int(i * len(collected) / 16)]["nodeid"] for i in range(16)}
    assert not spaced & set(chosen)


def test_a_renamed_parameter_or_test_fails_the_selection_loudly(suite):
    collected = collect(suite, "test_matmul.py")
    renamed = sel.Group("g", (sel.Pick("test_matmul.py::test_op", {"hbm_swizling": (True,)}),), 1, "")
    with pytest.raises(sel.SelectionError, match="has no parameter hbm_swizling"):
        sel.select(renamed, collected)
    gone = sel.Group("g", (sel.Pick("test_matmul.py::test_gone"),), 1, "")
    with pytest.raises(sel.SelectionError, match="no test test_matmul.py::test_gone was collected"):
        sel.select(gone, collected)


def test_a_selection_over_the_bound_is_refused(suite):
    collected = collect(suite, "test_matmul.py")
    everything = sel.Group("g", (sel.Pick("test_matmul.py::test_op"),), 1, "")
    with pytest.raises(sel.SelectionError, match=f"more than {sel.MAX_PER_GROUP}"):
        sel.select(everything, collected)


def test_junit_results_are_keyed_by_the_selected_node_ids(suite):
    collected = collect(suite, "test_matmul.py", "sub/test_layout.py")
    chosen = sel.select(HOPPER_MXFP4, collected) + ["sub/test_layout.py::test_roundtrip[1]"]
    junit = suite / "junit.xml"
    _pytest(suite, "-q", f"--junitxml={junit}", *chosen)
    results = sel.count_junit(str(junit))
    assert sorted(results) == sorted(chosen)
    outcomes = {n: results[n]["outcome"] for n in chosen}
    assert sorted(outcomes.values()) == ["failed", "passed", "passed"]  # GEMM1's planted failure
    assert "assert not" in results[chosen[0]]["message"]


def results_of(**outcomes: str) -> dict[str, dict]:
    return {n: {"outcome": o, "message": f"why {n}"} for n, o in outcomes.items()}


def test_verdict_fails_on_any_failure_even_when_others_passed():
    g = sel.Group("g", (), min_ran=1, why="")
    problems = sel.verdict(g, ["a", "b", "c"], results_of(a="passed", b="passed", c="failed"))
    assert problems == ["c: failed: why c"]
    assert sel.verdict(g, ["a", "b"], results_of(a="error", b="passed")) == ["a: error: why a"]


def test_verdict_skips_do_not_count_as_ran():
    g = sel.Group("g", (), min_ran=2, why="")
    problems = sel.verdict(g, ["a", "b", "c"], results_of(a="passed", b="skipped", c="skipped"))
    assert len(problems) == 1 and "only 1 of 3 selected tests ran and passed, fewer than the 2" in problems[0]
    assert "b: why b" in problems[0]
    assert sel.verdict(g, ["a", "b", "c"], results_of(a="passed", b="passed", c="skipped")) == []


def test_verdict_fails_on_a_selected_test_without_a_result():
    g = sel.Group("g", (), min_ran=1, why="")
    problems = sel.verdict(g, ["a", "b"], results_of(a="passed"))
    assert problems == ["b: no result (the run stopped before it?)"]


def test_the_groups_reach_vllms_hopper_path_and_stay_bounded():
    groups = {g.name: g for g in sel.GROUPS}
    mx = groups["matmul_ogs-bf16xmxfp4-hopper"]
    for pick in mx.picks:
        assert pick.where["hbm_swizzling"] == (True,) and pick.where["act_dtype_str"] == ("bfloat16",)
        assert pick.where["weight_dtype_str"] == ("mxfloat4_e2m1",) and pick.where["split_k"] == (1,)
    routed = [p for p in mx.picks if p.where["mode"] == ("ragged",)]
    assert {(p.where["do_gather"], p.where["do_scatter"], p.where["has_y_gammas"]) for p in routed} == {
        ((True,), (False,), (False,)), ((False,), (True,), (True,))}
    hopper_tests = {p.test for p in groups["hopper-mx-layouts"].picks}
    assert "test_tensor_details/test_layout_hopper.py::test_upcast_mxfp4_to_bf16" in hopper_tests
    assert groups["topk"].picks[0].where["apply_softmax"] == (True,)
    assert all(0 < g.min_ran <= sel.MAX_PER_GROUP for g in sel.GROUPS)
    # Bounded in time: at most MAX_PER_GROUP tests a group, each group under its own timeout.
    assert len(sel.GROUPS) * sel.MAX_PER_GROUP <= 160 and sum(g.timeout_s for g in sel.GROUPS) <= 1500
