"""STAND-IN for triton_kernels.matmul_ogs_details."""
