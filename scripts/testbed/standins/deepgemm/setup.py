"""STAND-IN for DeepGEMM's setup.py (gracectl test bed): a pure-python wheel named like the real one."""

from setuptools import setup

setup(name="deep_gemm", version="2.1.0", packages=["deep_gemm"],
      description="STAND-IN for DeepGEMM (gracectl test bed): no kernels")
