"""STAND-IN for vllm/utils/import_utils.py, with vLLM 0.19.0's documented triton_kernels behaviour:
a top-level `triton_kernels` in site-packages wins; else the vendored vllm.third_party.triton_kernels is
used and registered as sys.modules["triton_kernels"]. Like vLLM, a failure is only logged.
"""

import importlib
import importlib.util
import logging
import sys

logger = logging.getLogger("vllm")


def import_triton_kernels():
    """Return the triton_kernels module vLLM uses, or None (logged) when neither copy imports."""
    if importlib.util.find_spec("triton_kernels") is not None:
        try:
            return importlib.import_module("triton_kernels")
        except ImportError as exc:
            logger.warning("Failed to import Triton kernels. Please make sure your triton version is "
                           "compatible. Error: %s", exc)
            return None
    try:
        module = importlib.import_module("vllm.third_party.triton_kernels")
    except ImportError as exc:
        logger.warning("Failed to import Triton kernels (vendored copy). Error: %s", exc)
        return None
    sys.modules["triton_kernels"] = module
    return module
