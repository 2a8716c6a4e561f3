"""Smoke level `engine`: vLLM's offline engine (`vllm.LLM`) on tiny random-weight models.

Each engine runs in a child process (this file run as a script, see the `__main__` block): vLLM starts
worker processes that re-import the main module, which must not be pytest, and a fresh process per engine
keeps their memory apart. The child prints one `RESULT <json>` line; its whole output goes into any failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine_probe import TRITON_KERNELS_EXPERTS_MODULE, describe_layers, on_cuda, triton_kernels_path_expected

pytestmark = pytest.mark.engine

PROMPTS = ["hello world what is your name", "tell me about the blue sky"]
MAX_TOKENS = 16
ENGINE_TIMEOUT_S = 600
RESULT_PREFIX = "RESULT "


def run_engine(model_dir: Path, *, attention_backend: str | None = None) -> dict:
    """Run this file as a script on `model_dir`; return its RESULT (with the child's log under "log")."""
    spec = {"model": str(model_dir), "attention_backend": attention_backend}
    env = dict(os.environ)
    # apply_model ships a function to the engine process; vLLM only pickles functions when allowed.
    env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    # On the CPU, vLLM reserves half the RAM for the KV cache by default; a tiny model needs 1 GiB.
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # Plain subprocess, not gracectl.adapters.proc: this suite runs inside the image, without gracectl.
    proc = subprocess.run([sys.executable, __file__, json.dumps(spec)], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=ENGINE_TIMEOUT_S)
    results = [line[len(RESULT_PREFIX):] for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not results:
        pytest.fail(f"vLLM engine on {model_dir.name} (attention backend {attention_backend or 'default'}) "
                    f"exited {proc.returncode} without a result; its log:\n{proc.stdout[-20000:]}", pytrace=False)
    result = json.loads(results[-1])
    result["log"] = proc.stdout
    return result


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory) -> Path:
    from tiny_models import write_dense_model

    return write_dense_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def dense_default(dense_model) -> dict:
    return run_engine(dense_model)


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory) -> Path:
    from tiny_models import write_moe_model

    # MXFP4 experts on a GPU (the gpt-oss path that uses triton_kernels); bf16 experts on the CPU, which has
    # no MXFP4 MoE kernel.
    return write_moe_model(tmp_path_factory.mktemp("models") / "tiny-gpt-oss", mxfp4=on_cuda())


@pytest.fixture(scope="module")
def moe_run(moe_model) -> dict:
    return run_engine(moe_model)


def _describe(result: dict) -> str:
    shown = {key: value for key, value in result.items() if key != "log"}
    return f"{json.dumps(shown, indent=1)}\nengine log (tail):\n{result['log'][-8000:]}"


def test_dense_greedy_generation_is_deterministic(dense_default):
    first, second = dense_default["runs"]
    assert all(len(tokens) == MAX_TOKENS for tokens in first), _describe(dense_default)
    assert first == second, "two greedy runs with the same seed gave different tokens\n" + _describe(dense_default)
    assert all(text.strip() for text in dense_default["texts"]), "empty completion\n" + _describe(dense_default)


def test_triton_attention_agrees_with_default_backend(dense_model, dense_default, gpu):
    # `gpu` skips (visibly) on the CPU: vLLM's CPU platform maps every attention backend to CPU_ATTN, so
    # there is nothing to compare there.
    triton = run_engine(dense_model, attention_backend="TRITON_ATTN")
    assert triton["attention_backends"] == ["TRITON_ATTN"], _describe(triton)
    assert dense_default["attention_backends"] != ["TRITON_ATTN"], (
        "the default backend is already Triton: the comparison would compare Triton with itself\n"
        + _describe(dense_default))
    assert triton["runs"][0] == dense_default["runs"][0], (
        f"greedy tokens differ between {dense_default['attention_backends']} and TRITON_ATTN\n"
        f"default: {dense_default['runs'][0]}\ntriton:  {triton['runs'][0]}\n" + _describe(triton))


def test_moe_model_generates(moe_run):
    from tiny_models import MOE_LAYERS

    first, second = moe_run["runs"]
    assert all(len(tokens) == MAX_TOKENS for tokens in first), _describe(moe_run)
    assert first == second, "two greedy runs of the MoE model gave different tokens\n" + _describe(moe_run)
    assert len(moe_run["moe_layers"]) == MOE_LAYERS, "expected one fused MoE layer a block\n" + _describe(moe_run)
    if not on_cuda():
        backends = {layer["backend"] for layer in moe_run["moe_layers"]}
        assert backends == {"CPU"}, "expected vLLM's CPU fused MoE\n" + _describe(moe_run)


def test_moe_layer_uses_triton_kernels(moe_run):
    reason = triton_kernels_path_expected()
    if reason:
        pytest.skip(reason)
    for layer in moe_run["moe_layers"]:
        assert any(cls.startswith(TRITON_KERNELS_EXPERTS_MODULE + ".") for cls in layer["classes"]), (
            f"MoE layer {layer['name']} does not use the triton_kernels experts ({TRITON_KERNELS_EXPERTS_MODULE}); "
            f"did vLLM log 'Failed to import Triton kernels'?\n" + _describe(moe_run))


# --- the child process: one engine, two greedy runs, and what the model's layers chose ---------------------

def main(spec: dict) -> None:
    from vllm import LLM, SamplingParams

    engine_args = {}
    if spec["attention_backend"]:
        engine_args["attention_backend"] = spec["attention_backend"]
    llm = LLM(model=spec["model"], dtype="bfloat16", seed=0, max_model_len=256, enforce_eager=True,
              gpu_memory_utilization=0.2, **engine_args)
    # Greedy; ignore_eos so that every run has MAX_TOKENS tokens to compare.
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, seed=0)
    runs, texts = [], []
    for _ in range(2):
        outputs = llm.generate(PROMPTS, params, use_tqdm=False)
        runs.append([list(output.outputs[0].token_ids) for output in outputs])
        texts = [output.outputs[0].text for output in outputs]
    layers = llm.apply_model(describe_layers)[0]
    print(RESULT_PREFIX + json.dumps({"runs": runs, "texts": texts, **layers}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
