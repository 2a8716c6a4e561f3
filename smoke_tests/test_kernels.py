"""Level `kernels` (GPU): the image's kernels compute the right numbers on this GPU.

Tolerances follow vLLM's own kernel tests: for bf16 max|err| / max|ref| below 1e-2 for the MoE GEMMs,
atol 1.5e-2 / rtol 1e-2 for attention; for the MXFP4 MoE the measure and bounds of vLLM's
test_gpt_oss_triton_kernels.py (moe_reference.mx_errors: max 0.025, rms 0.005).
"""

from __future__ import annotations

import importlib.util

import pytest

import triton_kernels_contract as tkc

pytestmark = pytest.mark.kernels

MOE_REL_TOL = 1e-2


@pytest.fixture(scope="module")
def mr():
    """The MoE routine (imports torch): loaded by the tests, so that collecting this file for another
    level never fails on an image whose torch is broken (the imports level reports that)."""
    import moe_reference

    return moe_reference


@pytest.mark.parametrize("n_tokens", [16, 2048])
def test_moe_topk_matmul_ogs_matches_per_expert_loop(gpu, mr, n_tokens):
    import torch

    tkc.load_triton_kernels()  # the copy vLLM would use
    x, logits, w = mr.make_inputs(n_tokens)
    r = mr.route(logits)
    ref_idx, ref_gate = mr.torch_routing(logits)
    assert torch.equal(r.expert_idx, ref_idx), f"triton_kernels.topk picked other experts than torch.topk ({n_tokens} tokens)"
    gate_err = (r.gate - ref_gate).abs().max().item()
    assert gate_err < 1e-4, f"triton_kernels.topk softmax gates differ from torch by {gate_err:.2e}"

    h = mr.gemm1(x, w, r)
    h_tokens = h[r.to_token_order].view(n_tokens, mr.TOP_K, -1)
    err1 = mr.rel_max_err(h_tokens, mr.loop_gemm1(x, w, ref_idx))
    # GEMM2 gets the kernel's own GEMM1 output, so its error is its own.
    y = mr.gemm2(h, w, r)
    err2 = mr.rel_max_err(y, mr.loop_gemm2(h_tokens, w, ref_idx, ref_gate))
    print(f"{n_tokens} tokens: GEMM1 (gather) rel max err {err1:.2e}, GEMM2 (scatter, gammas) {err2:.2e}")
    assert err1 < MOE_REL_TOL, f"matmul_ogs GEMM1 (gather) rel max err {err1:.2e} >= {MOE_REL_TOL} ({n_tokens} tokens)"
    assert err2 < MOE_REL_TOL, f"matmul_ogs GEMM2 (scatter+gammas) rel max err {err2:.2e} >= {MOE_REL_TOL} ({n_tokens} tokens)"


@pytest.mark.parametrize("n_tokens", [16, 2048])
def test_moe_mxfp4_matmul_ogs_matches_dequantized_reference(gpu, mr, n_tokens):
    """gpt-oss's path on Hopper: bf16 activations x MXFP4 weights (w4a16) in triton_kernels' sm_90 layouts,
    gather GEMM1 with fused SwiGLU, scatter GEMM2 with gate weights, against PyTorch on the dequantized weights
    routed by PyTorch (torch.topk + softmax), so routing, weight decoding and the GEMMs are all checked."""
    import torch

    tkc.load_triton_kernels()
    x, logits, _ = mr.make_inputs(n_tokens)
    w = mr.make_mxfp4_weights()
    if torch.cuda.get_device_capability()[0] == 9:
        assert (w.value_layout, w.scale_layout) == ("HopperMXValueLayout", "HopperMXScaleLayout"), (
            f"triton_kernels picked {w.value_layout}/{w.scale_layout} on sm_90, not the Hopper MX layouts")
    r = mr.route(logits)
    with mr.vllm_hopper_opt_flags():
        h = mr.mxfp4_gemm1(x, w, r)
        y = mr.mxfp4_gemm2(h, w, r)
    ref_w = mr.mxfp4_reference_weights(w)
    # The routing of the reference is PyTorch's own (torch.topk + softmax), not triton_kernels': a fault in
    # triton_kernels.topk must show in this test's figures, not cancel out between kernel and reference.
    ref_idx, ref_gate = mr.torch_routing(logits)
    h_tokens = h[r.to_token_order].view(n_tokens, mr.TOP_K, -1)
    ref_h = mr.swiglu_reference(mr.loop_gemm1(x, ref_w, ref_idx))
    ref_y_own_h = mr.loop_gemm2(h_tokens, ref_w, ref_idx, ref_gate)
    ref_y = mr.loop_gemm2(ref_h, ref_w, ref_idx, ref_gate)  # from x alone, as vLLM's test compares
    figures = {"GEMM1+SwiGLU": mr.mx_errors(h_tokens, ref_h), "GEMM2": mr.mx_errors(y, ref_y_own_h),
               "MoE": mr.mx_errors(y, ref_y)}
    print(f"{n_tokens} tokens, {w.value_layout}/{w.scale_layout}: " +
          ", ".join(f"{k} max {m:.2e} rms {s:.2e}" for k, (m, s) in figures.items()))
    for what, (max_err, rms_err) in figures.items():
        assert max_err <= mr.MXFP4_MAX_TOL and rms_err <= mr.MXFP4_RMS_TOL, (
            f"MXFP4 {what} ({n_tokens} tokens): max rel err {max_err:.2e} (tol {mr.MXFP4_MAX_TOL}), "
            f"rms {rms_err:.2e} (tol {mr.MXFP4_RMS_TOL})")


def test_swiglu_matches_reference(gpu, mr):
    import torch

    tkc.load_triton_kernels()
    from triton_kernels.swiglu import PrecisionConfig, swiglu

    g = torch.Generator(device="cuda").manual_seed(1)
    # Scaled so that the clamp at `limit` is exercised.
    a = (torch.randn(1024, 2 * mr.INTERMEDIATE, generator=g, device="cuda") * 4).to(torch.bfloat16)
    out = swiglu(a, mr.SWIGLU_ALPHA, PrecisionConfig(limit=mr.SWIGLU_LIMIT))
    err = mr.rel_max_err(out, mr.swiglu_reference(a))
    assert err < MOE_REL_TOL, f"triton_kernels swiglu rel max err {err:.2e} >= {MOE_REL_TOL}"


# ---------------------------------------------------------------------------- attention


def reference_attention(q, k, v, scale):
    """Causal attention of one sequence in fp32, the mask aligned bottom-right (queries are the last
    len(q) positions of the len(k) keys), GQA by repeating the KV heads. q: (Lq, Hq, D), k/v: (Lk, Hkv, D)."""
    import torch

    n_rep = q.shape[1] // k.shape[1]
    k = k.float().repeat_interleave(n_rep, dim=1)
    v = v.float().repeat_interleave(n_rep, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k) * scale
    lq, lk = q.shape[0], k.shape[0]
    allowed = torch.arange(lk, device=q.device)[None, :] <= torch.arange(lq, device=q.device)[:, None] + (lk - lq)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(scores, dim=-1), v)


# A decode step, a prefill chunk on top of cached tokens and a full prefill.
QUERY_LENS, KV_LENS = [1, 7, 64], [37, 100, 64]
N_HEADS, N_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 8, 2, 128, 16


def _cu(lengths, device):
    import torch

    return torch.tensor([0, *lengths], device=device, dtype=torch.int32).cumsum(0, dtype=torch.int32)


def test_vllm_triton_unified_attention_matches_reference(gpu):
    if not tkc.vllm_installed():
        pytest.skip("vLLM is not installed: its Triton attention kernel is not here")
    import torch
    from vllm.v1.attention.ops.triton_unified_attention import unified_attention

    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    n_blocks, max_blocks = 64, -(-max(KV_LENS) // BLOCK_SIZE)
    q = torch.randn(sum(QUERY_LENS), N_HEADS, HEAD_DIM, device=dev, dtype=dt)
    k_cache = torch.randn(n_blocks, BLOCK_SIZE, N_KV_HEADS, HEAD_DIM, device=dev, dtype=dt)
    v_cache = torch.randn_like(k_cache)
    block_table = torch.randperm(n_blocks, device=dev, dtype=torch.int32)[: len(KV_LENS) * max_blocks]
    block_table = block_table.view(len(KV_LENS), max_blocks)
    cu_q = _cu(QUERY_LENS, dev)
    out = torch.empty_like(q)
    scale = HEAD_DIM**-0.5
    one = torch.ones(1, device=dev, dtype=torch.float32)  # k/v descale, read only for fp8 caches
    unified_attention(q=q, k=k_cache, v=v_cache, out=out, cu_seqlens_q=cu_q, max_seqlen_q=max(QUERY_LENS),
                      seqused_k=torch.tensor(KV_LENS, device=dev, dtype=torch.int32), max_seqlen_k=max(KV_LENS),
                      softmax_scale=scale, causal=True, window_size=(-1, -1), block_table=block_table,
                      softcap=0, q_descale=None, k_descale=one, v_descale=one)
    for i, (lq, lk) in enumerate(zip(QUERY_LENS, KV_LENS)):
        blocks = block_table[i, : -(-lk // BLOCK_SIZE)].long()
        k = k_cache[blocks].reshape(-1, N_KV_HEADS, HEAD_DIM)[:lk]
        v = v_cache[blocks].reshape(-1, N_KV_HEADS, HEAD_DIM)[:lk]
        ref = reference_attention(q[cu_q[i]:cu_q[i + 1]], k, v, scale)
        torch.testing.assert_close(out[cu_q[i]:cu_q[i + 1]].float(), ref, atol=1.5e-2, rtol=1e-2,
                                   msg=lambda m: f"vLLM unified_attention, sequence {i} (q {lq}, kv {lk}): {m}")


def _flash_attn_varlen(variant: str):
    """flash_attn_varlen_func of the variant and its extra kwargs, or skip with the reason."""
    if variant.startswith("vllm-fa"):
        if not tkc.vllm_installed():
            pytest.skip("vLLM is not installed: vllm.vllm_flash_attn is not here")
        # In a vLLM image this import must work: vLLM's attention backend needs it.
        from vllm.vllm_flash_attn import fa_version_unsupported_reason, flash_attn_varlen_func

        version = int(variant[-1])
        reason = fa_version_unsupported_reason(version)
        if reason:
            pytest.skip(f"vllm_flash_attn FA{version} unsupported here: {reason}")
        return flash_attn_varlen_func, {"fa_version": version}
    if importlib.util.find_spec("flash_attn") is None:
        pytest.skip("the flash_attn package is not installed (vLLM images ship vllm.vllm_flash_attn instead)")
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func, {}


@pytest.mark.parametrize("variant", ["vllm-fa2", "vllm-fa3", "flash_attn"])
def test_flash_attn_forward_matches_reference(gpu, variant):
    import torch

    fn, extra = _flash_attn_varlen(variant)
    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    q = torch.randn(sum(QUERY_LENS), N_HEADS, HEAD_DIM, device=dev, dtype=dt)
    k = torch.randn(sum(KV_LENS), N_KV_HEADS, HEAD_DIM, device=dev, dtype=dt)
    v = torch.randn_like(k)
    cu_q, cu_k = _cu(QUERY_LENS, dev), _cu(KV_LENS, dev)
    scale = HEAD_DIM**-0.5
    out = fn(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max(QUERY_LENS),
             max_seqlen_k=max(KV_LENS), softmax_scale=scale, causal=True, **extra)
    out = out[0] if isinstance(out, tuple) else out
    for i, (lq, lk) in enumerate(zip(QUERY_LENS, KV_LENS)):
        ref = reference_attention(q[cu_q[i]:cu_q[i + 1]], k[cu_k[i]:cu_k[i + 1]], v[cu_k[i]:cu_k[i + 1]], scale)
        torch.testing.assert_close(out[cu_q[i]:cu_q[i + 1]].float(), ref, atol=1.5e-2, rtol=1e-2,
                                   msg=lambda m: f"{variant} forward, sequence {i} (q {lq}, kv {lk}): {m}")
