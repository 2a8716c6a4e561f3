"""CPU-side logic of the GPU smoke levels (kernels' MXFP4 reference, upstream, collectives): the selection of
triton_kernels' own tests, their counting into the smoke record, the level lists, the planted MX-scale fault,
and the MXFP4 quantizer the kernels level compares against (needs torch; skipped with its reason without it).
The GPU runs themselves are on lent Hopper machines (see CLAWMINE.md, "What was proven where").
"""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest

from gracectl import pipeline, smoke

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "smoke_tests"
sys.path.insert(0, str(SUITE))
import triton_kernels_contract as tkc  # noqa: E402
import upstream_selection as sel  # noqa: E402


# ---------------------------------------------------------------------------- level lists


def test_every_level_is_a_marker_and_a_pipeline_choice():
    ini = configparser.ConfigParser()
    ini.read(SUITE / "pytest.ini")
    markers = {line.split(":")[0].strip() for line in ini["pytest"]["markers"].strip().splitlines()}
    assert markers == set(smoke.LEVELS)
    assert set(pipeline.SMOKE_LEVELS) == {*smoke.LEVELS, "all"}


def test_each_level_has_a_test_file_carrying_its_marker():
    for level in smoke.LEVELS:
        marked = [p.name for p in SUITE.glob("test_*.py") if f"pytest.mark.{level}" in p.read_text()]
        assert marked, f"no smoke test file is marked {level}"


def test_upstream_property_prefix_is_the_suites():
    assert smoke.UPSTREAM_PREFIX == sel.PROPERTY_PREFIX


# ---------------------------------------------------------------------------- upstream counts (the selection: test_upstream_selection.py)


def test_upstream_counts_go_into_the_smoke_record(tmp_path):
    value = f"{sel.format_counts({'passed': 46, 'skipped': 2})} selected=48 of=3840"
    junit = smoke.JunitResult(
        tests=[{"name": "test_upstream::test_upstream_group[topk]", "outcome": "passed", "time": 1.0}],
        properties={"upstream:topk": value, "upstream:hopper-mx-layouts": "absent", "torch": "2.11.0"})
    rec = smoke.smoke_record("img", "sha256:1", "upstream", junit, created="T")
    assert rec["upstream"] == {"topk": {"passed": 46, "failed": 0, "error": 0, "skipped": 2, "selected": 48,
                                        "of": 3840},
                               "hopper-mx-layouts": {"absent": True}}
    assert rec["versions"] == {"torch": "2.11.0"}  # the upstream properties are not versions
    assert "upstream" not in smoke.smoke_record("img", "sha256:1", "kernels", smoke.JunitResult(), created="T")


# ---------------------------------------------------------------------------- planted MX-scale fault


def test_mx_scale_fault_copy_changes_only_the_hopper_upcast(tmp_path):
    src = tmp_path / "site" / "triton_kernels"
    upcast = src / tkc.MX_SCALE_FILE
    upcast.parent.mkdir(parents=True)
    original = "def mxfp4_to_bf16_triton(x, scale, mx_axis):\n    x = f(x)\n    # upcast scale to bfloat16\n    return x\n"
    upcast.write_text(original)
    (src / "__init__.py").write_text("")
    dest = tkc.make_mx_scale_fault_copy(src, tmp_path / "planted")
    text = (dest / "triton_kernels" / tkc.MX_SCALE_FILE).read_text()
    assert "scale = (scale + 1).to(scale.dtype)  # PLANTED FAULT" in text
    assert text.replace("    scale = (scale + 1).to(scale.dtype)  # PLANTED FAULT (gracectl smoke): one exponent "
                        "too high\n", "") == original
    assert upcast.read_text() == original and (dest / "triton_kernels" / "__init__.py").exists()
    (tmp_path / "other" / "triton_kernels" / "tensor_details" / "layout_details").mkdir(parents=True)
    (tmp_path / "other" / "triton_kernels" / tkc.MX_SCALE_FILE).write_text("no anchor here\n")
    with pytest.raises(RuntimeError, match="expected one '# upcast scale to bfloat16'"):
        tkc.make_mx_scale_fault_copy(tmp_path / "other" / "triton_kernels", tmp_path / "again")


def test_fp4_decode_fault_copy_drops_the_mantissa_bit_in_the_upcast_ptx(tmp_path):
    src = tmp_path / "site" / "triton_kernels"
    upcast = src / tkc.MX_SCALE_FILE
    upcast.parent.mkdir(parents=True)
    original = ('asm=f"""{{\n    and.b32 $0, $4, 0b10000001110000001000000111000000;\n'
                '    and.b32 $1, b,  0b10000001110000001000000111000000;\n"""\n')
    upcast.write_text(original)
    dest = tkc.make_fp4_decode_fault_copy(src, tmp_path / "planted")
    text = (dest / "triton_kernels" / tkc.MX_SCALE_FILE).read_text()
    # Bit 6 of each bf16 half (where the e2m1 mantissa lands) cleared for the first value pair only.
    assert "and.b32 $0, $4, 0b10000001100000001000000110000000;" in text
    assert "and.b32 $1, b,  0b10000001110000001000000111000000;" in text
    assert upcast.read_text() == original
    assert tkc.PLANTED_FAULTS[tkc.PLANT_FP4_DECODE_ENV][1] is tkc.make_fp4_decode_fault_copy
