"""STAND-IN for triton_kernels.tensor_details."""
