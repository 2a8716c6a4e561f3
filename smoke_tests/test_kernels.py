"""Level `kernels` (GPU): the image's kernels compute the right numbers on this GPU.

The MoE inputs are what vLLM's gpt-oss path feeds these kernels on Hopper: bf16 router logits with ties at the
top-4 boundary (judged by the tie rule stated in moe_reference: of equal logits the lower expert id), GEMM1
pre-activations that reach the SwiGLU limit (gpt-oss: limit 7.0, alpha 1.702), SwiGLU fused into matmul_ogs as
vLLM configures it; every reference is this suite's own PyTorch, sharing no code with triton_kernels.

Tolerances follow vLLM's own kernel tests: for bf16 max|err| / max|ref| below 1e-2 for the MoE GEMMs,
atol 1.5e-2 / rtol 1e-2 for attention; for the MXFP4 MoE the measure and bounds of vLLM's
test_gpt_oss_triton_kernels.py (moe_reference.mx_errors: max 0.025, rms 0.005); for the SwiGLU outputs
element by element, vLLM's bf16 allclose defaults (atol 1e-3, rtol 1.6e-2).
"""

from __future__ import annotations

import importlib.util

import pytest

import triton_kernels_contract as tkc

pytestmark = pytest.mark.kernels


@pytest.fixture(scope="module")
def mr():
    """The MoE routine (imports torch): loaded by the tests, so that collecting this file for another
    level never fails on an image whose torch is broken (the imports level reports that)."""
    import moe_reference

    return moe_reference


# bf16 gates: topk's softmax is fp32, stored in the logits' dtype (half a bf16 ulp at 1 is 2**-9).
GATE_TOL = {"torch.float32": 1e-4, "torch.bfloat16": 4e-3}


def check_routing(mr, r, logits, n_tokens):
    """triton_kernels.topk's experts and gates against the tie rule (moe_reference.torch_routing) on bf16 logits
    that tie at the top-k boundary; returns the reference (expert_idx, gate)."""
    import torch

    ties = mr.boundary_ties(logits)
    assert logits.dtype == torch.bfloat16 and ties.any(), "the router logits must be bf16 with boundary ties"
    ref_idx, ref_gate = mr.torch_routing(logits)
    wrong = (r.expert_idx != ref_idx).any(dim=1)
    # What vLLM's reference (torch.topk) does on the tied tokens, for the record: the rule is what it relies on.
    topk_idx = torch.sort(torch.topk(logits.float(), mr.TOP_K, dim=1, sorted=True).indices, dim=1).values
    print(f"{n_tokens} tokens: {int(ties.sum())} tie at the top-{mr.TOP_K} boundary; torch.topk follows the "
          f"tie rule on {int((topk_idx == ref_idx).all(dim=1)[ties].sum())} of them")
    assert not wrong.any(), (
        f"triton_kernels.topk broke the tie rule (on equal logits the lower expert id): other experts for "
        f"{int(wrong.sum())} of {n_tokens} tokens, {int((wrong & ties).sum())} of the {int(ties.sum())} that tie at "
        f"the top-{mr.TOP_K} boundary")
    gate_err = (r.gate - ref_gate).abs().max().item()
    tol = GATE_TOL[str(logits.dtype)]
    assert gate_err < tol, f"triton_kernels.topk softmax gates differ from torch by {gate_err:.2e} (tol {tol})"
    return ref_idx, ref_gate


@pytest.mark.parametrize("n_tokens", [16, 2048])
def test_moe_topk_matmul_ogs_matches_per_expert_loop(gpu, mr, n_tokens):
    tkc.load_triton_kernels()  # the copy vLLM would use
    x, logits, w = mr.make_inputs(n_tokens)
    r = mr.route(logits)
    ref_idx, ref_gate = check_routing(mr, r, logits, n_tokens)

    h = mr.gemm1(x, w, r)
    h_tokens = h[r.to_token_order].view(n_tokens, mr.TOP_K, -1)
    err1 = mr.rel_max_err(h_tokens, mr.loop_gemm1(x, w, ref_idx))
    # GEMM2 gets the kernel's own GEMM1 output, so its error is its own.
    y = mr.gemm2(h, w, r)
    err2 = mr.rel_max_err(y, mr.loop_gemm2(h_tokens, w, ref_idx, ref_gate))
    print(f"{n_tokens} tokens: GEMM1 (gather) rel max err {err1:.2e}, GEMM2 (scatter, gammas) {err2:.2e}")
    tol = mr.MOE_REL_TOL
    assert err1 < tol, f"matmul_ogs GEMM1 (gather) rel max err {err1:.2e} >= {tol} ({n_tokens} tokens)"
    assert err2 < tol, f"matmul_ogs GEMM2 (scatter+gammas) rel max err {err2:.2e} >= {tol} ({n_tokens} tokens)"


@pytest.mark.parametrize("weights", ["bf16", "mxfp4"])
def test_fused_swiglu_matches_gpt_oss_activation(gpu, mr, weights):
    """GEMM1 with SwiGLU fused as vLLM configures it (FusedActivation(FnSpecs("swiglu", swiglu_fn, ("alpha",
    "limit"), reduction_n=2), (1.702, 7.0))), on inputs whose GEMM is exact (moe_reference.lattice_inputs) and whose
    pre-activations reach the limit, against vLLM's SwigluOAIAndMul.forward_native written in PyTorch, element by
    element at vLLM's bf16 tolerance. A wrong limit or alpha in the fused path moves outputs far beyond it."""
    import torch

    tkc.load_triton_kernels()
    n_tokens = 512
    x, logits, w1, b1 = mr.lattice_inputs(n_tokens)
    if weights == "mxfp4":
        w = mr.make_mxfp4_weights()
        w1_kernel, b1, w1_ref, precision = w.w1, w.b1, w.w1_ref, w.w1_precision
    else:
        w1_kernel, w1_ref, precision = w1, w1, None
    r = mr.route(logits)
    with mr.vllm_hopper_opt_flags():
        h = mr.gemm1_swiglu(x, w1_kernel, b1, r, precision)
    h_tokens = h[r.to_token_order].view(n_tokens, mr.TOP_K, -1)
    # The kernel's own routing: this test judges the activation alone (the routing tests judge topk).
    pre = mr.loop_gemm1(x, mr.MoeWeights(w1=w1_ref, b1=b1, w2=None, b2=None), r.expert_idx)
    reach = mr.limit_reach(pre)
    ref = mr.swiglu_reference(pre)
    ratio = mr.tolerance_ratio(h_tokens, ref)
    max_err = (h_tokens.float() - ref).abs().max().item()
    print(f"fused SwiGLU ({weights} weights, {n_tokens} tokens): max |err| {max_err:.3e}, max err / (atol + rtol|ref|) "
          f"{ratio:.3f} (vLLM bf16 atol {mr.ACT_ATOL}, rtol {mr.ACT_RTOL}); pre-activations "
          + ", ".join(f"{k} {v:.1%}" for k, v in reach.items()))
    assert min(reach.values()) > 0.01, f"the pre-activations do not reach the SwiGLU limit {mr.SWIGLU_LIMIT}: {reach}"
    assert ratio <= 1, (
        f"matmul_ogs with fused SwiGLU ({weights} weights) is off gpt-oss's activation (alpha {mr.SWIGLU_ALPHA}, "
        f"limit {mr.SWIGLU_LIMIT}): max |err| {max_err:.3e}, {ratio:.2f} x vLLM's bf16 tolerance "
        f"(atol {mr.ACT_ATOL} + rtol {mr.ACT_RTOL} x |ref|)")


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
    # The routing of the reference is PyTorch's own (the tie rule + softmax), not triton_kernels': a fault in
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
    """The standalone swiglu kernel (triton_kernels.swiglu) on pre-activations that reach the limit, element by
    element at vLLM's bf16 tolerance (not relative to the largest output, which hides an error in small ones)."""
    import torch

    tkc.load_triton_kernels()
    from triton_kernels.swiglu import PrecisionConfig, swiglu

    g = torch.Generator(device="cuda").manual_seed(1)
    a = (torch.randn(1024, 2 * mr.INTERMEDIATE, generator=g, device="cuda") * mr.W1_REALISTIC_SCALE).to(torch.bfloat16)
    reach = mr.limit_reach(a)
    assert min(reach.values()) > 0.01, f"the inputs do not reach the SwiGLU limit {mr.SWIGLU_LIMIT}: {reach}"
    out = swiglu(a, mr.SWIGLU_ALPHA, PrecisionConfig(limit=mr.SWIGLU_LIMIT))
    ref = mr.swiglu_reference(a)
    ratio = mr.tolerance_ratio(out, ref)
    max_err = (out.float() - ref).abs().max().item()
    print(f"swiglu: max |err| {max_err:.3e}, max err / (atol + rtol|ref|) {ratio:.3f}, rel max err "
          f"{mr.rel_max_err(out, ref):.2e}")
    assert ratio <= 1, (f"triton_kernels swiglu is off gpt-oss's activation: max |err| {max_err:.3e}, {ratio:.2f} x "
                        f"vLLM's bf16 tolerance (atol {mr.ACT_ATOL} + rtol {mr.ACT_RTOL} x |ref|)")


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
