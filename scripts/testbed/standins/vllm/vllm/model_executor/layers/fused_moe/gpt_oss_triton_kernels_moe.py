"""STAND-IN for vLLM 0.19.0's fused_moe/gpt_oss_triton_kernels_moe.py: the same imports from triton_kernels,
caught and only logged like vLLM does (vLLM then takes a slower MoE path)."""

import logging

from vllm.utils.import_utils import import_triton_kernels

logger = logging.getLogger("vllm.model_executor.layers.fused_moe.gpt_oss_triton_kernels_moe")

HAS_TRITON_KERNELS = False
if import_triton_kernels() is not None:
    try:
        import triton_kernels.swiglu  # noqa: F401
        from triton_kernels.matmul_ogs import (FlexCtx, FnSpecs, FusedActivation, GatherIndx,  # noqa: F401
                                               PrecisionConfig, RoutingData, ScatterIndx, matmul_ogs)
        from triton_kernels.tensor import (BIT, FP4, Bitmatrix, SparseMatrix,  # noqa: F401
                                           convert_layout, make_ragged_tensor_metadata, wrap_torch_tensor)
        from triton_kernels.topk import topk  # noqa: F401
        from triton_kernels.numerics import InFlexData  # noqa: F401
        from triton_kernels.matmul_ogs_details import opt_flags  # noqa: F401
        from triton_kernels.tensor_details.layout import StridedLayout  # noqa: F401

        HAS_TRITON_KERNELS = True
    except (ImportError, AttributeError) as e:
        logger.error("Failed to import Triton kernels. Please make sure your triton version is compatible. "
                     "Error: %s", e)
