"""STAND-IN for Triton 3.6.0 (gracectl test bed): the version only, no compiler."""

__version__ = "3.6.0"
STANDIN = True
