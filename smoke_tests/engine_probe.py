"""What a running vLLM engine chose, for the engine smoke level and the engine benchmark (both in the image).

A plain module, not a test module: bench_engine.py imports it too, and vLLM's LLM.apply_model ships
describe_layers into the engine process by reference, so it must be importable there.
"""

from __future__ import annotations

TRITON_KERNELS_EXPERTS_MODULE = "vllm.model_executor.layers.fused_moe.gpt_oss_triton_kernels_moe"


def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def triton_kernels_path_expected() -> str | None:
    """None when vLLM should pick the triton_kernels MoE experts here; otherwise why not (a skip reason)."""
    if not on_cuda():
        return "no CUDA GPU: vLLM's triton_kernels MoE path is GPU-only (the CPU uses its own fused MoE)"
    import torch
    from vllm.utils.import_utils import has_triton_kernels

    capability = torch.cuda.get_device_capability()
    if not (9, 0) <= capability < (11, 0):  # the rule in vLLM 0.19.0's fused_moe/oracle/mxfp4.py
        return f"GPU capability {capability} is outside vLLM's triton_kernels range 9.0 to 10.x"
    if not has_triton_kernels():
        return "triton_kernels is not importable (neither site-packages nor vLLM's vendored copy)"
    return None


def describe_layers(model) -> dict:
    """Runs inside the engine process (LLM.apply_model): attention backends and MoE kernel classes."""
    attention_backends = set()
    moe_layers = []
    for name, module in model.named_modules():
        backend = getattr(module, "attn_backend", None)
        if backend is not None and hasattr(backend, "get_name"):
            attention_backends.add(backend.get_name())
        quant_method = getattr(module, "quant_method", None)
        if type(module).__name__ in ("FusedMoE", "SharedFusedMoE") and quant_method is not None:
            # The classes that decide the MoE kernel: the method, the experts class it selected, the
            # kernel object it built, and the method it may have wrapped.
            parts = [quant_method, getattr(quant_method, "experts_cls", None),
                     getattr(quant_method, "moe_kernel", None), getattr(quant_method, "old_quant_method", None)]
            kernel = getattr(quant_method, "moe_kernel", None)
            parts.append(getattr(kernel, "fused_experts", None))
            classes = sorted({f"{c.__module__}.{c.__qualname__}"
                              for c in (p if isinstance(p, type) else type(p) for p in parts if p is not None)})
            backend_choice = (getattr(quant_method, "mxfp4_backend", None)
                              or getattr(quant_method, "unquantized_backend", None))
            moe_layers.append({"name": name, "classes": classes,
                               "backend": getattr(backend_choice, "name", str(backend_choice))})
    return {"attention_backends": sorted(attention_backends), "moe_layers": moe_layers}
