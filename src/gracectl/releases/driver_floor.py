"""The minimum NVIDIA driver of an image: THE table, CUDA major.minor -> the oldest Linux driver that runs it.

The plan stamps it into every image (build arg MIN_DRIVER: label io.gracectl.min-driver, image.json's min_driver);
`gracectl doctor` on the smoke node and the smoke suite's GPU fixture compare the node's driver with it
(smoke_tests/node_driver.py: the one comparison and its message, loaded here by path).
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from gracectl.checkout import SMOKE_TESTS
from gracectl.errors import ManifestError

# Source: NVIDIA's CUDA Toolkit Release Notes, Table 3 "CUDA Toolkit and Corresponding Driver Versions", the
# toolkit's GA release, Linux (aarch64/SBSA drivers carry the same version numbers). Below it the image's CUDA runs
# only through the forward-compatibility libraries (VLLM_ENABLE_CUDA_COMPATIBILITY: CLAWMINE.md, "Driver floor").
MIN_DRIVER: dict[str, str] = {
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",  # R580+
}

NODE_DRIVER_MODULE = SMOKE_TESTS / "node_driver.py"


def min_driver(cuda: str) -> str:
    """The oldest Linux driver for CUDA `cuda` (major.minor); a CUDA not in the table is a one-line error."""
    try:
        return MIN_DRIVER[cuda]
    except KeyError:
        raise ManifestError(f"no minimum NVIDIA driver is known for CUDA {cuda}: add it to MIN_DRIVER in "
                            "src/gracectl/releases/driver_floor.py from NVIDIA's CUDA Toolkit Release Notes "
                            "(Table 3)") from None


def node_driver_module() -> ModuleType:
    """smoke_tests/node_driver.py: the comparison the smoke suite makes inside the image (loaded by path)."""
    spec = importlib.util.spec_from_file_location("gracectl_node_driver", NODE_DRIVER_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
