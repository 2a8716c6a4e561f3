"""STAND-IN for flashinfer-jit-cache 0.6.6 (gracectl test bed): FlashInfer's index is not reachable here;
the real wheel holds precompiled FlashInfer JIT modules for one CUDA version."""

__version__ = "0.6.6"
STANDIN = True
