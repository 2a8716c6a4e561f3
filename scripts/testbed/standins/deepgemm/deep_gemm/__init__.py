"""STAND-IN for DeepGEMM (gracectl test bed): the package name and version only, no kernels."""

__version__ = "2.1.0"
STANDIN = True
