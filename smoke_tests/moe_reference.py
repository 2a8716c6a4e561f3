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
# gpt-oss SwiGLU constants.
SWIGLU_ALPHA = 1.702
SWIGLU_LIMIT = 7.0


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
                n_experts: int = N_EXPERTS, seed: int = 0, device: str = "cuda"):
    """Random activations, router logits and weights, scaled so that outputs stay O(1)."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape, scale=1.0, dtype=torch.bfloat16):
        return (torch.randn(*shape, generator=g, device=device) * scale).to(dtype)

    x = randn(n_tokens, hidden)
    # fp32 logits: no ties between experts, so the selected set is unique (bf16 logits can tie).
    logits = randn(n_tokens, n_experts, dtype=torch.float32)
    weights = MoeWeights(
        w1=randn(n_experts, hidden, intermediate, scale=hidden**-0.5),
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


def torch_routing(logits: torch.Tensor, k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor]:
    """(expert_idx, gate) per token: top-k logits, softmax over the selected, experts in ascending id order
    (the order triton_kernels.topk returns)."""
    vals, idx = torch.topk(logits.float(), k, dim=1)
    gate = torch.softmax(vals, dim=1)
    idx, order = torch.sort(idx, dim=1)
    return idx, torch.gather(gate, 1, order)


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
    """gpt-oss SwiGLU on interleaved (gate, linear) columns, in fp32."""
    a = a.float()
    gate = a[..., ::2].clamp(max=limit)
    linear = a[..., 1::2].clamp(min=-limit, max=limit)
    return gate * torch.sigmoid(alpha * gate) * (linear + 1)


def rel_max_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|actual - expected| / max|expected|: the error measure vLLM's MoE tests use for bf16."""
    expected = expected.float()
    return ((actual.float() - expected).abs().max() / expected.abs().max().clamp(min=1e-12)).item()
