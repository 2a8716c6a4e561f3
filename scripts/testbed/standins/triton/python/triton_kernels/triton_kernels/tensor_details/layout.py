"""STAND-IN for triton_kernels.tensor_details.layout."""

from triton_kernels import StandIn


class StridedLayout(StandIn):
    pass
