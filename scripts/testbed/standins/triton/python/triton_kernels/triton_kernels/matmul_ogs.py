"""STAND-IN for triton_kernels.matmul_ogs (Triton 3.6; renamed `matmul` in 3.8)."""

import triton  # noqa: F401  (the real module needs triton; so does the stand-in, to check the wheel is there)

from triton_kernels import StandIn, standin


class FnSpecs(StandIn):
    pass


class FusedActivation(StandIn):
    pass


class GatherIndx(StandIn):
    pass


class ScatterIndx(StandIn):
    pass


class RoutingData(StandIn):
    pass


class PrecisionConfig(StandIn):
    pass


class FlexCtx(StandIn):
    pass


matmul_ogs = standin("matmul_ogs.matmul_ogs")
