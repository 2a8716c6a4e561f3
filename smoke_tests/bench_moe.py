"""Kernel benchmark of vLLM's triton_kernels MoE path (gpt-oss shapes), run inside the image by `gracectl bench`.

For each token count: routing (triton_kernels topk + ragged metadata) and the two routed GEMMs (matmul_ogs:
GEMM1 with gather, GEMM2 with scatter and gate weights), median time of repeated runs (triton do_bench,
L2 flushed between runs), TFLOP/s, and two ratios, both "other time / this time":
  ratio_vs_dense: a dense cuBLAS bf16 matmul of the same M x K x N in the same run (below 1: slower than dense),
  ratio_vs_loop:  the PyTorch per-expert loop in bf16; for routing, torch.topk + softmax + the expert sort
                  (above 1: faster).
Then the MXFP4 rows (gpt-oss's weights on Hopper: bf16 activations x MXFP4 weights in triton_kernels' sm_90
layouts; GEMM1 with fused SwiGLU, so its N is 2 x intermediate), with the same ratios; rel_err_vs_loop there is
the max of vLLM's MXFP4 error measure against the loop on the dequantized weights.
Beside the FLOP ratio, each GEMM row has the memory figures (bench_figures.py): hbm_gbps, the bytes the GEMM
must read (weights and MXFP4 scales of the experts actually hit, biases, activations, gate weights) over its
median time, and ratio_vs_hbm_peak, that rate over the GPU's peak HBM bandwidth (from NVML's max memory clock
and bus width, else a datasheet table by GPU name; the record says which). Below ~2048 tokens the GEMMs are
memory-bound and this is the figure that says how close to the limit they run.
Times include the host's kernel launches: up to ~2048 tokens they are launch-bound (on an H200, matmul_ogs's
Python launch path takes longer than the GEMM), where vLLM replays CUDA graphs instead.

    python bench_moe.py [--tokens 16,256,2048,8192] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys

import torch
import triton
from triton.testing import do_bench

import bench_figures as bf
import moe_reference as mr
import triton_kernels_contract as tkc

DEFAULT_TOKENS = (16, 256, 2048, 8192)


def median_ms(fn) -> float:
    return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))


def gpu_info() -> dict:
    info = {"name": torch.cuda.get_device_name(0),
            "capability": "sm_%d%d" % torch.cuda.get_device_capability(0), "driver": None, "clocks": None}
    # nvidia-smi is mounted into the container by the NVIDIA runtime; the clocks are read right after the runs.
    query = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit"
    try:
        line = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-i", "0"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        info["clocks"] = {"error": f"nvidia-smi: {exc}"}
        return info
    driver, sm, max_sm, mem, max_mem, power = [v.strip() for v in line.split(",")]
    info["driver"] = driver
    info["clocks"] = {"sm_mhz": sm, "max_sm_mhz": max_sm, "mem_mhz": mem, "max_mem_mhz": max_mem,
                      "power_limit_w": power}
    return info


def versions(tk_module) -> dict:
    """tk_module None: no triton_kernels found (bench_engine.py on vLLM's CPU build)."""
    seen = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "triton": triton.__version__,
            "triton_kernels": str(tkc.package_dir(tk_module)) if tk_module else None,
            "triton_kernels_mode": tkc.loaded_mode(tk_module) if tk_module else None}
    try:
        seen["vllm"] = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        seen["vllm"] = None
    return seen


# Peak HBM bytes/s of the GPU benchmarked (bench_figures.peak_hbm), set by main().
PEAK: dict = {"bytes_per_s": None, "source": "not measured"}


def row(name, ms, flops=None, dense_ms=None, loop_ms=None, rel_err=None, read_bytes=None) -> dict:
    memory = bf.achieved(read_bytes["total"], ms, PEAK["bytes_per_s"]) if read_bytes else {}
    return {"name": name, "median_ms": round(ms, 4),
            "tflops": round(flops / ms / 1e9, 1) if flops else None,
            "ratio_vs_dense": round(dense_ms / ms, 3) if dense_ms else None,
            "hbm_gbps": memory.get("hbm_gbps"), "ratio_vs_hbm_peak": memory.get("ratio_vs_hbm_peak"),
            "ratio_vs_loop": round(loop_ms / ms, 2) if loop_ms else None,
            "rel_err_vs_loop": float(f"{rel_err:.2e}") if rel_err is not None else None,
            **({"read_bytes": read_bytes} if read_bytes else {})}


def experts_hit(r) -> int:
    return int(r.expert_idx.unique().numel())


def bench_tokens_mxfp4(n: int, w) -> list[dict]:
    """gpt-oss's Hopper path: bf16 x MXFP4 weights (w4a16), GEMM1 with fused SwiGLU, GEMM2 with scatter + gates.
    ratio_vs_dense: a dense bf16 cuBLAS matmul of the same M x K x N; ratio_vs_loop: the PyTorch per-expert loop
    in bf16 on the dequantized weights."""
    k, bf16 = mr.TOP_K, torch.bfloat16
    x, logits, _ = mr.make_inputs(n)
    r = mr.route(logits)
    ref_w = mr.mxfp4_reference_weights(w)
    two_i = 2 * mr.INTERMEDIATE
    hit = experts_hit(r)
    with mr.vllm_hopper_opt_flags():
        h = mr.mxfp4_gemm1(x, w, r)
        y = mr.mxfp4_gemm2(h, w, r)
        h_tokens = h[r.to_token_order].view(n, k, -1)
        loop1 = lambda: mr.swiglu_reference(mr.loop_gemm1(x, ref_w, r.expert_idx, bf16))  # noqa: E731
        loop2 = lambda: mr.loop_gemm2(h_tokens, ref_w, r.expert_idx, r.gate, bf16)  # noqa: E731
        return [
            row(f"moe_mxfp4_gemm1_swiglu_tokens{n}", median_ms(lambda: mr.mxfp4_gemm1(x, w, r)),
                flops=mr.moe_flops(n, k, mr.HIDDEN, two_i), dense_ms=dense_matmul_ms(n * k, mr.HIDDEN, two_i),
                loop_ms=median_ms(loop1), rel_err=mr.mx_errors(h_tokens, loop1())[0],
                read_bytes=bf.gemm_read_bytes(weights="mxfp4", experts_hit=hit, k_dim=mr.HIDDEN, n_dim=two_i,
                                              act_rows=n)),
            row(f"moe_mxfp4_gemm2_tokens{n}", median_ms(lambda: mr.mxfp4_gemm2(h, w, r)),
                flops=mr.moe_flops(n, k, mr.INTERMEDIATE, mr.HIDDEN),
                dense_ms=dense_matmul_ms(n * k, mr.INTERMEDIATE, mr.HIDDEN),
                loop_ms=median_ms(loop2), rel_err=mr.mx_errors(y, loop2())[0],
                read_bytes=bf.gemm_read_bytes(weights="mxfp4", experts_hit=hit, k_dim=mr.INTERMEDIATE,
                                              n_dim=mr.HIDDEN, act_rows=n * k, gammas=n * k)),
        ]


def dense_matmul_ms(m: int, k_dim: int, n_dim: int) -> float:
    a = torch.randn(m, k_dim, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k_dim, n_dim, device="cuda", dtype=torch.bfloat16)
    return median_ms(lambda: a @ b)


def bench_tokens(n: int) -> list[dict]:
    k, bf16 = mr.TOP_K, torch.bfloat16
    x, logits, w = mr.make_inputs(n)
    r = mr.route(logits)
    h = mr.gemm1(x, w, r)
    h_tokens = h[r.to_token_order].view(n, k, -1)
    y = mr.gemm2(h, w, r)
    loop_h = mr.loop_gemm1(x, w, r.expert_idx, bf16)
    loop_y = mr.loop_gemm2(h_tokens, w, r.expert_idx, r.gate, bf16)
    hit = experts_hit(r)

    def dense_ms(k_dim, n_dim):
        return dense_matmul_ms(n * k, k_dim, n_dim)

    def torch_route():  # what route() yields: gates, experts, expert-sorted order and its inverse, counts
        idx, gate = mr.torch_routing(logits)
        order = torch.argsort(idx.flatten(), stable=True)
        return gate, order, torch.argsort(order), torch.bincount(idx.flatten(), minlength=mr.N_EXPERTS)

    return [
        row(f"moe_routing_tokens{n}", median_ms(lambda: mr.route(logits)), loop_ms=median_ms(torch_route)),
        row(f"moe_gemm1_tokens{n}", median_ms(lambda: mr.gemm1(x, w, r)),
            flops=mr.moe_flops(n, k, mr.HIDDEN, mr.INTERMEDIATE), dense_ms=dense_ms(mr.HIDDEN, mr.INTERMEDIATE),
            loop_ms=median_ms(lambda: mr.loop_gemm1(x, w, r.expert_idx, bf16)),
            rel_err=mr.rel_max_err(h_tokens, loop_h),
            read_bytes=bf.gemm_read_bytes(weights="bf16", experts_hit=hit, k_dim=mr.HIDDEN,
                                          n_dim=mr.INTERMEDIATE, act_rows=n)),
        row(f"moe_gemm2_tokens{n}", median_ms(lambda: mr.gemm2(h, w, r)),
            flops=mr.moe_flops(n, k, mr.INTERMEDIATE, mr.HIDDEN), dense_ms=dense_ms(mr.INTERMEDIATE, mr.HIDDEN),
            loop_ms=median_ms(lambda: mr.loop_gemm2(h_tokens, w, r.expert_idx, r.gate, bf16)),
            rel_err=mr.rel_max_err(y, loop_y),
            read_bytes=bf.gemm_read_bytes(weights="bf16", experts_hit=hit, k_dim=mr.INTERMEDIATE,
                                          n_dim=mr.HIDDEN, act_rows=n * k, gammas=n * k)),
    ]


def format_table(results: list[dict], cols=("name", "median_ms", "tflops", "ratio_vs_dense", "hbm_gbps",
                                           "ratio_vs_hbm_peak", "ratio_vs_loop", "rel_err_vs_loop")) -> str:
    cells = [cols] + [["-" if r.get(c) is None else str(r[c]) for c in cols] for r in results]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(wd) for c, wd in zip(line, widths)).rstrip() for line in cells)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", default=",".join(map(str, DEFAULT_TOKENS)))
    p.add_argument("--json", help="write the bench record here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no GPU visible to torch (run the container with --gpus all)", file=sys.stderr)
        return 2
    tk_module = tkc.load_triton_kernels()
    PEAK.update(bf.peak_hbm(torch.cuda.get_device_name(0)))
    results = []
    tokens = [int(t) for t in args.tokens.split(",")]
    for n in tokens:
        results += bench_tokens(n)
    w_mxfp4 = mr.make_mxfp4_weights()
    for n in tokens:
        results += bench_tokens_mxfp4(n, w_mxfp4)
    record = {"kind": "bench", "schema": 1, "gpu": {**gpu_info(), "peak_hbm": dict(PEAK)},
              "versions": versions(tk_module),
              "shapes": {"hidden": mr.HIDDEN, "intermediate": mr.INTERMEDIATE, "experts": mr.N_EXPERTS,
                         "top_k": mr.TOP_K, "dtype": "bfloat16",
                         "mxfp4": {"weights": "mxfp4 (e2m1, e8m0 scale per 32)", "activations": "bfloat16",
                                   "gemm1_n": 2 * mr.INTERMEDIATE, "layouts": [w_mxfp4.value_layout,
                                                                              w_mxfp4.scale_layout]}},
              "results": results}
    g = record["gpu"]
    print(f"GPU {g['name']} ({g['capability']}), driver {g['driver']}, clocks {g['clocks']}")
    print(f"versions {record['versions']}")
    peak = PEAK["bytes_per_s"]
    print(f"peak HBM {peak / 1e12:.2f} TB/s ({PEAK['source']})" if peak else f"peak HBM unknown ({PEAK['source']})")
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
