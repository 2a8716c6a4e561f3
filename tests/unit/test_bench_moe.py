"""The MoE bench's memory figures (smoke_tests/bench_figures.py, used by bench_moe.py) and the floors the perf
gate can hold the rows to (gracectl.tags.gates.figure_findings: per token count, refused rows, GPU-timed records
only), on CPU. The figures measured on GPUs are in
MEASUREMENTS.md, "Benchmarks".
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gracectl.image import bench
from gracectl.tags import gates
from gracectl.errors import UsageError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "smoke_tests"))
import bench_figures as bf  # noqa: E402


def test_bf16_gemm_reads_the_hit_experts_weights_biases_and_token_rows():
    b = bf.gemm_read_bytes(weights="bf16", experts_hit=3, k_dim=64, n_dim=128, act_rows=10)
    assert b == {"weights": 3 * 64 * 128 * 2, "scales": 0, "bias": 3 * 128 * 4, "activations": 10 * 64 * 2,
                 "gammas": 0, "total": 49152 + 1536 + 1280}


def test_mxfp4_weights_are_a_quarter_of_bf16_plus_one_scale_byte_per_32():
    bf16 = bf.gemm_read_bytes(weights="bf16", experts_hit=32, k_dim=2880, n_dim=2880, act_rows=64, gammas=64)
    mx = bf.gemm_read_bytes(weights="mxfp4", experts_hit=32, k_dim=2880, n_dim=2880, act_rows=64, gammas=64)
    assert mx["weights"] * 4 == bf16["weights"]
    assert mx["scales"] == 32 * (2880 // 32) * 2880 and mx["gammas"] == 256
    assert mx["total"] == bf16["total"] - bf16["weights"] + mx["weights"] + mx["scales"]
    with pytest.raises(ValueError, match="multiple of 32"):
        bf.gemm_read_bytes(weights="mxfp4", experts_hit=1, k_dim=100, n_dim=8, act_rows=1)
    with pytest.raises(ValueError, match="unknown weight format"):
        bf.gemm_read_bytes(weights="fp8", experts_hit=1, k_dim=64, n_dim=8, act_rows=1)


def test_fewer_experts_hit_means_fewer_bytes():
    few = bf.gemm_read_bytes(weights="mxfp4", experts_hit=4, k_dim=2880, n_dim=5760, act_rows=1)
    all_ = bf.gemm_read_bytes(weights="mxfp4", experts_hit=32, k_dim=2880, n_dim=5760, act_rows=1)
    assert few["weights"] * 8 == all_["weights"] and few["total"] < all_["total"]


def test_achieved_rate_and_its_ratio_to_the_peak():
    # 4.8 GB in 1 ms is 4.8 TB/s: the whole of an H200's peak.
    assert bf.achieved(4_800_000_000, 1.0, 4.8e12) == {"hbm_gbps": 4800.0, "ratio_vs_hbm_peak": 1.0}
    assert bf.achieved(1_200_000_000, 1.0, 4.8e12)["ratio_vs_hbm_peak"] == 0.25
    assert bf.achieved(1_200_000_000, 1.0, None) == {"hbm_gbps": 1200.0, "ratio_vs_hbm_peak": None}


def test_peak_from_the_memory_clock_and_bus_width_matches_the_datasheets():
    # nvidia-smi's max memory clocks: H200 3201 MHz on a 6144-bit bus, H100 SXM 2619 MHz on 5120 bits.
    assert bf.peak_from_clock(3201, 6144) / 1e12 == pytest.approx(4.8, rel=0.03)
    assert bf.peak_from_clock(2619, 5120) / 1e12 == pytest.approx(3.35, rel=0.01)


def test_peak_table_picks_the_most_specific_name():
    assert bf.peak_from_table("NVIDIA H200") == 4.8e12
    assert bf.peak_from_table("NVIDIA GH200 480GB") == 4.0e12
    assert bf.peak_from_table("NVIDIA GH200 144G HBM3e") == 4.9e12
    assert bf.peak_from_table("NVIDIA H100 80GB HBM3") == 3.35e12
    assert bf.peak_from_table("NVIDIA H100 PCIe") == 2.0e12
    assert bf.peak_from_table("NVIDIA L4") is None


def test_without_nvml_the_peak_comes_from_the_table_and_says_so():
    peak = bf.peak_hbm("NVIDIA H200")
    if peak["source"].startswith("NVML"):
        pytest.skip(f"NVML answers on this machine ({peak['source']}): the table fallback is not taken here")
    assert peak["bytes_per_s"] == 4.8e12 and peak["source"].startswith("datasheet table (")


GPU_TIMING = "gpu: CUDA-graph replay between CUDA events, L2 flushed"


def rec(*rows, timing=GPU_TIMING) -> dict:
    return {"kind": "bench", "schema": 2, "timing": timing, "results": list(rows)}


def test_the_gate_holds_either_figure():
    record = rec({"name": "moe_routing_tokens16", "median_ms": 0.1},
                 {"name": "moe_gemm1_tokens16", "ratio_vs_dense": 0.03, "ratio_vs_hbm_peak": 0.42},
                 {"name": "moe_gemm1_tokens8192", "ratio_vs_dense": 0.8, "ratio_vs_hbm_peak": 0.05})
    assert gates.figure_findings(record, {"ratio_vs_hbm_peak": 0.4}) == [
        "moe_gemm1_tokens8192: ratio_vs_hbm_peak 0.05 below the floor 0.4"]
    assert gates.figure_findings(record, {"ratio_vs_dense": 0.5}) == [
        "moe_gemm1_tokens16: ratio_vs_dense 0.03 below the floor 0.5"]
    assert gates.figure_findings(record, {"ratio_vs_dense": 0.01, "ratio_vs_hbm_peak": 0.01}) == []


def test_a_floor_on_a_figure_no_row_carries_is_a_finding_and_an_unknown_figure_refused():
    old = rec({"name": "moe_gemm1_tokens16", "ratio_vs_dense": 0.03})  # a record from before the HBM figures
    assert gates.figure_findings(old, {"ratio_vs_hbm_peak": 0.3}) == [
        "no moe_* result carries ratio_vs_hbm_peak: the floor 0.3 cannot be checked"]
    with pytest.raises(UsageError, match="FIGURE is one of ratio_vs_dense, ratio_vs_hbm_peak"):
        gates.figure_findings(old, {"tflops": 100})


def test_a_floor_at_a_token_count_holds_only_those_rows():
    record = rec({"name": "moe_gemm1_tokens16", "ratio_vs_hbm_peak": 0.7},
                 {"name": "moe_mxfp4_gemm2_tokens16", "ratio_vs_hbm_peak": 0.12},
                 {"name": "moe_mxfp4_gemm1_swiglu_tokens8192", "ratio_vs_hbm_peak": 0.047, "ratio_vs_dense": 0.65})
    assert gates.figure_findings(record, {"ratio_vs_hbm_peak@16": 0.15}) == [
        "moe_mxfp4_gemm2_tokens16: ratio_vs_hbm_peak 0.12 below the floor 0.15"]
    assert gates.figure_findings(record, {"ratio_vs_dense@8192": 0.3, "ratio_vs_hbm_peak@16": 0.1}) == []
    assert gates.figure_findings(record, {"ratio_vs_hbm_peak@256": 0.1}) == [
        "no moe_* result of 256 tokens carries ratio_vs_hbm_peak: the floor 0.1 cannot be checked"]
    assert gates.row_tokens("moe_mxfp4_gemm1_swiglu_tokens8192") == 8192 and gates.row_tokens("engine_ttft") is None


def test_parse_floor():
    assert gates.parse_floor("ratio_vs_hbm_peak=0.15") == ("ratio_vs_hbm_peak", 0.15)
    assert gates.parse_floor("ratio_vs_hbm_peak@16=0.15") == ("ratio_vs_hbm_peak@16", 0.15)
    for bad in ("ratio_vs_hbm_peak", "speed=1", "ratio_vs_dense@many=0.3", "ratio_vs_dense=0", "ratio_vs_dense=x"):
        with pytest.raises(UsageError, match="--floor"):
            gates.parse_floor(bad)


def test_a_row_the_bench_refused_for_its_accuracy_never_passes_a_floor():
    """bench_moe.py withholds the figures of a row whose error is outside vLLM's tolerance and says why: a floor
    over that row is a finding, however low the floor."""
    record = rec({"name": "moe_gemm1_tokens16", "ratio_vs_hbm_peak": 0.7, "rel_err_vs_loop": 3e-3, "rel_tol": 0.01},
                 {"name": "moe_mxfp4_gemm2_tokens16", "ratio_vs_hbm_peak": None, "rel_err_vs_loop": 0.04,
                  "rel_tol": 0.025, "refused": "rel_err_vs_loop 4.00e-02 (tol 0.025): outside vLLM's tolerance"})
    assert gates.figure_findings(record, {"ratio_vs_hbm_peak@16": 0.01}) == [
        "moe_mxfp4_gemm2_tokens16: refused by the bench (rel_err_vs_loop 4.00e-02 (tol 0.025): outside vLLM's "
        "tolerance), so ratio_vs_hbm_peak@16 0.01 is not shown"]
    assert gates.figure_findings(record, {"ratio_vs_dense": 0.01}) == [
        "moe_mxfp4_gemm2_tokens16: refused by the bench (rel_err_vs_loop 4.00e-02 (tol 0.025): outside vLLM's "
        "tolerance), so ratio_vs_dense 0.01 is not shown"]


def test_an_eager_record_cannot_be_held_to_a_floor():
    """Before schema 2 median_ms was eager (the host's launch path at decode sizes): its figures measure Python."""
    old = rec({"name": "moe_gemm1_tokens16", "ratio_vs_hbm_peak": 0.164}, timing=None)
    assert gates.figure_findings(old, {"ratio_vs_hbm_peak@16": 0.1}) == [
        "the bench record does not say its median_ms is GPU time (no `timing`: an eager record from before "
        "schema 2, launch-bound at decode sizes): its figures cannot be held to a floor"]
    assert gates.figure_findings(old, {}) == []


def test_medians_timed_differently_are_not_compared():
    from gracectl.tags.gates import compare_bench

    def record(timing, ms):
        return {"kind": "bench", "gpu": {"name": "NVIDIA H100 80GB HBM3"}, **({"timing": timing} if timing else {}),
                "results": [{"name": "moe_gemm1_tokens16", "median_ms": ms}]}

    c = compare_bench(record(GPU_TIMING, 0.8), record(None, 0.5))
    assert not c.compared and "timed differently" in c.note
    assert compare_bench(record(GPU_TIMING, 0.8), record(GPU_TIMING, 0.5)).regressions


def test_the_bench_table_shows_both_figures():
    assert {"ratio_vs_dense", "hbm_gbps", "ratio_vs_hbm_peak"} <= set(bench.RESULT_COLUMNS)
    assert set(gates.GATE_FIGURES) <= set(bench.RESULT_COLUMNS)
