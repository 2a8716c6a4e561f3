"""STAND-IN for PyTorch 2.10.0 (CUDA 12.9 build) in the gracectl test bed: a pure-python package that
reports the real wheel's version, CUDA version and compile-time arch list, with no GPU ever available and no
tensor code at all. It lets the build and the GPU-free `imports` smoke level run without a GPU."""

__version__ = "2.10.0+cu129"
STANDIN = True

from torch import _C, cuda, version  # noqa: E402,F401
