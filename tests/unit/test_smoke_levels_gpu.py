"""CPU-side logic of the GPU smoke levels (kernels' MXFP4 reference, upstream, collectives): the selection of
triton_kernels' own tests, their counting into the smoke record, the level lists, the planted faults and
plant_check.py's verdicts on which level catches which (the claims themselves are tested on a GPU by
plant_check.py).
The GPU runs themselves are on lent Hopper machines (see MEASUREMENTS.md, "Smoke levels on GPUs").
"""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest

from gracectl.pipeline.stages import SMOKE_LEVELS
from gracectl.image import smoke

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
    assert set(SMOKE_LEVELS) == {*smoke.LEVELS, "all"}


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
    assert tkc.PLANTED_FAULTS[tkc.PLANT_FP4_DECODE_ENV].make_copy is tkc.make_fp4_decode_fault_copy


# ---------------------------------------------------------------------------- the escapes of issue 34, planted
# Each anchor as it stands in triton_kernels v3.6.0 (a fake tree holding only those lines: the real package is
# on the GPU machines; plant_check.py applied these to it there).

TOPK_V36 = """# stable top-k tie-breaks to value with smaller index
@triton.jit
def indx_to_key(indx, N_EXPTS_PAD: tl.constexpr):
    return N_EXPTS_PAD - indx


@triton.jit
def key_to_indx(indx, N_EXPTS_PAD: tl.constexpr):
    return N_EXPTS_PAD - indx

    # sort in ascending order of expert (descending order of key)
    acc = tl.sort(acc, dim=1, descending=True)
"""
SWIGLU_V36 = """def compute_swiglu(gelu, linear, scale, alpha, limit):
    s = gelu / (1 + tl.exp(-alpha * gelu))
    return tl.fma(s, linear, s)  # (s * (linear + 1))


def _swiglu_fn(input, alpha, limit):
    gelu, linear = tl.split(tl.reshape(input, (input.shape[0], input.shape[1] // 2, 2)))
    return compute_swiglu(gelu, linear, 1.0, alpha, limit)
"""


def _fake_tree(tmp_path, files: dict[str, str]) -> Path:
    src = tmp_path / "site" / "triton_kernels"
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return src


def test_tie_fault_copy_gives_ties_to_the_higher_id_and_keeps_ascending_order(tmp_path):
    src = _fake_tree(tmp_path, {tkc.TOPK_FILE: TOPK_V36})
    text = (tkc.make_topk_tie_fault_copy(src, tmp_path / "planted") / "triton_kernels" / tkc.TOPK_FILE).read_text()
    assert "return N_EXPTS_PAD - indx" not in text and text.count("    return indx  # PLANTED FAULT") == 2
    assert "tl.sort(acc, dim=1, descending=False)" in text  # ids are the keys now: ascending keeps id order
    assert (src / tkc.TOPK_FILE).read_text() == TOPK_V36


def test_clamp_fault_copy_lowers_the_limit_of_the_fused_path_only(tmp_path):
    src = _fake_tree(tmp_path, {tkc.SWIGLU_FILE: SWIGLU_V36})
    text = (tkc.make_swiglu_clamp_fault_copy(src, tmp_path / "p") / "triton_kernels" / tkc.SWIGLU_FILE).read_text()
    assert "compute_swiglu(gelu, linear, 1.0, alpha, limit - 1.0)" in text
    assert "s = gelu / (1 + tl.exp(-alpha * gelu))" in text  # the shared code untouched


def test_alpha_fault_copy_changes_the_code_both_paths_share(tmp_path):
    src = _fake_tree(tmp_path, {tkc.SWIGLU_FILE: SWIGLU_V36})
    text = (tkc.make_swiglu_alpha_fault_copy(src, tmp_path / "p") / "triton_kernels" / tkc.SWIGLU_FILE).read_text()
    assert "tl.exp(-(alpha * 0.94) * gelu)" in text and "compute_swiglu(gelu, linear, 1.0, alpha, limit)\n" in text


def test_an_anchor_found_a_wrong_number_of_times_fails_before_anything_is_copied(tmp_path):
    src = _fake_tree(tmp_path, {tkc.TOPK_FILE: TOPK_V36.replace("    return N_EXPTS_PAD - indx\n", "", 1)})
    with pytest.raises(RuntimeError, match="expected 2 'return N_EXPTS_PAD - indx'.*found 1"):
        tkc.make_topk_tie_fault_copy(src, tmp_path / "planted")
    assert not (tmp_path / "planted").exists()


# ---------------------------------------------------------------------------- which level catches which plant


def test_every_plant_claims_known_levels():
    for env, plant in tkc.PLANTED_FAULTS.items():
        assert env.startswith("GRACECTL_PLANT_") and plant.what and callable(plant.make_copy)
        assert plant.caught_by and set(plant.caught_by) <= set(smoke.LEVELS), (env, plant.caught_by)
    # The escapes of issue 34 are claimed by the kernels level (the GPU run of plant_check.py showed it; the
    # upstream level misses the tie-break: upstream's topk test feeds fp32 logits).
    for env in (tkc.PLANT_TOPK_TIE_ENV, tkc.PLANT_SWIGLU_CLAMP_ENV, tkc.PLANT_SWIGLU_ALPHA_ENV):
        assert tkc.PLANTED_FAULTS[env].caught_by == ("kernels",)


def _results(**outcomes):
    return {name: {"outcome": o, "message": f"{name} {o}"} for name, o in outcomes.items()}


def test_a_plant_is_caught_when_a_test_that_passed_clean_fails_planted():
    import plant_check as pc

    clean = _results(a="passed", b="passed", c="failed", d="skipped")
    r = pc.judge(True, clean, _results(a="passed", b="failed", c="failed", d="skipped"))
    assert (r["verdict"], r["ok"], r["caught"], r["passed_clean"]) == ("caught", True, {"b": "b failed"}, 2)
    # A test that failed clean shows nothing when it fails planted (a bare machine's imports level, say).
    assert pc.judge(True, clean, _results(a="passed", b="passed", c="failed"))["verdict"] == "ESCAPED"
    assert pc.judge(True, clean, _results(a="error", b="passed"))["ok"]  # an error counts, a missing test does not
    assert pc.judge(True, clean, _results(b="passed"))["verdict"] == "ESCAPED"
    assert pc.judge(False, clean, _results(a="failed", b="passed"))["verdict"] == "caught, NOT CLAIMED"
    assert pc.judge(False, clean, clean)["verdict"] == "not caught (not claimed)" and pc.judge(False, clean, clean)["ok"]
    nothing = pc.judge(True, _results(a="skipped"), _results(a="failed"))  # no GPU: nothing passed clean
    assert (nothing["verdict"], nothing["ok"]) == ("UNPROVEN", False)


def test_the_plan_runs_the_claims_first():
    import plant_check as pc

    pairs = pc.plan(tkc.PLANTED_FAULTS, ["imports", "kernels", "upstream"])
    assert pairs == [(env, level) for env, p in tkc.PLANTED_FAULTS.items() for level in p.caught_by]
    more = pc.plan(tkc.PLANTED_FAULTS, ["imports", "upstream"], {tkc.PLANT_TOPK_TIE_ENV})
    assert more[-2:] == [(tkc.PLANT_TOPK_TIE_ENV, "imports"), (tkc.PLANT_TOPK_TIE_ENV, "upstream")]
    assert (tkc.PLANT_TOPK_TIE_ENV, "kernels") not in more
    assert len(pc.plan(tkc.PLANTED_FAULTS, ["kernels"], {"*"})) == len(tkc.PLANTED_FAULTS)
