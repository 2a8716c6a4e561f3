"""Which of triton_kernels' own tests the `upstream` level runs, and how their JUnit results are counted.

The build keeps Triton's `python/triton_kernels/tests` of the pinned ref and the image ships it at
/opt/gracectl/triton_kernels_tests (site-packages releases). Its full run takes hours; the level runs a bounded
selection: per group, the tests a pytest -k expression collects in the group's file, thinned to at most `limit`
evenly spaced ones (deterministic, so two runs of one image run the same tests). About 4 minutes on one H100.

Plain Python (no torch): gracectl's unit tests check the selection and the counting on CPU.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

SUITE_IN_IMAGE = "/opt/gracectl/triton_kernels_tests"
SUITE_ENV = "GRACECTL_TRITON_KERNELS_TESTS"
# Property name prefix of each group's counts in the JUnit XML; gracectl gathers them into the smoke record.
PROPERTY_PREFIX = "upstream:"
OUTCOMES = ("passed", "failed", "error", "skipped")


@dataclass(frozen=True)
class Group:
    name: str
    path: str  # file (or file::function) under the tests folder
    keyword: str  # pytest -k expression; "" selects all
    limit: int
    why: str


GROUPS = (
    Group("topk", "test_topk.py::test_topk", "", 48,
          "triton_kernels.topk against its torch reference: the router of vLLM's MoE path"),
    Group("routing-metadata", "test_tensor.py", "", 40,
          "ragged-tensor and bitmatrix metadata (what replaced triton_kernels.routing in 3.6): the expert "
          "histogram, offsets and sorted indices the gather/scatter GEMMs read"),
    Group("matmul_ogs-mxfp4", "test_matmul.py::test_op", "bfloat16 and mxfloat4_e2m1", 48,
          "matmul_ogs with bf16 activations x MXFP4 weights (gpt-oss's w4a16), gather/scatter, Hopper layouts"),
    Group("matmul_ogs-16bit", "test_matmul.py::test_op", "float16 and not mx and not float8", 24,
          "matmul_ogs in 16-bit: ragged and batched, split-k, gather/scatter"),
    Group("hopper-mx-layouts", "test_tensor_details/test_layout_hopper.py", "", 40,
          "Hopper MX value/scale layouts round-trip and the MXFP4 -> bf16 upcast matmul_ogs uses on sm_90"),
)


def thin(node_ids: list[str], limit: int) -> list[str]:
    """At most `limit` of node_ids, evenly spaced over the list, first one included, order kept."""
    if limit <= 0:
        return []
    if len(node_ids) <= limit:
        return list(node_ids)
    step = len(node_ids) / limit
    return [node_ids[int(i * step)] for i in range(limit)]


def parse_collect_only(stdout: str) -> list[str]:
    """Node ids from `pytest --collect-only -q` output (lines with '::', up to the summary)."""
    return [line.strip() for line in stdout.splitlines() if "::" in line and not line.startswith(("=", " "))]


def count_junit(path: str) -> dict[str, dict]:
    """Per test node id (classname-free: file::name), outcome and message, from a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    results = {}
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                outcome, message = name, " ".join((node.get("message") or node.text or "").split())[:300]
                break
        results[f"{case.get('classname')}::{case.get('name')}"] = {"outcome": outcome, "message": message}
    return results


def counts(outcomes: list[str]) -> dict[str, int]:
    return {o: outcomes.count(o) for o in OUTCOMES}


def format_counts(c: dict[str, int]) -> str:
    """The property value: 'passed=3 failed=0 error=0 skipped=1'."""
    return " ".join(f"{o}={c.get(o, 0)}" for o in OUTCOMES)

