"""Which of triton_kernels' own tests the `upstream` level runs, and how their JUnit results are judged.

The build keeps Triton's `python/triton_kernels/tests` of the pinned ref and the image ships it at
/opt/gracectl/triton_kernels_tests (site-packages releases). Its full run takes hours (test_matmul.py::test_op
alone has 8,320 cases at v3.6.0); the level runs, per group, the cases that exercise what vLLM 0.19.0 runs on
Hopper, chosen BY THEIR PARAMETERS (never by position in the list):
  - the router: topk with softmax over 32 / 128 experts (gpt-oss-20b / -120b);
  - the ragged / bitmatrix metadata topk and the routed GEMMs read;
  - matmul_ogs with bf16 activations x MXFP4 weights in the sm_90 layouts (hbm_swizzling=True gives
    HopperMXValueLayout + HopperMXScaleLayout on Hopper, as vLLM's _swizzle_mxfp4), ragged (routed), GEMM1's
    gather and GEMM2's scatter with gate weights (gammas);
  - the 16-bit routed matmul_ogs and its fused SwiGLU epilogue;
  - the Hopper MX value/scale layouts round-trip (mx_axis=1, 8 warps, as vLLM) and the Hopper MXFP4 -> bf16
    upcast, the code every MXFP4 matmul_ogs tile goes through on sm_90.

The parameters come from pytest itself: the collecting pytest loads this module as a plugin (`-p
upstream_selection`), which writes every collected item's node id and `callspec.params` to the JSON file named
by $GRACECTL_UPSTREAM_PARAMS. A pick naming a parameter that no collected case of its test has fails the
selection loudly (an upstream rename must not silently select nothing).

A group fails when any selected test fails or errors, when a selected test wrote no result, or when fewer than
its `min_ran` tests passed (skipped tests did not run); min_ran is what ran on an H200 with triton_kernels v3.6.0
(the two value round-trips of 16-row shapes skip there by upstream's own rule). Bounded: at most MAX_PER_GROUP
tests a group; 60 selected at v3.6.0, about 2.5 minutes on one H200 with a cold Triton cache, 1.5 warm.

Plain Python (no torch): gracectl's unit tests check the selection and the verdicts on CPU.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

SUITE_IN_IMAGE = "/opt/gracectl/triton_kernels_tests"
SUITE_ENV = "GRACECTL_TRITON_KERNELS_TESTS"
# Where the collecting pytest (this module as a plugin) writes [{"nodeid", "params"}].
PARAMS_ENV = "GRACECTL_UPSTREAM_PARAMS"
# Property name prefix of each group's counts in the JUnit XML; gracectl gathers them into the smoke record.
PROPERTY_PREFIX = "upstream:"
OUTCOMES = ("passed", "failed", "error", "skipped")
MAX_PER_GROUP = 32


@dataclass(frozen=True)
class Pick:
    """The cases of one upstream test function whose parameters take one of the allowed values for every
    parameter named in `where` (parameters not named: any value)."""
    test: str  # "file.py::function", relative to the tests folder
    where: dict = field(default_factory=dict)  # parameter name -> tuple of allowed values

    @property
    def file(self) -> str:
        return self.test.split("::")[0]

    def matches(self, params: dict) -> bool:
        return all(params.get(name, _MISSING) in allowed for name, allowed in self.where.items())


_MISSING = object()


@dataclass(frozen=True)
class Group:
    name: str
    picks: tuple[Pick, ...]
    min_ran: int  # fewer passed tests than this (of the selected, on sm_90) fails the group
    why: str
    timeout_s: int = 300

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.file for p in self.picks))


# The vLLM 0.19.0 pairings of matmul_ogs's gather/scatter/gammas: GEMM1 gathers tokens into expert-sorted rows
# (no gammas), GEMM2 scatters them back weighted by the gates (gpt_oss_triton_kernels_moe.py).
_VLLM_GATHER_SCATTER = {"inner_expt_opt": (None,), "x_transpose": (False,), "w_transpose": (False,),
                        "y_transpose": (False,), "colmajor_mxfp_weight": (True,)}
_GEMM1 = {"do_gather": (True,), "do_scatter": (False,), "has_y_gammas": (False,)}
_GEMM2 = {"do_gather": (False,), "do_scatter": (True,), "has_y_gammas": (True,)}
# On sm_90 triton_kernels v3.6.0 cannot run the Hopper-layout MXFP4 matmul persistent or split along K ("cannot
# enforce is_persistent=True / split_k" skips on an H200), and vLLM sets split_k=1 there: those cases are left out.
_MXFP4_HOPPER = {"mode": ("ragged",), "act_dtype_str": ("bfloat16",), "weight_dtype_str": ("mxfloat4_e2m1",),
                 "hbm_swizzling": (True,), "is_persistent": (False,), "split_k": (1,)}
# Top-4 of 32 or 128 experts, as gpt-oss-20b / -120b.
_F16_ROUTED = {"mode": ("ragged",), "act_dtype_str": ("float16",), "weight_dtype_str": ("float16",),
               "split_k": (1,), "n_expts_tot": (32, 128), "n_expts_act": (4,)}

GROUPS = (
    Group("topk", (
        Pick("test_topk.py::test_topk", {"apply_softmax": (True,), "n_cols": (32, 128), "dtype": ("bfloat16",)}),
    ), 8, "triton_kernels.topk with softmax over 32/128 experts against its torch reference: vLLM's router "
          "(the test's k is 8, vLLM's gpt-oss 4; the test feeds fp32 logits whatever its dtype parameter)", 150),
    Group("routing-metadata", (
        Pick("test_tensor.py::test_make_bitmatrix_metadata", {"n_cols": (32, 128), "k": (4,)}),
        Pick("test_tensor.py::test_make_ragged_tensor_metadata"),
    ), 11, "the bitmatrix metadata topk builds (top-4 over 32/128 experts) and the ragged metadata "
           "make_ragged_tensor_metadata gives the routed GEMMs: expert histogram, offsets, sorted indices", 150),
    Group("matmul_ogs-bf16xmxfp4-hopper", (
        Pick("test_matmul.py::test_op", {**_MXFP4_HOPPER, **_VLLM_GATHER_SCATTER, **_GEMM1}),
        Pick("test_matmul.py::test_op", {**_MXFP4_HOPPER, **_VLLM_GATHER_SCATTER, **_GEMM2}),
        # Upstream's only routed Hopper-layout case has one expert; its batched one has 8 (3-D expert weights in
        # the Hopper layouts, as vLLM stores them): taken too, without gather/scatter.
        Pick("test_matmul.py::test_op", {**_MXFP4_HOPPER, **_VLLM_GATHER_SCATTER, "mode": ("batched",),
                                         "do_gather": (False,), "do_scatter": (False,), "has_y_gammas": (False,)}),
    ), 6, "matmul_ogs, bf16 activations x MXFP4 weights in the sm_90 layouts (hbm_swizzling: "
          "HopperMXValueLayout/HopperMXScaleLayout), routed (ragged) GEMM1 gather and GEMM2 scatter+gammas, and "
          "8 experts batched: gpt-oss's w4a16 path in vLLM 0.19.0 on Hopper", 300),
    Group("matmul_ogs-16bit-routed", (
        Pick("test_matmul.py::test_op", {**_F16_ROUTED, **_VLLM_GATHER_SCATTER, **_GEMM1}),
        Pick("test_matmul.py::test_op", {**_F16_ROUTED, **_VLLM_GATHER_SCATTER, **_GEMM2}),
        Pick("test_matmul.py::test_fused_act", {"mode": ("ragged",), "split_k": (1,), "do_gather": (True,),
                                                "do_scatter": (False,), "swiglu_alpha": (1.1,)}),
    ), 19, "matmul_ogs routed in 16 bits (the suite has no bf16 x bf16 case; fp16 is the nearest), GEMM1 gather "
          "and GEMM2 scatter+gammas, and GEMM1 with SwiGLU fused into its epilogue as vLLM configures it", 300),
    Group("hopper-mx-layouts", (
        Pick("test_tensor_details/test_layout_hopper.py::test_mxfp4_value_roundtrip",
             {"mx_axis": (1,), "mma_version": (3,)}),
        Pick("test_tensor_details/test_layout_hopper.py::test_mxfp4_scale_roundtrip",
             {"mx_axis": (1,), "num_warps": (8,)}),
        Pick("test_tensor_details/test_layout_hopper.py::test_upcast_mxfp4_to_bf16"),
    ), 14, "Hopper MX value layout (mx_axis 1, mma v3) and scale layout (8 warps) round-trips as vLLM converts "
           "gpt-oss's weights, and the MXFP4 -> bf16 upcast (values and scales) matmul_ogs runs on sm_90", 150),
)


class SelectionError(ValueError):
    """The collected suite does not have what a group's picks name (renamed test or parameter)."""


def select(group: Group, collected: list[dict]) -> list[str]:
    """The node ids of `collected` ([{"nodeid", "params"}], collection order) that one of the group's picks
    matches; a case whose parameters equal an earlier selected one's (upstream lists some twice) once.
    Raises SelectionError when a pick's test was not collected or lacks a parameter the pick names, or when
    more than MAX_PER_GROUP are selected."""
    chosen, seen = [], set()
    for pick in group.picks:
        cases = [c for c in collected if c["nodeid"].split("[")[0] == pick.test]
        if not cases:
            raise SelectionError(f"{group.name}: no test {pick.test} was collected")
        unknown = sorted(set(pick.where) - set().union(*(c["params"] for c in cases)))
        if unknown:
            raise SelectionError(f"{group.name}: {pick.test} has no parameter {', '.join(unknown)} "
                                 f"(its parameters: {sorted(set().union(*(c['params'] for c in cases)))})")
        for case in cases:
            key = (pick.test, json.dumps(case["params"], sort_keys=True, default=repr))
            if pick.matches(case["params"]) and key not in seen and case["nodeid"] not in chosen:
                seen.add(key)
                chosen.append(case["nodeid"])
    if len(chosen) > MAX_PER_GROUP:
        raise SelectionError(f"{group.name}: {len(chosen)} tests selected, more than {MAX_PER_GROUP}: "
                             "narrow its picks (the level must stay bounded in time)")
    return chosen


def verdict(group: Group, selected: list[str], results: dict[str, dict]) -> list[str]:
    """Why the group fails ([]: it passes): a selected test that failed or errored or wrote no result, or fewer
    than group.min_ran passed. `results`: count_junit's dict (node id -> outcome, message)."""
    problems = [f"{n}: {results[n]['outcome']}: {results[n]['message']}" for n in selected
                if n in results and results[n]["outcome"] in ("failed", "error")]
    problems += [f"{n}: no result (the run stopped before it?)" for n in selected if n not in results]
    ran = sum(results.get(n, {}).get("outcome") == "passed" for n in selected)
    if ran < group.min_ran:
        skipped = [f"{n}: {results[n]['message']}" for n in selected if results.get(n, {}).get("outcome") == "skipped"]
        problems.append(f"only {ran} of {len(selected)} selected tests ran and passed, fewer than the "
                        f"{group.min_ran} this group needs (skipped: {'; '.join(skipped[:3]) or 'none'})")
    return problems


def count_junit(path: str) -> dict[str, dict]:
    """Per test node id (file path::name, as pytest names it), outcome and message, from a pytest JUnit XML
    file (its classname is the dotted module path: test_tensor_details.test_layout_hopper)."""
    root = ET.parse(path).getroot()
    results = {}
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                outcome, message = name, " ".join((node.get("message") or node.text or "").split())[:300]
                break
        module = (case.get("classname") or "").replace(".", "/")
        results[f"{module}.py::{case.get('name')}"] = {"outcome": outcome, "message": message}
    return results


def counts(outcomes: list[str]) -> dict[str, int]:
    return {o: outcomes.count(o) for o in OUTCOMES}


def format_counts(c: dict[str, int]) -> str:
    """The property value: 'passed=3 failed=0 error=0 skipped=1'."""
    return " ".join(f"{o}={c.get(o, 0)}" for o in OUTCOMES)


def _jsonable(value):
    return value if isinstance(value, (bool, int, float, str, type(None))) else repr(value)


# ---------------------------------------------------------------------------- the collecting pytest's plugin


def pytest_collection_finish(session):
    """As a plugin (`-p upstream_selection`, $GRACECTL_UPSTREAM_PARAMS set): every collected item's node id and
    parameters, to that file."""
    path = os.environ.get(PARAMS_ENV)
    if not path:
        return
    items = [{"nodeid": item.nodeid,
              "params": {k: _jsonable(v) for k, v in getattr(getattr(item, "callspec", None), "params", {}).items()}}
             for item in session.items]
    with open(path, "w") as f:
        json.dump(items, f)
