"""STAND-IN for vLLM (gracectl test bed): the package layout and entry points only, no engine."""

from importlib.metadata import version as _version

__version__ = _version("vllm")
STANDIN = True
