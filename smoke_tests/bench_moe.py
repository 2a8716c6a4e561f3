"""Kernel benchmark of vLLM's triton_kernels MoE path (gpt-oss shapes), run inside the image by `gracectl bench`.

For each token count: routing (triton_kernels topk + ragged metadata) and the two routed GEMMs (matmul_ogs:
GEMM1 with gather, GEMM2 with scatter and gate weights), then the MXFP4 rows (gpt-oss's weights on Hopper: bf16
activations x MXFP4 weights in triton_kernels' sm_90 layouts; GEMM1 with SwiGLU fused as vLLM configures it, so
its N is 2 x intermediate). The inputs are the kernels level's (moe_reference.make_inputs: bf16 router logits
with boundary ties, pre-activations that reach the SwiGLU limit).

Times, each a median (gpu_ms, median_ms, launch_ms below):
  median_ms  the GPU's time for the kernels: the call captured once in a CUDA graph and replayed, each replay
             between two CUDA events, L2 flushed before each outside them, as vLLM replays CUDA graphs at
             decode sizes. Every ratio below but ratio_vs_loop is computed from it.
  eager_ms   the call issued from Python each time, between CUDA events (triton's do_bench): the GPU waits for
             the host's launch path, so up to ~2048 tokens this is Python, not the kernels.
  launch_ms  the host's own time to issue one call (no GPU wait): the launch path, reported apart.
Ratios, "other time / this time": ratio_vs_dense, a dense cuBLAS bf16 matmul of the same M x K x N (graph-timed
too; below 1: slower than dense); ratio_vs_loop, the PyTorch per-expert loop in bf16 against eager_ms (both
eager: the loop syncs with the host and cannot be captured; above 1: faster).
Memory figures (bench_figures.py): hbm_gbps, the bytes the GEMM must read (weights and MXFP4 scales of the
experts actually hit, biases, activations, gate weights) over median_ms, and ratio_vs_hbm_peak, that over the
GPU's peak HBM bandwidth (NVML, else a datasheet table; the record says which). Below ~2048 tokens the GEMMs
are memory-bound and this is the figure that says how close to the limit the kernels run.
Accuracy: every GEMM row is checked against the per-expert loop in fp32 at vLLM's tolerance (bf16: max|err| /
max|ref| < 1e-2; MXFP4: vLLM's measure, max 0.025 and rms 0.005). A row that misses it is REFUSED: its speed
figures are withheld (None) and `refused` says why, so no gate can pass on a fast wrong kernel.

    python bench_moe.py [--tokens 16,256,2048,8192] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import time

import torch
import triton
from triton.testing import do_bench

import bench_figures as bf
import moe_reference as mr
import triton_kernels_contract as tkc

DEFAULT_TOKENS = (16, 256, 2048, 8192)
# What median_ms measures (the record's "timing"; gracectl compares medians only between records that agree).
TIMING = "gpu: CUDA-graph replay between CUDA events, L2 flushed"


def median_ms(fn) -> float:
    """Eager: fn issued from Python each time, between CUDA events (the host launch path included)."""
    return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))


L2_FLUSH_BYTES = 256 * 1024 * 1024  # as triton's do_bench: larger than any Hopper L2
GRAPH_REPLAYS = 50


def gpu_ms(fn, replays: int = GRAPH_REPLAYS) -> tuple[float, str]:
    """(median ms, how): the GPU time of fn's kernels. fn is captured once in a CUDA graph (after a warm-up
    that compiles and tunes outside the capture) and replayed; each replay lies between two CUDA events with the
    L2 flushed before it, outside them. Where capture fails, fn is timed eagerly the same way, and `how` says so."""
    fn()
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        run, how = graph.replay, "cuda-graph"
    except Exception as exc:  # noqa: BLE001 - any capture failure: time eagerly and say why
        torch.cuda.synchronize()
        run, how = fn, f"events, eager (CUDA graph capture failed: {type(exc).__name__}: {exc})"[:240]
    flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    run()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(replays)]
    for start, end in events:
        flush.zero_()
        start.record()
        run()
        end.record()
    torch.cuda.synchronize()
    times = sorted(start.elapsed_time(end) for start, end in events)
    return float(times[len(times) // 2]), how


def launch_ms(fn, calls: int = 50) -> float:
    """The host's time to issue one call of fn (its Python launch path), the GPU not waited for."""
    fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    took = (time.perf_counter() - started) / calls * 1e3
    torch.cuda.synchronize()
    return took


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


def accuracy(kind: str, actual: torch.Tensor, expected: torch.Tensor) -> dict:
    """The row's accuracy against the fp32 loop, at vLLM's tolerance for the path: {"rel_err_vs_loop",
    "rel_tol", ("rms_err", "rms_tol",) "accuracy_ok"}."""
    if kind == "bf16":
        err = mr.rel_max_err(actual, expected)
        return {"rel_err_vs_loop": err, "rel_tol": mr.MOE_REL_TOL, "accuracy_ok": err < mr.MOE_REL_TOL}
    err, rms = mr.mx_errors(actual, expected)
    return {"rel_err_vs_loop": err, "rel_tol": mr.MXFP4_MAX_TOL, "rms_err": rms, "rms_tol": mr.MXFP4_RMS_TOL,
            "accuracy_ok": err <= mr.MXFP4_MAX_TOL and rms <= mr.MXFP4_RMS_TOL}


def row(name, fn, flops=None, dense_ms=None, loop_ms=None, acc=None, read_bytes=None) -> dict:
    """One result row: fn timed three ways (module docstring), the figures from the GPU time, refused when its
    accuracy (acc, from accuracy()) misses vLLM's tolerance."""
    ms, how = gpu_ms(fn)
    eager = median_ms(fn)
    memory = bf.achieved(read_bytes["total"], ms, PEAK["bytes_per_s"]) if read_bytes else {}
    out = {"name": name, "median_ms": round(ms, 4), "timing": how, "eager_ms": round(eager, 4),
           "launch_ms": round(launch_ms(fn), 4),
           "tflops": round(flops / ms / 1e9, 1) if flops else None,
           "ratio_vs_dense": round(dense_ms / ms, 3) if dense_ms else None,
           "hbm_gbps": memory.get("hbm_gbps"), "ratio_vs_hbm_peak": memory.get("ratio_vs_hbm_peak"),
           "ratio_vs_loop": round(loop_ms / eager, 2) if loop_ms else None}
    if acc is not None:
        out.update({k: float(f"{v:.2e}") if isinstance(v, float) else v for k, v in acc.items()})
        if not acc["accuracy_ok"]:
            out["refused"] = (f"rel_err_vs_loop {acc['rel_err_vs_loop']:.2e} (tol {acc['rel_tol']})" +
                              (f", rms {acc['rms_err']:.2e} (tol {acc['rms_tol']})" if "rms_err" in acc else "") +
                              ": outside vLLM's tolerance, speed figures withheld")
            out.update({f: None for f in ("tflops", "ratio_vs_dense", "hbm_gbps", "ratio_vs_hbm_peak")})
    if read_bytes:
        out["read_bytes"] = read_bytes
    return out


def experts_hit(r) -> int:
    return int(r.expert_idx.unique().numel())


def bench_tokens_mxfp4(n: int, w) -> list[dict]:
    """gpt-oss's Hopper path: bf16 x MXFP4 weights (w4a16), GEMM1 with fused SwiGLU, GEMM2 with scatter + gates.
    ratio_vs_dense: a dense bf16 cuBLAS matmul of the same M x K x N; ratio_vs_loop: the PyTorch per-expert loop
    in bf16 on the dequantized weights; accuracy: the loop in fp32."""
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
        acc1 = accuracy("mxfp4", h_tokens, mr.swiglu_reference(mr.loop_gemm1(x, ref_w, r.expert_idx)))
        acc2 = accuracy("mxfp4", y, mr.loop_gemm2(h_tokens, ref_w, r.expert_idx, r.gate))
        loop1 = lambda: mr.swiglu_reference(mr.loop_gemm1(x, ref_w, r.expert_idx, bf16))  # noqa: E731
        loop2 = lambda: mr.loop_gemm2(h_tokens, ref_w, r.expert_idx, r.gate, bf16)  # noqa: E731
        return [
            row(f"moe_mxfp4_gemm1_swiglu_tokens{n}", lambda: mr.mxfp4_gemm1(x, w, r),
                flops=mr.moe_flops(n, k, mr.HIDDEN, two_i), dense_ms=dense_matmul_ms(n * k, mr.HIDDEN, two_i),
                loop_ms=median_ms(loop1), acc=acc1,
                read_bytes=bf.gemm_read_bytes(weights="mxfp4", experts_hit=hit, k_dim=mr.HIDDEN, n_dim=two_i,
                                              act_rows=n)),
            row(f"moe_mxfp4_gemm2_tokens{n}", lambda: mr.mxfp4_gemm2(h, w, r),
                flops=mr.moe_flops(n, k, mr.INTERMEDIATE, mr.HIDDEN),
                dense_ms=dense_matmul_ms(n * k, mr.INTERMEDIATE, mr.HIDDEN),
                loop_ms=median_ms(loop2), acc=acc2,
                read_bytes=bf.gemm_read_bytes(weights="mxfp4", experts_hit=hit, k_dim=mr.INTERMEDIATE,
                                              n_dim=mr.HIDDEN, act_rows=n * k, gammas=n * k)),
        ]


def dense_matmul_ms(m: int, k_dim: int, n_dim: int) -> float:
    a = torch.randn(m, k_dim, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k_dim, n_dim, device="cuda", dtype=torch.bfloat16)
    return gpu_ms(lambda: a @ b)[0]


def bench_tokens(n: int) -> list[dict]:
    k, bf16 = mr.TOP_K, torch.bfloat16
    x, logits, w = mr.make_inputs(n)
    r = mr.route(logits)
    h = mr.gemm1(x, w, r)
    h_tokens = h[r.to_token_order].view(n, k, -1)
    y = mr.gemm2(h, w, r)
    acc1 = accuracy("bf16", h_tokens, mr.loop_gemm1(x, w, r.expert_idx))
    acc2 = accuracy("bf16", y, mr.loop_gemm2(h_tokens, w, r.expert_idx, r.gate))
    hit = experts_hit(r)

    def dense_ms(k_dim, n_dim):
        return dense_matmul_ms(n * k, k_dim, n_dim)

    def torch_route():  # what route() yields: gates, experts, expert-sorted order and its inverse, counts
        idx, gate = mr.torch_routing(logits)
        order = torch.argsort(idx.flatten(), stable=True)
        return gate, order, torch.argsort(order), torch.bincount(idx.flatten(), minlength=mr.N_EXPERTS)

    return [
        row(f"moe_routing_tokens{n}", lambda: mr.route(logits), loop_ms=median_ms(torch_route)),
        row(f"moe_gemm1_tokens{n}", lambda: mr.gemm1(x, w, r),
            flops=mr.moe_flops(n, k, mr.HIDDEN, mr.INTERMEDIATE), dense_ms=dense_ms(mr.HIDDEN, mr.INTERMEDIATE),
            loop_ms=median_ms(lambda: mr.loop_gemm1(x, w, r.expert_idx, bf16)), acc=acc1,
            read_bytes=bf.gemm_read_bytes(weights="bf16", experts_hit=hit, k_dim=mr.HIDDEN,
                                          n_dim=mr.INTERMEDIATE, act_rows=n)),
        row(f"moe_gemm2_tokens{n}", lambda: mr.gemm2(h, w, r),
            flops=mr.moe_flops(n, k, mr.INTERMEDIATE, mr.HIDDEN), dense_ms=dense_ms(mr.INTERMEDIATE, mr.HIDDEN),
            loop_ms=median_ms(lambda: mr.loop_gemm2(h_tokens, w, r.expert_idx, r.gate, bf16)), acc=acc2,
            read_bytes=bf.gemm_read_bytes(weights="bf16", experts_hit=hit, k_dim=mr.INTERMEDIATE,
                                          n_dim=mr.HIDDEN, act_rows=n * k, gammas=n * k)),
    ]


def format_table(results: list[dict], cols=("name", "median_ms", "eager_ms", "launch_ms", "tflops", "ratio_vs_dense",
                                           "hbm_gbps", "ratio_vs_hbm_peak", "ratio_vs_loop", "rel_err_vs_loop",
                                           "rel_tol")) -> str:
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
    record = {"kind": "bench", "schema": 2, "timing": TIMING, "gpu": {**gpu_info(), "peak_hbm": dict(PEAK)},
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
    for r in results:
        if r.get("refused") or r.get("timing", "cuda-graph") != "cuda-graph":
            print(f"{r['name']}: {r.get('refused') or r['timing']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
