"""The test bed's two mirror files: the stand-in stack's, and the real stack's (PyPI through the proxy, each
remaining stand-in named), read back through gracectl.releases.mirrors and planned."""

from __future__ import annotations

from gracectl.releases.manifest import load_release
from gracectl.releases.mirrors import load_mirror
from gracectl.image.plan import make_plan
from gracectl.testbed.mirror_file import REAL, STANDIN, write_mirror
from gracectl.testbed.standins import STANDIN_REPOS
from gracectl.testbed.state import State


def state() -> State:
    st = State(registry_port=5200, git_port=9618, index_port=5280, proxy_port=5290)
    st.repos = {url: {"commit": "c" * 40} for url in STANDIN_REPOS}
    return st


def test_real_stack_mirror_plans_pypi_through_the_proxy_and_names_the_standins(tmp_path):
    mirror = load_mirror(write_mirror(state(), tmp_path / "real.toml", REAL))
    plan = make_plan(load_release("v0.19.0-tfa"), mirror=mirror, commit="0" * 40)
    args = plan.build_args
    assert args["PIP_INDEX_URL"] == args["TORCH_INDEX_URL"] == "http://127.0.0.1:5290/index"
    assert args["FLASHINFER_INDEX_URL"] == "http://127.0.0.1:5280/flashinfer/simple"
    assert (args["TORCH_VERSION"], args["TORCHVISION_VERSION"], args["TORCHAUDIO_VERSION"]) == (
        "2.10.0", "0.25.0", "2.10.0")
    assert args["FLASHINFER_CUBINS_URL"] == ""
    assert args["TRITON_KERNELS_REPO"] == "git://127.0.0.1:9618/triton-lang/triton-real.git"
    standins = "\n".join(plan.standins)
    for needle in ("torch.version: 2.10.0+cu129 -> 2.10.0", "torch.torchvision", "flashinfer.cubins_url",
                   "cuda.runtime_packages: from deb [trusted=yes] http://127.0.0.1:5280/nvidia-apt ./ (STAND-IN"):
        assert needle in standins
    # the CUDA packages are installed, from the stand-in repository the build is given
    assert "cuda-nvcc-12-9" in args["CUDA_RUNTIME_PACKAGES"].split()
    assert args["APT_SOURCES"] == "deb [trusted=yes] http://127.0.0.1:5280/nvidia-apt ./"


def test_standin_mirror_keeps_the_standin_index_and_cuda_pins(tmp_path):
    mirror = load_mirror(write_mirror(state(), tmp_path / "standin.toml", STANDIN))
    plan = make_plan(load_release("v0.19.0-tfa"), mirror=mirror, commit="0" * 40)
    assert plan.build_args["PIP_INDEX_URL"] == "http://127.0.0.1:5280/simple"
    assert plan.build_args["TORCH_VERSION"] == "2.10.0+cu129"
    assert plan.build_args["TRITON_KERNELS_REPO"] == "git://127.0.0.1:9618/triton-lang/triton.git"
    assert not any(s.startswith("torch.") for s in plan.standins)
