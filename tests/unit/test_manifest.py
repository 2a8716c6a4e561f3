"""Release manifests: the shipped ones load; every kind of bad input is one line naming file and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gracectl.errors import ManifestError
from gracectl.releases.manifest import load_release, release_names, releases_dir

GOOD = (releases_dir() / "v0.19.0-tfa.toml").read_text()
FACTS_PINS = {  # as vLLM v0.19.0's cmake files and docker/Dockerfile pin them (shared/UPSTREAM-FACTS.md)
    "flash_attn": "29210221863736a08f71a866459e368ad1ac4a95",
    "flashmla": "692917b1cda61b93ac9ee2d846ec54e75afe87b1",
    "triton_kernels": "v3.6.0",
    "cmake.cutlass": "v4.2.1",
    "cmake.qutlass": "830d2c4537c7396e14a02a46fbddd18b5d107c65",
    "cmake.triton_kernels": "v3.6.0",
    "deepgemm": "477618cd51baffca09c4b0b87e97c03fe827ef03",
}
CMAKE_ENVS = {"cutlass": ("VLLM_CUTLASS_SRC_DIR", ""), "qutlass": ("QUTLASS_SRC_DIR", ""),
              "triton_kernels": ("TRITON_KERNELS_SRC_DIR", "python/triton_kernels/triton_kernels")}


def test_shipped_releases():
    assert {"v0.19.0-tfa", "v0.19.0"} <= set(release_names())
    tfa, fallback = load_release("v0.19.0-tfa"), load_release("v0.19.0")
    assert tfa.image_ref == "gh200-vllm-tfa:v0.19.0-tfa" and tfa.with_triton_kernels
    assert fallback.image_ref == "gh200-vllm:v0.19.0" and not fallback.with_triton_kernels
    assert tfa.release.fallback == fallback.image_ref
    for m in (tfa, fallback):
        assert m.release.platform == "linux/arm64"
        assert m.build.cuda_arch_list == "9.0a"
        assert m.torch.version == "2.10.0+cu129" and "download.pytorch.org" in m.torch.index_url
        assert (m.torch.torchvision, m.torch.torchaudio) == ("0.25.0+cu129", "2.10.0+cu129")
        assert m.cuda.version == "12.9" and "cuda-nvcc-12-9" in m.cuda.runtime_packages
        assert m.build.cmake_build_type == "Release" and m.build.max_jobs // m.build.nvcc_threads == 33
        assert m.sources.triton_kernels.repo == m.sources.triton.repo
        assert m.sources.triton_kernels.subdir == "python/triton_kernels"
        assert {k: v.ref for k, v in m.sources.pinned().items() if k != "vllm" and k != "triton"} == FACTS_PINS
        assert {k: (s.env, s.subdir) for k, s in m.sources.cmake.items()} == CMAKE_ENVS
        assert m.flashinfer.jit_cache_index_url and not m.python.overrides and not m.torch.cuda_build_on_index
    # The fallback says only what differs ([release]); everything else is its tfa twin's.
    assert fallback.model_dump(exclude={"release", "extends"}) == tfa.model_dump(exclude={"release", "extends"})


def write(tmp_path: Path, text: str, name: str = "v0.19.0-tfa") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (lambda t: t.replace('[python]', 'colour = "blue"\n\n[python]'), "release.colour", "unknown key"),
        (lambda t: t.replace('ref = "v0.19.0"', 'ref = "main"'), "sources.vllm.ref", "release tag"),
        (lambda t: t.replace('ref = "29210221863736a08f71a866459e368ad1ac4a95"', 'ref = "2921022"'),
         "sources.flash_attn.ref", "40-hex"),
        (lambda t: t.replace('version = "2.10.0+cu129"\n', ''), "torch.version", "Field required"),
        # A public version alone could resolve to a CPU build: the local version (+cuNNN) is required unless
        # the index's wheel is the CUDA build (torch.cuda_build_on_index).
        (lambda t: t.replace('version = "2.10.0+cu129"', 'version = "2.10.0"'), "(top level)",
         "torch.version: '2.10.0' has no +cuNNN local version"),
        (lambda t: t.replace('version = "2.10.0+cu129"', 'version = "2.10.0-cuda"'), "torch.version",
         "should match"),
        (lambda t: t.replace('torchaudio = "2.10.0+cu129"', 'torchaudio = "2.10.0+cu130"'), "(top level)",
         "does not match cuda.version 12.9"),
        (lambda t: t.replace('cmake_build_type = "Release"', 'cmake_build_type = "Fast"'), "build.cmake_build_type",
         "Release"),
        (lambda t: t.replace('[sources.flashmla]', '[sources.other]'), "sources.flashmla", "Field required"),
        # The old shape's top-level sources.qutlass is no key any more: cmake sources live in sources.cmake.
        (lambda t: t.replace('[sources.deepgemm]', '[sources.qutlass]\nrepo = "https://github.com/IST-DASLab/'
                             'qutlass.git"\nref = "v1.0.0"\n\n[sources.deepgemm]'), "sources.qutlass", "unknown key"),
        (lambda t: t.replace('env = "QUTLASS_SRC_DIR"\n', ''), "sources.cmake.qutlass.env", "Field required"),
        (lambda t: t.replace('env = "QUTLASS_SRC_DIR"', 'env = "QUTLASS_DIR"'), "sources.cmake.qutlass.env",
         "should match"),
        (lambda t: t.replace('[sources.cmake.qutlass]', '[sources.cmake.Qutlass]'), "sources.cmake.Qutlass.[key]",
         "should match"),
        (lambda t: t.replace('env = "QUTLASS_SRC_DIR"', 'env = "QUTLASS_SRC_DIR"\nflavour = "x"'),
         "sources.cmake.qutlass.flavour", "unknown key"),
        (lambda t: t.replace('index_url = "https://pypi.org/simple"',
                             'index_url = "https://pypi.org/simple"\noverrides = ["flashinfer-python==0.7.4"]'),
         "(top level)", "python.overrides: flashinfer-python==0.7.4 needs its reason in [provenance]"),
        (lambda t: t.replace('index_url = "https://pypi.org/simple"',
                             'index_url = "https://pypi.org/simple"\noverrides = ["flashinfer-python>=0.7.4"]'),
         "python.overrides.0", "should match"),
        (lambda t: t.replace('jit_cache_index_url = "https://flashinfer.ai/whl/cu129"', 'jit_cache_index_url = "x"'),
         "flashinfer.jit_cache_index_url", "should match"),
        (lambda t: t.replace('digest = ""', 'digest = "sha256:abc"', 1), "base.build.digest", "sha256"),
        (lambda t: t.replace('platform = "linux/arm64"', 'platform = "linux/s390x"'), "release.platform", "linux/arm64"),
        (lambda t: t.replace('subdir = "python/triton_kernels"', 'subdir = "../etc"'), "sources.triton_kernels.subdir",
         "relative path"),
        (lambda t: t.replace('triton_kernels = "site-packages"', 'triton_kernels = "maybe"'), "release.triton_kernels",
         "site-packages"),
    ],
)
def test_bad_manifest_is_one_line_naming_file_and_field(tmp_path, mutate, field, words):
    bad = mutate(GOOD)
    assert bad != GOOD, "the mutation did not apply: fix the test"
    path = write(tmp_path, bad)
    with pytest.raises(ManifestError) as exc:
        load_release(str(path))
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {field}:"), msg
    assert words in msg
    assert ManifestError.exit_code == 2


def test_cmake_sources_are_the_releases_own_set_and_deepgemm_is_optional(tmp_path):
    text = GOOD.replace('[sources.cmake.qutlass]', '[sources.cmake.deepselect]').replace(
        'ref = "830d2c4537c7396e14a02a46fbddd18b5d107c65"\nenv = "QUTLASS_SRC_DIR"',
        'ref = "' + "d" * 40 + '"\nenv = "DEEPSELECT_SRC_DIR"')
    text = text.replace('[sources.deepgemm]\nrepo = "https://github.com/deepseek-ai/DeepGEMM.git"\n'
                        'ref = "477618cd51baffca09c4b0b87e97c03fe827ef03"\n', '')
    m = load_release(str(write(tmp_path, text)))
    assert m.sources.deepgemm is None
    assert list(m.sources.pinned()) == ["vllm", "triton", "triton_kernels", "flash_attn", "flashmla",
                                        "cmake.cutlass", "cmake.deepselect", "cmake.triton_kernels"]
    assert m.sources.cmake["deepselect"].env == "DEEPSELECT_SRC_DIR"


def test_torch_public_version_only_where_the_index_has_the_cuda_build(tmp_path):
    text = GOOD.replace('+cu129"', '"').replace('cuda_build_on_index = false\n', '').replace(
        'index_url = "https://download.pytorch.org/whl/cu129"',
        'index_url = "https://pypi.org/simple"\ncuda_build_on_index = true')
    m = load_release(str(write(tmp_path, text)))
    assert (m.torch.version, m.torch.public_version, m.torch.cuda_build_on_index) == ("2.10.0", "2.10.0", True)


def test_overrides_with_their_reason_and_no_jit_cache(tmp_path):
    text = GOOD.replace('index_url = "https://pypi.org/simple"',
                        'index_url = "https://pypi.org/simple"\noverrides = ["flashinfer-python==0.7.4"]').replace(
        'jit_cache_index_url = "https://flashinfer.ai/whl/cu129"\n', '')
    text += '"python.overrides.flashinfer-python" = "override: 0.7.3 is not on the index"\n'
    m = load_release(str(write(tmp_path, text)))
    assert m.python.overrides == ["flashinfer-python==0.7.4"] and m.flashinfer.jit_cache_index_url == ""


def test_extends_merges_the_parent_and_refuses_a_missing_one_or_a_chain(tmp_path):
    write(tmp_path, GOOD)
    fallback = (releases_dir() / "v0.19.0.toml").read_text()
    child = write(tmp_path, fallback + '\n[build]\nmax_jobs = 8\n', name="v0.19.0")
    m = load_release(str(child))
    assert m.release.name == "v0.19.0" and m.release.triton_kernels == "vendored"
    assert m.build.max_jobs == 8 and m.build.nvcc_threads == 2  # table by table: the parent's other keys stay
    assert m.sources.cmake["triton_kernels"].env == "TRITON_KERNELS_SRC_DIR"
    missing = write(tmp_path, fallback.replace('extends = "v0.19.0-tfa"', 'extends = "v0.18.0-tfa"'), name="v0.19.0")
    with pytest.raises(ManifestError) as exc:
        load_release(str(missing))
    assert "\n" not in str(exc.value) and "v0.18.0-tfa.toml: no such file" in str(exc.value)
    write(tmp_path, fallback.replace('name = "v0.19.0"', 'name = "v0.19.1"'), name="v0.19.1")
    chain = write(tmp_path, fallback.replace('extends = "v0.19.0-tfa"', 'extends = "v0.19.1"'), name="v0.19.0")
    with pytest.raises(ManifestError, match="extends 'v0.19.0-tfa' itself"):
        load_release(str(chain))
    itself = write(tmp_path, fallback.replace('extends = "v0.19.0-tfa"', 'extends = "v0.19.0"'), name="v0.19.0")
    with pytest.raises(ManifestError, match="must name another release"):
        load_release(str(itself))


def test_not_toml(tmp_path):
    path = write(tmp_path, "schema_version = 1\n[release\n")
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_release(str(path))


def test_name_must_match_file(tmp_path):
    path = write(tmp_path, GOOD, name="v9")
    with pytest.raises(ManifestError, match="must match the file name"):
        load_release(str(path))


def test_commit_ref_needs_a_vllm_version(tmp_path):
    path = write(tmp_path, GOOD.replace('ref = "v0.19.0"', 'ref = "' + "a" * 40 + '"'))
    with pytest.raises(ManifestError, match="sources.vllm.version is required"):
        load_release(str(path))


def test_unknown_release_lists_the_known_ones():
    with pytest.raises(ManifestError) as exc:
        load_release("v9.9.9")
    assert "unknown release 'v9.9.9'" in str(exc.value) and "v0.19.0-tfa" in str(exc.value)


def test_cli_unknown_release_exit_2_one_line():
    r = subprocess.run([sys.executable, "-m", "gracectl", "plan", "nope"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: unknown release 'nope'")
    assert r.stdout == ""


def test_cli_broken_manifest_exit_2_one_line(tmp_path):
    path = write(tmp_path, GOOD.replace('ref = "v3.6.0"\nbuild', 'ref = "v3.6"\nbuild = "nightly"\nx'))
    r = subprocess.run([sys.executable, "-m", "gracectl", "plan", str(path)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: {path}: sources.triton.")
