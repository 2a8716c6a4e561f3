"""What vLLM's own final image installs ([runtime_extras]): read from a release's docker/Dockerfile (a synthetic one
in the shapes upstream uses, and the real 0.19.0 / 0.25.0 sdists where the test bed's upstream cache has them),
held against the manifests, printed by the plan, recorded in the image and checked by the imports smoke level,
and TABLES.md's parity table generated from the manifests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gracectl.releases.manifest import load_release, release_names
from gracectl.releases.mirrors import Mirror
from gracectl.image.plan import make_plan
from gracectl.releases.derive import NOT_REVIEWED, runtime_extras
from gracectl.releases.train import compare
from gracectl.testbed.state import state_dir
from gracectl.releases.final_stage import final_stage_installs
from test_release_train import derived_from  # what upstream would derive, from a shipped manifest

REPO = Path(__file__).resolve().parents[2]
SDISTS = state_dir() / "upstream" / "sdist"

DOCKERFILE = r"""
ARG CUDA_VERSION=12.9.1
ARG PYTHON_VERSION=3.12
FROM nvidia/cuda:${CUDA_VERSION}-devel AS build
RUN apt-get install -y not-in-the-final-image
ARG DEEPEP_COMMIT_HASH=73b6ea4
ARG NVSHMEM_VER
RUN export TORCH_CUDA_ARCH_LIST='9.0a 10.0a' && \
    /tmp/install_python_libraries.sh \
        --workspace /tmp/ep_kernels_workspace --mode wheel
FROM nvidia/cuda:${CUDA_VERSION}-base AS vllm-base
ARG CUDA_VERSION
ARG PYTHON_VERSION
RUN apt-get update -y \
    && apt-get install -y --no-install-recommends \
        curl \
        sudo \
    && apt-get install -y --no-install-recommends python${PYTHON_VERSION}-dev
RUN CUDA_VERSION_DASH=$(echo $CUDA_VERSION | cut -d. -f1,2 | tr '.' '-') && \
    apt-get install -y --no-install-recommends \
        cuda-nvcc-${CUDA_VERSION_DASH} \
        # a comment inside the continuation, as upstream writes them
        libnccl-dev=${NCCL_VER}
ARG GDRCOPY_CUDA_VERSION=12.8
ARG GDRCOPY_OS_VERSION=Ubuntu22_04
ARG TARGETPLATFORM
RUN /tmp/install_gdrcopy.sh "${GDRCOPY_OS_VERSION}" "${GDRCOPY_CUDA_VERSION}" aarch64
ARG BITSANDBYTES_VERSION_X86=0.46.1
ARG BITSANDBYTES_VERSION_ARM64=0.42.0
ARG TIMM_VERSION=">=1.0.17"
RUN if [ "$TARGETPLATFORM" = "linux/arm64" ]; then \
        BITSANDBYTES_VERSION="${BITSANDBYTES_VERSION_ARM64}"; \
    else \
        BITSANDBYTES_VERSION="${BITSANDBYTES_VERSION_X86}"; \
    fi; \
    uv pip install --system accelerate 'modelscope<1.38' \
        "bitsandbytes>=${BITSANDBYTES_VERSION}" "timm${TIMM_VERSION}"
ARG PYTORCH_NIGHTLY
RUN if [ "${PYTORCH_NIGHTLY}" = "1" ]; then \
        uv pip install --system $(cat torch_lib_versions.txt | xargs) --pre nightly-only; \
    else \
        uv pip install --system dist/*.whl --extra-index-url ${BASE}/cu$(echo $CUDA_VERSION | cut -d. -f1,2 | tr -d '.'); \
    fi
RUN uv pip install --system ep_kernels/dist/*.whl
FROM vllm-base AS vllm-openai-base
ARG INSTALL_KV_CONNECTORS=false
RUN if [ "$INSTALL_KV_CONNECTORS" = "true" ]; then uv pip install --system kv-only; fi
FROM vllm-openai-base AS vllm-openai
ENTRYPOINT ["vllm", "serve"]
"""
EP_SCRIPT = """#!/usr/bin/env bash
NVSHMEM_VER=${NVSHMEM_VER:-"3.3.24"}  # Default supports both CUDA 12 and 13
do_build \\
    "https://github.com/deepseek-ai/DeepEP" \\
    "DeepEP"
"""
GDR_SCRIPT = 'GDRCOPY_PKG_VER="${GDRCOPY_VERSION:-2.5.1-1}"\n'


@pytest.fixture
def sdist(tmp_path) -> Path:
    for rel, text in (("docker/Dockerfile", DOCKERFILE), ("tools/ep_kernels/install_python_libraries.sh", EP_SCRIPT),
                      ("tools/install_gdrcopy.sh", GDR_SCRIPT)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_the_final_stage_is_read_as_its_default_arm64_build_runs_it(sdist):
    items = {i.key: i for i in final_stage_installs(sdist)}
    assert list(items) == ["curl", "sudo", "python3.12-dev", "cuda-nvcc-12-9", "libnccl-dev", "gdrcopy",
                           "accelerate", "modelscope", "bitsandbytes", "timm", "vllm", "deepep"]
    assert items["bitsandbytes"].spec == "bitsandbytes>=0.42.0"  # the arm64 branch's pin
    assert items["modelscope"].spec == "modelscope<1.38" and items["timm"].spec == "timm>=1.0.17"
    assert "not-in-the-final-image" not in items and "nightly-only" not in items and "kv-only" not in items
    deepep = dict((k, v) for k, v, _ in items["deepep"].details)
    assert deepep == {"repo": "https://github.com/deepseek-ai/DeepEP.git", "ref": "73b6ea4", "nvshmem": "3.3.24",
                      "arch_list": "9.0a 10.0a"}
    assert items["curl"].origin == "docker/Dockerfile:14"
    gdr = dict((k, v) for k, v, _ in items["gdrcopy"].details)
    assert gdr["version"] == "2.5.1-1" and gdr["url"].endswith("/CUDA%2012.8/ubuntu22_04/aarch64/"
                                                                "libgdrapi_2.5.1-1_arm64.Ubuntu22_04.deb")


def test_each_install_gets_a_decision_and_an_unknown_build_is_not_reviewed(sdist):
    items = final_stage_installs(sdist)
    extras, prov = runtime_extras(items, "3.12", ["cuda-nvcc-12-9", "libnccl-dev"])
    assert extras["curl"]["install"] == "curl" and extras["timm"]["install"] == "timm>=1.0.17"
    assert extras["sudo"]["excluded"] and extras["cuda-nvcc-12-9"]["covered"] == "cuda.runtime_packages"
    assert extras["python3.12-dev"]["covered"].startswith("python.version")
    assert extras["deepep"]["install"] == "deep_ep" and prov["runtime_extras.deepep.ref"] == "docker/Dockerfile:6"
    items[0] = items[0].__class__("newthing", "build", "x/dist/*.whl", "docker/Dockerfile:99")
    extras, _ = runtime_extras(items, "3.12", [])
    assert extras["newthing"]["excluded"].startswith(NOT_REVIEWED)


def test_an_upstream_install_the_manifest_lacks_fails_the_check_naming_it():
    d = derived_from("v0.19.0-tfa")
    d.data["runtime_extras"]["gguf"] = {"kind": "pip", "upstream": "gguf>=0.19.0", "install": "gguf>=0.19.0"}
    d.provenance["runtime_extras.gguf.upstream"] = "docker/Dockerfile:851"
    bad = [line for line in compare(load_release("v0.19.0-tfa"), d) if line.status in ("DRIFT", "FAIL")]
    assert [line.path for line in bad] == ["runtime_extras.gguf"]
    assert "gguf>=0.19.0 (pip, docker/Dockerfile:851); the manifest neither installs nor excludes it" in bad[0].text
    # A changed pin of what upstream installs is drift too; a decision (install/exclude) is the site's.
    d = derived_from("v0.19.0-tfa")
    d.data["runtime_extras"]["timm"]["upstream"] = "timm>=1.1"
    d.data["runtime_extras"]["curl"]["install"] = ""
    bad = [line for line in compare(load_release("v0.19.0-tfa"), d) if line.status == "DRIFT"]
    assert [line.path for line in bad] == ["runtime_extras.timm.upstream"]


def test_a_not_reviewed_exclusion_in_a_manifest_fails_the_check(tmp_path):
    text = (REPO / "releases" / "v0.19.0-tfa.toml").read_text().replace(
        'upstream = "curl"\ninstall = "curl"', f'upstream = "curl"\nexcluded = "{NOT_REVIEWED}: x"')
    (tmp_path / "v0.19.0-tfa.toml").write_text(text)
    from gracectl.releases.manifest import load_manifest

    m = load_manifest(tmp_path / "v0.19.0-tfa.toml")
    fails = [line for line in compare(m, derived_from("v0.19.0-tfa")) if line.status == "FAIL"]
    assert [line.path for line in fails] == ["runtime_extras.curl"]


@pytest.mark.parametrize("version", ["0.19.0", "0.25.0"])
def test_every_install_of_upstreams_final_image_is_in_the_manifest_or_excluded_with_a_reason(version):
    """The release's own docker/Dockerfile (the real sdist, from the test bed's upstream cache): every install of
    its final image is installed by this image, covered by another part of it, or excluded with a reason."""
    pkg = SDISTS / f"vllm-{version}"
    if not (pkg / "tools" / "install_gdrcopy.sh").is_file():
        pytest.skip(f"no vLLM {version} sdist with its tools/ at {pkg} (`gracectl release check` fetches it)")
    m = load_release(f"v{version}-tfa")
    installs = final_stage_installs(pkg)
    assert len(installs) >= 25
    for item in installs:
        key = item.key.replace("requirements/", "requirements-").removesuffix(".txt")
        extra = m.runtime_extras.get(key)
        assert extra, f"upstream's final image installs {item.spec} ({item.origin}); v{version}-tfa has no entry"
        assert extra.status in ("installed", "covered", "excluded")
        if extra.excluded:
            assert len(extra.excluded) > 40 and not extra.excluded.startswith(NOT_REVIEWED), key
        if extra.covered == "cuda.runtime_packages":
            assert key in m.cuda.runtime_packages
    assert {"bitsandbytes", "timm", "accelerate", "modelscope", "runai-model-streamer", "curl", "deepep",
            "gdrcopy"} <= {k for k, e in m.runtime_extras.items() if e.install}
    assert {k for k, e in m.runtime_extras.items()} == {
        i.key.replace("requirements/", "requirements-").removesuffix(".txt") for i in installs}


def test_the_plan_installs_what_the_manifest_installs_and_names_each_stand_in():
    m = load_release("v0.19.0-tfa")
    p = make_plan(m, commit="0" * 40)
    assert p.build_args["RUNTIME_APT_PACKAGES"] == "curl"
    assert "runai-model-streamer[s3,gcs,azure]>=0.15.7" in p.build_args["RUNTIME_PIP"].split()
    assert "nvidia-nvshmem-cu12>=3.3.24" in p.build_args["RUNTIME_PIP"].split()
    assert p.build_args["DEEPEP_REF"] == "73b6ea4" and p.build_args["NVSHMEM_PACKAGE"] == "nvidia-nvshmem-cu12==3.3.24"
    assert p.build_args["BUILD_TORCH"] == "1"
    assert p.labels["io.gracectl.runtime-extras"] == p.build_args["RUNTIME_EXTRAS"]
    assert "build:deepep" in p.build_args["RUNTIME_EXTRAS"] and "download:gdrcopy" in p.build_args["RUNTIME_EXTRAS"]
    assert any(line.startswith("sudo (apt): sudo -> EXCLUDED: ") for line in p.runtime_extras)
    standin = Mirror(repos={"https://github.com/deepseek-ai/DeepEP.git": ""}, python_packages={"timm": ""},
                     packages={"curl": ""}, downloads={m.runtime_extras["gdrcopy"].url: ""}, standin_reason="R")
    p = make_plan(m, mirror=standin, commit="0" * 40)
    assert p.build_args["DEEPEP_REF"] == "" and p.build_args["GDRCOPY_URL"] == ""
    assert "timm" not in p.build_args["RUNTIME_PIP"] and "nvidia-nvshmem" not in p.build_args["RUNTIME_PIP"]
    assert p.build_args["RUNTIME_APT_PACKAGES"] == ""
    assert "build-deepep" in p.to_dict()["not_built"]
    recorded = p.build_args["RUNTIME_EXTRAS"].split()
    assert "pip:timm" not in recorded and "build:deepep" not in recorded and "pip:accelerate" in recorded
    assert {s.split(":")[0] for s in p.standins if s.startswith("runtime_extras.")} == {
        "runtime_extras.curl", "runtime_extras.deepep", "runtime_extras.gdrcopy", "runtime_extras.timm"}


# ---- the imports smoke level: a recorded extra that is not in the image fails, naming it ----------------------------


def run_smoke_extras(tmp_path: Path, recorded: str, **env: str) -> subprocess.CompletedProcess[str]:
    expect = tmp_path / "expect.json"
    expect.write_text(json.dumps({"runtime_extras": recorded}))
    env = {**os.environ, "GRACECTL_EXPECT_JSON": str(expect), "PYTHONDONTWRITEBYTECODE": "1", **env}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
                           "smoke_tests/test_imports.py::test_runtime_extras_the_image_installed_are_usable"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def test_the_imports_level_fails_naming_a_recorded_extra_that_is_not_installed(tmp_path):
    # This venv has pluggy (a pip package), not that one: an image that recorded timm but lacks it fails by name.
    done = run_smoke_extras(tmp_path, "pip:pluggy pip:gracectl-no-such-package")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "gracectl-no-such-package is not installed (pip)" in done.stdout
    assert "not usable: gracectl-no-such-package is not installed (pip)\n" in done.stdout  # and nothing on pluggy
    done = run_smoke_extras(tmp_path, "pip:pluggy")
    assert done.returncode == 0, done.stdout + done.stderr


# STAND-INS for an image's dpkg and numactl (this machine has no numactl): numactl as numactl.c behaves where the
# kernel exposes no NUMA to the container (docker's default seccomp refuses get_mempolicy, qemu): --show and
# --hardware print "No NUMA support available on this system." and exit 1; a program run under no policy is only
# exec'd (as Debian's numactl 2.0.16 does, run once with a seccomp filter answering get_mempolicy with ENOSYS).
# dpkg answers for the packages in DPKG_INSTALLED.
NUMA_LESS_NUMACTL = """#!/bin/sh
case "$1" in
  -s|--show|-H|--hardware) echo "No NUMA support available on this system."; exit 1 ;;
  -*|"") echo "usage: numactl [--interleave= | -i <nodes>] ..." >&2; exit 1 ;;
esac
PATH=/usr/bin:/bin exec "$@"
"""
NO_LIBNUMA = """#!/bin/sh
echo "numactl: error while loading shared libraries: libnuma.so.1: cannot open shared object file" >&2
exit 127
"""
STANDIN_DPKG = """#!/bin/sh
# dpkg -s PACKAGE
case " $DPKG_INSTALLED " in *" $2 "*) echo "Status: install ok installed"; exit 0 ;; esac
echo "dpkg-query: package '$2' is not installed" >&2
exit 1
"""


def standin_bin(tmp_path: Path, programs: dict[str, str]) -> str:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, text in programs.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return str(folder)


def test_the_numactl_check_proves_the_images_numactl_on_a_host_without_numa(tmp_path):
    # README's `main-job.sh --stack real --release v0.25.0-tfa` failed here: the check ran `numactl --show`, which
    # tests the host's NUMA, not the image's numactl.
    path = standin_bin(tmp_path, {"dpkg": STANDIN_DPKG, "numactl": NUMA_LESS_NUMACTL})
    done = run_smoke_extras(tmp_path, "apt:numactl", PATH=path, DPKG_INSTALLED="numactl")
    assert done.returncode == 0, done.stdout + done.stderr
    # Still a check of the image: numactl removed (package, or only its program), or its libnuma gone, fails.
    done = run_smoke_extras(tmp_path, "apt:numactl", PATH=path, DPKG_INSTALLED="")
    assert done.returncode == 1 and "numactl is not installed (apt)" in done.stdout, done.stdout
    (tmp_path / "bin" / "numactl").unlink()
    done = run_smoke_extras(tmp_path, "apt:numactl", PATH=path, DPKG_INSTALLED="numactl")
    assert done.returncode == 1 and "numactl: numactl is not on PATH" in done.stdout, done.stdout
    (tmp_path / "bin" / "numactl").write_text(NO_LIBNUMA)
    (tmp_path / "bin" / "numactl").chmod(0o755)
    done = run_smoke_extras(tmp_path, "apt:numactl", PATH=path, DPKG_INSTALLED="numactl")
    assert done.returncode == 1 and "`numactl true` failed: numactl: error while loading shared libraries: " \
        "libnuma.so.1" in done.stdout, done.stdout


# ---- TABLES.md's parity table is the manifests' ----------------------------------------------------------------------


def parity_table() -> str:
    """The table TABLES.md carries: one row per upstream final-stage install of the shipped tfa manifests."""
    names = [n for n in release_names() if n.endswith("-tfa")]
    manifests = {n: load_release(n) for n in names}
    versions = [m.sources.vllm.ref for m in manifests.values()]
    rows = [f"| upstream's final image installs | kind | {' | '.join(versions)} |",
            "| --- | --- |" + " --- |" * len(versions)]
    keys = sorted({k for m in manifests.values() for k in m.runtime_extras})
    for key in keys:
        cells, upstream, kind = [], "", ""
        for m in manifests.values():
            e = m.runtime_extras.get(key)
            if not e:
                cells.append("(not in upstream's image)")
                continue
            upstream, kind = upstream or e.upstream, e.kind
            cells.append(f"installed: `{e.install}`" if e.install else f"covered: {e.covered}" if e.covered
                         else f"excluded: {e.excluded}")
        rows.append(f"| `{key}` ({upstream}) | {kind} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- parity table: generated by tests/unit/test_runtime_extras.py -->", "<!-- end of parity table -->"


def test_the_parity_table_is_generated_from_the_manifests():
    text = (REPO / "TABLES.md").read_text()
    assert BEGIN in text and END in text, "TABLES.md has no parity table markers"
    head, rest = text.split(BEGIN, 1)
    have, tail = rest.split(END, 1)
    want = parity_table()
    if os.environ.get("GRACECTL_WRITE_PARITY") == "1":
        (REPO / "TABLES.md").write_text(head + BEGIN + "\n" + want + END + tail)
        return
    have = have.strip() + "\n"
    assert have == want, ("TABLES.md's parity table differs from releases/ (regenerate: GRACECTL_WRITE_PARITY=1 "
                          "pytest tests/unit/test_runtime_extras.py -k parity)")


def test_an_entry_takes_exactly_one_decision(tmp_path):
    from gracectl.errors import ManifestError
    from gracectl.releases.manifest import load_manifest

    text = (REPO / "releases" / "v0.19.0-tfa.toml").read_text()
    for bad, why in (('upstream = "curl"\ninstall = "curl"\nexcluded = "no"', "has install, excluded"),
                     ('upstream = "curl"', "has none")):
        (tmp_path / "v0.19.0-tfa.toml").write_text(text.replace('upstream = "curl"\ninstall = "curl"', bad))
        with pytest.raises(ManifestError, match=rf"runtime_extras\.curl: .*exactly one of install, covered, excluded "
                                                rf"\({why}\)"):
            load_manifest(tmp_path / "v0.19.0-tfa.toml")
