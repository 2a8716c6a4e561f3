"""STAND-IN for triton_kernels.tensor."""

from triton_kernels import StandIn, standin

BIT = "bit"
FP4 = "fp4"


class Bitmatrix(StandIn):
    pass


class SparseMatrix(StandIn):
    pass


make_ragged_tensor_metadata = standin("tensor.make_ragged_tensor_metadata")
convert_layout = standin("tensor.convert_layout")
wrap_torch_tensor = standin("tensor.wrap_torch_tensor")
