"""The routed MoE routine of vLLM's gpt-oss path, on triton_kernels, and its PyTorch per-expert reference.

One place for both, used by test_kernels.py (correctness) and bench_moe.py (speed). The triton_kernels
calls are the v3.6.0 API (routing is no longer a module; see UPSTREAM-FACTS.md):
    topk -> SparseMatrix -> ragged metadata -> RoutingData
    GEMM1: matmul_ogs with GatherIndx  (tokens gathered into expert-sorted rows)
    GEMM2: matmul_ogs with ScatterIndx and gammas (rows scattered back to tokens, weighted by the gates)
Weights are (E, K, N) bf16, biases (E, N) fp32, as vLLM lays them out for matmul_ogs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# gpt-oss-like shapes (gpt-oss-20b/120b: hidden 2880, expert intermediate 2880, top-4).
HIDDEN = 2880
INTERMEDIATE = 2880
N_EXPERTS = 32
TOP_K = 4
# gpt-oss SwiGLU constants (the model's config: swiglu_limit 7.0; alpha 1.702 in vLLM's gpt-oss MoE and in
# SwigluOAIAndMul).
SWIGLU_ALPHA = 1.702
SWIGLU_LIMIT = 7.0
# vLLM's bound for the bf16 routed GEMMs: max|err| / max|ref| (rel_max_err).
MOE_REL_TOL = 1e-2
# vLLM's tolerances for a bf16 result compared elementwise (tests/kernels/allclose_default.py, bf16):
# |actual - expected| <= ACT_ATOL + ACT_RTOL * |expected|.
ACT_ATOL = 1e-3
ACT_RTOL = 1.6e-2
# Scale of GEMM1's weights at which gpt-oss-like pre-activations reach the SwiGLU limit: with unit-variance
# activations the pre-activations are ~N(0, W1_REALISTIC_SCALE**2), so about 13% of them lie beyond +-6 and
# 3% between 6 and 7 (a std-1 pre-activation never reaches the clamp: a wrong limit would go unseen).
W1_REALISTIC_SCALE = 4.0
# One token in TIE_EVERY gets a forced tie at the top-k boundary, on top of the ties bf16 logits have anyway.
TIE_EVERY = 8


@dataclass
class MoeWeights:
    w1: torch.Tensor  # (E, hidden, intermediate) bf16
    b1: torch.Tensor  # (E, intermediate) fp32
    w2: torch.Tensor  # (E, intermediate, hidden) bf16
    b2: torch.Tensor  # (E, hidden) fp32


@dataclass
class Routing:
    """triton_kernels routing of one batch, plus the same routing in token order for the reference."""

    data: object  # triton_kernels.matmul_ogs.RoutingData
    gather: object  # GatherIndx(src=expert-sorted -> flat token*k+slot, dst=its inverse)
    scatter: object  # ScatterIndx(src=flat -> expert-sorted, dst=expert-sorted -> flat)
    gate_sorted: torch.Tensor  # (n*k,) fp32 gate of each expert-sorted row
    expert_idx: torch.Tensor  # (n, k) int64 selected experts, per token
    gate: torch.Tensor  # (n, k) fp32 gate of each selected expert, per token
    to_token_order: torch.Tensor  # (n*k,) row of the expert-sorted output for each flat token*k+slot


def make_inputs(n_tokens: int, *, hidden: int = HIDDEN, intermediate: int = INTERMEDIATE,
                n_experts: int = N_EXPERTS, seed: int = 0, device: str = "cuda",
                w1_scale: float = W1_REALISTIC_SCALE):
    """Random activations, router logits and weights. The logits are bf16, as gpt-oss's router (a bf16 linear
    layer) gives them to vLLM's triton_kernels MoE on Hopper, with ties at the top-k boundary (with_boundary_ties);
    GEMM1's pre-activations are ~N(0, w1_scale**2), so that they reach the SwiGLU limit; GEMM2's outputs O(1)."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape, scale=1.0, dtype=torch.bfloat16):
        return (torch.randn(*shape, generator=g, device=device) * scale).to(dtype)

    x = randn(n_tokens, hidden)
    logits = with_boundary_ties(randn(n_tokens, n_experts))
    weights = MoeWeights(
        w1=randn(n_experts, hidden, intermediate, scale=w1_scale * hidden**-0.5),
        b1=randn(n_experts, intermediate, scale=0.1, dtype=torch.float32),
        w2=randn(n_experts, intermediate, hidden, scale=intermediate**-0.5),
        b2=randn(n_experts, hidden, scale=0.1, dtype=torch.float32),
    )
    return x, logits, weights


def route(logits: torch.Tensor, k: int = TOP_K) -> Routing:
    """Top-k softmax routing with triton_kernels.topk, as vLLM's triton_kernels MoE path does it."""
    from triton_kernels.matmul_ogs import GatherIndx, RoutingData, ScatterIndx
    from triton_kernels.tensor import make_ragged_tensor_metadata
    from triton_kernels.topk import topk

    n_tokens, n_experts = logits.shape
    sparse = topk(logits, k, apply_softmax=True)
    to_token_order = sparse.mask_metadata.row_sorted_indx  # flat token*k+slot -> expert-sorted row
    to_expert_order = sparse.mask_metadata.col_sorted_indx  # expert-sorted row -> flat token*k+slot
    ragged = make_ragged_tensor_metadata(sparse.mask_metadata.col_sum, to_token_order.shape[0])
    gate_sorted = sparse.vals.flatten()[to_expert_order].float()
    return Routing(
        data=RoutingData(gate_sorted, ragged.slice_sizes, n_experts, k, ragged),
        gather=GatherIndx(to_expert_order, to_token_order),
        scatter=ScatterIndx(to_token_order, to_expert_order),
        gate_sorted=gate_sorted,
        expert_idx=sparse.indx.long(),
        gate=sparse.vals.float(),
        to_token_order=to_token_order.long(),
    )


def gemm1(x: torch.Tensor, w: MoeWeights, r: Routing) -> torch.Tensor:
    """(n*k, intermediate) bf16 in expert-sorted row order: x[token] @ w1[e] + b1[e]."""
    from triton_kernels.matmul_ogs import matmul_ogs

    return matmul_ogs(x, w.w1, w.b1, r.data, gather_indx=r.gather)


def gemm2(h: torch.Tensor, w: MoeWeights, r: Routing) -> torch.Tensor:
    """(n, hidden): sum over the token's experts of gate * (h @ w2[e] + b2[e])."""
    from triton_kernels.matmul_ogs import matmul_ogs

    return matmul_ogs(h, w.w2, w.b2, r.data, scatter_indx=r.scatter, gammas=r.gate_sorted)


def moe_flops(n_tokens: int, k: int, k_dim: int, n_dim: int) -> float:
    """Multiply-adds of one routed GEMM, counted as 2 FLOPs each (biases and gates ignored)."""
    return 2.0 * n_tokens * k * k_dim * n_dim


# ---------------------------------------------------------------------------- PyTorch reference
#
# The router's tie rule. vLLM's reference for its triton_kernels MoE (tests/kernels/moe/
# test_gpt_oss_triton_kernels.py, oai_moe_forward) routes with torch.topk(logits, k, sorted=True) and a softmax
# over the selected logits; triton_kernels.topk keys each logit with its expert id so that "stable top-k
# tie-breaks to value with smaller index" (topk_details/_topk_forward.py). Stated once, here, and implemented
# without torch.topk (whose order among equal values PyTorch does not document): of equal logits the LOWER expert
# id is selected. With bf16 logits a few percent of tokens tie at the k-th place; there the rule decides which
# expert the token goes to.


def torch_routing(logits: torch.Tensor, k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor]:
    """(expert_idx, gate) per token under the tie rule: the k largest logits, on equal logits the lower expert
    id first (a stable sort, descending, keeps equal values in id order); softmax over the selected logits in
    fp32; experts in ascending id order (the order triton_kernels.topk returns)."""
    order = torch.sort(logits.float(), dim=1, descending=True, stable=True).indices[:, :k]
    gate = torch.softmax(torch.gather(logits.float(), 1, order), dim=1)
    idx, by_id = torch.sort(order, dim=1)
    return idx, torch.gather(gate, 1, by_id)


def boundary_ties(logits: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """(n,) bool: the token's k-th and (k+1)-th largest logits are equal, so the tie rule picks its k-th expert."""
    top = torch.sort(logits.float(), dim=1, descending=True).values
    return top[:, k - 1] == top[:, k]


def with_boundary_ties(logits: torch.Tensor, k: int = TOP_K, every: int = TIE_EVERY) -> torch.Tensor:
    """A copy of logits where every `every`-th token's (k+1)-th largest logit is raised to its k-th: a tie at
    the top-k boundary even in a small batch (a batch of bf16 logits has ties of its own, ~3% of tokens at
    top-4 of 32). The tied pair keeps its ids, so in about half the forced ties the higher id held the larger
    value before: the rule, not the original order, must decide."""
    out = logits.clone()
    rows = torch.arange(0, logits.shape[0], every, device=logits.device)
    order = torch.sort(logits[rows].float(), dim=1, descending=True).indices
    out[rows, order[:, k]] = logits[rows, order[:, k - 1]]
    return out


def _per_expert_rows(expert_idx: torch.Tensor, n_experts: int):
    """For each expert, the flat token*k+slot positions routed to it (one host sync)."""
    flat = expert_idx.flatten()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=n_experts).tolist()
    return torch.split(order, counts)


def loop_gemm1(x: torch.Tensor, w: MoeWeights, expert_idx: torch.Tensor,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, k, intermediate) in token order, one matmul per expert in `dtype`."""
    n, k = expert_idx.shape
    out = torch.empty(n * k, w.w1.shape[-1], device=x.device, dtype=dtype)
    for e, rows in enumerate(_per_expert_rows(expert_idx, w.w1.shape[0])):
        if rows.numel():
            out[rows] = (x[rows // k].to(dtype) @ w.w1[e].to(dtype) + w.b1[e].to(dtype)).to(dtype)
    return out.view(n, k, -1)


def loop_gemm2(h: torch.Tensor, w: MoeWeights, expert_idx: torch.Tensor, gate: torch.Tensor,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, hidden): h is (n, k, intermediate) in token order; gate-weighted sum over the k experts."""
    n, k = expert_idx.shape
    h = h.reshape(n * k, -1)
    per_slot = torch.empty(n * k, w.w2.shape[-1], device=h.device, dtype=dtype)
    for e, rows in enumerate(_per_expert_rows(expert_idx, w.w2.shape[0])):
        if rows.numel():
            per_slot[rows] = h[rows].to(dtype) @ w.w2[e].to(dtype) + w.b2[e].to(dtype)
    return (per_slot.view(n, k, -1) * gate.to(dtype).unsqueeze(-1)).sum(dim=1)


def swiglu_reference(a: torch.Tensor, alpha: float = SWIGLU_ALPHA, limit: float = SWIGLU_LIMIT) -> torch.Tensor:
    """gpt-oss SwiGLU on interleaved (gate, linear) columns, in fp32: vLLM's SwigluOAIAndMul.forward_native
    (gate = x[..., ::2].clamp(max=limit), up = x[..., 1::2].clamp(-limit, limit),
    gate * sigmoid(alpha * gate) * (up + 1)), written here, sharing no code with triton_kernels."""
    a = a.float()
    gate = a[..., ::2].clamp(max=limit)
    linear = a[..., 1::2].clamp(min=-limit, max=limit)
    return gate * torch.sigmoid(alpha * gate) * (linear + 1)


def tolerance_ratio(actual: torch.Tensor, expected: torch.Tensor, atol: float = ACT_ATOL,
                    rtol: float = ACT_RTOL) -> float:
    """max over elements of |actual - expected| / (atol + rtol * |expected|): at most 1 passes vLLM's elementwise
    bf16 check (allclose). Unlike rel_max_err it judges each element by its own size, so an error in small
    outputs (a wrong alpha bends the negative half of SwiGLU) is not hidden behind the largest output."""
    expected = expected.float()
    return ((actual.float() - expected).abs() / (atol + rtol * expected.abs())).max().item()


def lattice_inputs(n_tokens: int, *, hidden: int = HIDDEN, intermediate: int = INTERMEDIATE,
                   n_experts: int = N_EXPERTS, seed: int = 2, device: str = "cuda"):
    """Activations and GEMM1 weights on a coarse grid, so that GEMM1 is EXACT in fp32 whatever the summation
    order (x in {-3..3}/2, variance 1; w1 in {-4..4}/32; b1 in {-8..8}/8: every product is a multiple of 2**-6
    and every partial sum far below 2**24 of them; MXFP4 weights, e2m1 times a power of two, keep it exact too):
    kernel and reference then see the same pre-activations and only the activation itself (and the bf16 rounding
    of its output) can differ. Pre-activations ~N(0, 4.3**2): about 16% beyond +-6 and 3% between 6 and 7, so the SwiGLU limit is
    reached. Returns x (n, hidden) bf16, router logits (bf16, with boundary ties),
    w1 (E, hidden, 2*intermediate) bf16 with (gate, linear) columns interleaved, b1 (E, 2*intermediate) fp32."""
    g = torch.Generator(device=device).manual_seed(seed)

    def grid(*shape, lo, hi, step):
        return torch.randint(lo, hi + 1, shape, generator=g, device=device).float() * step

    x = grid(n_tokens, hidden, lo=-3, hi=3, step=0.5).to(torch.bfloat16)
    w1 = grid(n_experts, hidden, 2 * intermediate, lo=-4, hi=4, step=1 / 32).to(torch.bfloat16)
    b1 = grid(n_experts, 2 * intermediate, lo=-8, hi=8, step=0.125)
    logits = with_boundary_ties((torch.randn(n_tokens, n_experts, generator=g, device=device)).to(torch.bfloat16))
    return x, logits, w1, b1


def gemm1_swiglu(x: torch.Tensor, w1, b1: torch.Tensor, r: "Routing", precision_config=None) -> torch.Tensor:
    """(n*k, intermediate) bf16, expert-sorted rows: swiglu(x[token] @ w1[e] + b1[e]) with SwiGLU fused into
    matmul_ogs's epilogue exactly as vLLM's triton_kernel_fused_experts configures it: FusedActivation(FnSpecs(
    "swiglu", triton_kernels.swiglu.swiglu_fn, ("alpha", "limit"), reduction_n=2), (alpha, limit)), gpt-oss's
    alpha 1.702 and limit 7.0; w1's columns interleave (gate, linear), which reduction_n=2 pairs."""
    from triton_kernels.matmul_ogs import FnSpecs, FusedActivation, matmul_ogs
    from triton_kernels.swiglu import swiglu_fn

    act = FusedActivation(FnSpecs("swiglu", swiglu_fn, ("alpha", "limit"), reduction_n=2),
                          (SWIGLU_ALPHA, SWIGLU_LIMIT))
    kwargs = {"precision_config": precision_config} if precision_config is not None else {}
    return matmul_ogs(x, w1, b1, r.data, gather_indx=r.gather, fused_activation=act, **kwargs)


def limit_reach(pre: torch.Tensor, limit: float = SWIGLU_LIMIT) -> dict[str, float]:
    """Fractions of the gate pre-activations (even columns) in (limit-1, limit] and beyond limit, and of the
    linear ones (odd columns) beyond +-limit: what a wrong clamp would change."""
    gate, linear = pre[..., ::2].float(), pre[..., 1::2].float()
    return {"gate_near_limit": ((gate > limit - 1) & (gate <= limit)).float().mean().item(),
            "gate_beyond_limit": (gate > limit).float().mean().item(),
            "linear_beyond_limit": (linear.abs() > limit).float().mean().item()}


def rel_max_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|actual - expected| / max|expected|: the error measure vLLM's MoE tests use for bf16."""
    expected = expected.float()
    return ((actual.float() - expected).abs().max() / expected.abs().max().clamp(min=1e-12)).item()


# ---------------------------------------------------------------------------- MXFP4 (gpt-oss's expert weights)
#
# OCP microscaling FP4: e2m1 values (sign + 2-bit exponent + 1-bit mantissa), two per byte (even index in the
# low nibble), and one power-of-two e8m0 scale (a biased exponent byte) per 32 values along the reduction axis.
# The quantizer below is this suite's own PyTorch code, independent of triton_kernels' downcast kernels, so a
# fault in triton_kernels' MX handling cannot cancel out between the kernel and the reference.

MX_BLOCK = 32
E2M1_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E8M0_BIAS = 127
# vLLM's tolerance for this path (tests/kernels/moe/test_gpt_oss_triton_kernels.py): elementwise error relative to
# max(rms(ref), |ref|), both normalised by max|ref|: max <= 0.025 and rms <= 0.005.
MXFP4_MAX_TOL = 0.025
MXFP4_RMS_TOL = 0.005


def quantize_mxfp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed uint8 (..., K/2), scales uint8 (..., K/32)) of w (..., K), quantized along the last axis.

    Scale: the smallest power of two that brings the block's max|w| to at most 6 (e2m1's largest value);
    values: round to the nearest e2m1 value, ties to the even code, saturating at 6.
    """
    *lead, k = w.shape
    if k % MX_BLOCK:
        raise ValueError(f"MXFP4 needs the quantized axis to be a multiple of {MX_BLOCK}, got {k}")
    blocks = w.float().reshape(*lead, k // MX_BLOCK, MX_BLOCK)
    amax = blocks.abs().amax(dim=-1)
    mantissa, exponent = torch.frexp(amax / E2M1_MAGNITUDES[-1])  # amax/6 = mantissa * 2**exponent, mantissa in [0.5, 1)
    exponent = torch.where(mantissa == 0.5, exponent - 1, exponent)  # an exact power of two needs no rounding up
    exponent = torch.where(amax == 0, -E8M0_BIAS, exponent).clamp(-E8M0_BIAS, E8M0_BIAS)
    scaled = blocks / torch.ldexp(torch.ones_like(amax), exponent).unsqueeze(-1)
    codes = e2m1_codes(scaled).reshape(*lead, k)
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)
    return packed, (exponent + E8M0_BIAS).to(torch.uint8)


def e2m1_codes(x: torch.Tensor) -> torch.Tensor:
    """4-bit e2m1 code (bit 3 = sign) of each value, round to nearest, ties to the even code, saturating."""
    magnitudes = torch.tensor(E2M1_MAGNITUDES, device=x.device)
    midpoints = (magnitudes[1:] + magnitudes[:-1]) / 2
    a = x.abs()
    below = torch.bucketize(a, midpoints, right=False)  # a tie goes to the smaller magnitude
    above = torch.bucketize(a, midpoints, right=True)   # a tie goes to the larger one
    index = torch.where(below % 2 == 0, below, above)  # differ only on a tie: take the even code
    return (index | torch.where(x < 0, 8, 0)).to(torch.int32)


def dequantize_mxfp4(packed: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(..., K) values of quantize_mxfp4's output."""
    magnitudes = torch.tensor(E2M1_MAGNITUDES, device=packed.device)
    table = torch.cat([magnitudes, -magnitudes])
    codes = torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2).long()
    values = table[codes]
    *lead, k = values.shape
    exponent = scales.to(torch.int32) - E8M0_BIAS
    blocks = torch.ldexp(values.reshape(*lead, k // MX_BLOCK, MX_BLOCK), exponent.unsqueeze(-1).float())
    return blocks.reshape(*lead, k).to(dtype)


def mx_errors(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(max, rms) of |actual - expected| / max(rms(expected), |expected|), both sides divided by max|expected|:
    the measure of vLLM's test of this path (small outputs are judged against the typical size, not their own)."""
    expected = expected.float()
    norm = expected.abs().max().clamp(min=1e-30)
    e, a = expected / norm, actual.float() / norm
    rel = (a - e).abs() / torch.maximum(e.square().mean().sqrt(), e.abs())
    return rel.max().item(), rel.square().mean().sqrt().item()


@dataclass
class Mxfp4MoeWeights:
    """gpt-oss experts as vLLM runs them on Hopper: MXFP4 weights in triton_kernels' sm_90 layouts, fp32 biases,
    GEMM1's output columns interleaved (gate, linear) for the fused SwiGLU; plus the dequantized weights
    (E, K, N) bf16 that the reference multiplies with."""

    w1: object  # triton_kernels Tensor, logical (E, hidden, 2*intermediate), FP4
    w1_precision: object  # PrecisionConfig carrying w1's scales
    b1: torch.Tensor  # (E, 2*intermediate) fp32
    w2: object  # logical (E, intermediate, hidden)
    w2_precision: object
    b2: torch.Tensor  # (E, hidden) fp32
    w1_ref: torch.Tensor  # (E, hidden, 2*intermediate) bf16, dequantized
    w2_ref: torch.Tensor  # (E, intermediate, hidden) bf16, dequantized
    value_layout: str
    scale_layout: str


def _to_triton_mxfp4(packed: torch.Tensor, scales: torch.Tensor, num_warps: int = 8):
    """Checkpoint-oriented (E, N, K/2) weights and (E, N, K/32) scales -> triton_kernels tensors in the layouts
    triton_kernels picks for this GPU (Hopper: HopperMXValueLayout / HopperMXScaleLayout), as vLLM's
    mxfp4_utils._swizzle_mxfp4 does: transposed so that the MX axis (K) is dim 1, then convert_layout."""
    from triton_kernels.matmul_ogs import FlexCtx, PrecisionConfig
    from triton_kernels.numerics import InFlexData
    from triton_kernels.tensor import FP4, convert_layout, wrap_torch_tensor
    from triton_kernels.tensor_details import layout

    value_layout, value_opts = layout.make_default_matmul_mxfp4_w_layout(mx_axis=1)
    scale_layout, scale_opts = layout.make_default_matmul_mxfp4_w_scale_layout(mx_axis=1, num_warps=num_warps)
    w = convert_layout(wrap_torch_tensor(packed.transpose(-2, -1), dtype=FP4), value_layout, **value_opts)
    s = convert_layout(wrap_torch_tensor(scales.transpose(-2, -1)), scale_layout, **scale_opts)
    precision = PrecisionConfig(weight_scale=s, flex_ctx=FlexCtx(rhs_data=InFlexData()))
    return w, precision, value_layout.__name__, scale_layout.__name__


def make_mxfp4_weights(*, hidden: int = HIDDEN, intermediate: int = INTERMEDIATE, n_experts: int = N_EXPERTS,
                       seed: int = 1, device: str = "cuda", w1_scale: float = W1_REALISTIC_SCALE) -> Mxfp4MoeWeights:
    """Random bf16 expert weights quantized to MXFP4 here, converted as vLLM converts gpt-oss's checkpoint."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape, scale):
        return (torch.randn(*shape, generator=g, device=device) * scale).to(torch.bfloat16)

    # Checkpoint orientation (E, out, in): quantized along `in`, the reduction axis of each GEMM.
    q1, s1 = quantize_mxfp4(randn(n_experts, 2 * intermediate, hidden, scale=w1_scale * hidden**-0.5))
    q2, s2 = quantize_mxfp4(randn(n_experts, hidden, intermediate, scale=intermediate**-0.5))
    w1, pc1, value_layout, scale_layout = _to_triton_mxfp4(q1, s1)
    w2, pc2, _, _ = _to_triton_mxfp4(q2, s2)
    return Mxfp4MoeWeights(
        w1=w1, w1_precision=pc1,
        b1=(torch.randn(n_experts, 2 * intermediate, generator=g, device=device) * 0.1),
        w2=w2, w2_precision=pc2,
        b2=(torch.randn(n_experts, hidden, generator=g, device=device) * 0.1),
        w1_ref=dequantize_mxfp4(q1, s1, torch.bfloat16).transpose(-2, -1).contiguous(),
        w2_ref=dequantize_mxfp4(q2, s2, torch.bfloat16).transpose(-2, -1).contiguous(),
        value_layout=value_layout, scale_layout=scale_layout,
    )


class vllm_hopper_opt_flags:
    """The matmul_ogs constraint vLLM sets for MXFP4 on sm_90 (split_k=1), removed again on exit: the
    constraints are process-global in triton_kernels."""

    def __enter__(self):
        import triton_kernels.matmul_ogs_details.opt_flags as opt_flags

        if torch.cuda.get_device_capability()[0] == 9:
            opt_flags.update_opt_flags_constraints({"split_k": 1})

    def __exit__(self, *exc):
        import triton_kernels.matmul_ogs_details.opt_flags as opt_flags

        opt_flags.reset_opt_flags_constraints()


def mxfp4_gemm1(x: torch.Tensor, w: Mxfp4MoeWeights, r: Routing) -> torch.Tensor:
    """(n*k, intermediate) bf16, expert-sorted rows: swiglu(x[token] @ w1[e] + b1[e]), SwiGLU fused into the
    GEMM's epilogue the way vLLM's triton_kernel_fused_experts configures it (gemm1_swiglu)."""
    return gemm1_swiglu(x, w.w1, w.b1, r, w.w1_precision)


def mxfp4_gemm2(h: torch.Tensor, w: Mxfp4MoeWeights, r: Routing) -> torch.Tensor:
    """(n, hidden): gate-weighted sum over the token's experts of h @ w2[e] + b2[e] (scatter + gammas)."""
    from triton_kernels.matmul_ogs import matmul_ogs

    return matmul_ogs(h, w.w2, w.b2, r.data, scatter_indx=r.scatter, precision_config=w.w2_precision,
                      gammas=r.gate_sorted)


def mxfp4_reference_weights(w: Mxfp4MoeWeights) -> MoeWeights:
    """The dequantized weights in the form the per-expert loop takes."""
    return MoeWeights(w1=w.w1_ref, b1=w.b1, w2=w.w2_ref, b2=w.b2)
