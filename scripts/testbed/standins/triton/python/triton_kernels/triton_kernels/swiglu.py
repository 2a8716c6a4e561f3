"""STAND-IN for triton_kernels.swiglu."""

from triton_kernels import standin

swiglu = standin("swiglu.swiglu")
swiglu_fn = standin("swiglu.swiglu_fn")
