"""STAND-IN for vllm.third_party: the build vendors triton_kernels here."""
