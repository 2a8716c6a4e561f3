"""A release's pins DERIVED from its own sources on the site's package index (gracectl.releases.upstream reads the
sdist; adapters.package_index fetches it and the metadata of what it pins), never typed by hand:
`derive(index, version, choices)` -> the tfa manifest's data and where each value came from ([provenance]).
gracectl.releases.train writes and checks manifests with it.

What a site CHOOSES (image names, the CUDA base image's registry and Ubuntu, arch list, jobs) is `Choices`
(defaults: this project's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement

from gracectl.adapters.package_index import PackageIndex
from gracectl.errors import UpstreamError, UsageError
from gracectl.releases.manifest import Manifest, has_blackwell
from gracectl.releases.upstream import DEEPGEMM_REPO, FetchSource, docker_args, dockerfile_installs, extra_indexes, \
    fetch_sources, requirement_pins
from gracectl.releases.upstream_build import BuildStep, build_steps, recipe
from gracectl.releases.final_stage import FinalInstall, final_stage_installs

TRITON_REPO = "https://github.com/triton-lang/triton.git"
TRITON_KERNELS_SUBDIR = "python/triton_kernels"
PYTORCH_INDEX = "https://download.pytorch.org/whl/cu{cu}"
FLASHINFER_INDEX = "https://flashinfer.ai/whl/cu{cu}"
FLASHINFER_CUBINS = "https://edge.urm.nvidia.com/artifactory/sw-kernelinferencelibrary-public-generic-local/"
# The CUDA pieces vLLM's own final stage keeps for runtime JIT (FlashInfer, DeepGEMM, Triton) and NCCL's
# allocator (nccl.h); the names carry the CUDA version. (Issue 21 derives the rest of the final stage.)
CUDA_RUNTIME_TEMPLATE = ("cuda-nvcc-{v}", "cuda-cudart-{v}", "cuda-nvrtc-{v}", "cuda-cuobjdump-{v}",
                         "libcurand-dev-{v}", "libcublas-{v}", "libnccl-dev")
# What this image does about each thing vLLM's own final image installs (releases.final_stage.final_stage_installs):
# the rule `release new` applies (pip and apt packages: installed as upstream pins them, from the site's mirrors;
# built and downloaded things: only what a stage here builds). A key upstream adds that is a build or a download
# gets a "not reviewed" exclusion, which `release check` fails: add a stage for it or a reasoned exclusion here.
BASE_STAGE = "vllm/Dockerfile vllm-base stage"
EXTRAS_COVERED = {
    "requirements-cuda": "vLLM's requirements: resolved with the vLLM wheel in the final install (torch.*, "
                         "flashinfer.version)",
    "flashinfer-jit-cache": "flashinfer.jit_cache_index_url",
    "vllm": "sources.vllm",
    "deepgemm": "sources.deepgemm",
    "ffmpeg": BASE_STAGE + " (media inputs)", "libsm6": BASE_STAGE + " (media inputs)",
    "libxext6": BASE_STAGE + " (media inputs)", "libgl1": BASE_STAGE + " (media inputs)",
    "ca-certificates": BASE_STAGE,
    # uv extracts -libs-base over -libs-cu13 inside one transaction (NVIDIA/cutlass#3259): reinstalled after it.
    "nvidia-cutlass-dsl-libs-cu13": "recipe.reinstall (forced after the one uv transaction, as upstream)",
}
EXTRAS_EXCLUDED = {
    "software-properties-common": "upstream adds the deadsnakes PPA with it (add-apt-repository) to get its Python "
                                  "on Ubuntu 22.04; this image's Ubuntu 24.04 carries python3.12 itself",
    "sudo": "upstream's own build step uses it once (chmod of the deadsnakes key); the image runs as root and "
            "nothing at run time calls sudo",
    "libibverbs-dev": "the development files (headers, libibverbs.so link); what NCCL and NVSHMEM dlopen at run "
                      "time is the library itself, which the vllm-base stage installs "
                      "(libibverbs1 + ibverbs-providers)",
    "uv": "upstream's installer; this image installs with uv too (UV_VERSION) and removes it after the install",
}
# Built and downloaded: what this image installs for them (the stage that makes it).
EXTRAS_BUILT = {"deepep": "deep_ep", "gdrcopy": "libgdrapi"}
NOT_REVIEWED = "not reviewed"


def _python_apt(key: str, python: str) -> bool:
    return key in (f"python{python}", f"python{python}-dev", f"python{python}-venv")


def runtime_extras(installs: list[FinalInstall], python: str, cuda_packages: list[str]) -> tuple[dict, dict]:
    """The manifest's [runtime_extras] for upstream's final-stage installs, and the provenance of each."""
    extras, prov = {}, {}
    for item in installs:
        key = item.key.replace("requirements/", "requirements-").removesuffix(".txt")
        entry: dict = {"kind": item.kind, "upstream": item.spec}
        for field_, value, origin in item.details:
            if value:
                entry[field_] = value
                prov[f"runtime_extras.{key}.{field_}"] = origin
        if item.key == "deepep":
            entry["upstream"] = (f"DeepEP {entry.get('ref', '?')} wheel with NVSHMEM {entry.get('nvshmem', '?')} "
                                 f"(TORCH_CUDA_ARCH_LIST {entry.get('arch_list', '?')})")
        elif item.key == "gdrcopy":
            entry["upstream"] = f"libgdrapi {entry.get('version', '?')} .deb from NVIDIA's gdrcopy redist"
        if key in EXTRAS_COVERED:
            entry["covered"] = EXTRAS_COVERED[key]
        elif item.kind == "apt" and item.key in cuda_packages:
            entry["covered"] = "cuda.runtime_packages"
        elif item.kind == "apt" and _python_apt(item.key, python):
            entry["covered"] = f"python.version ({BASE_STAGE}: python${{PYTHON_VERSION}}, -dev, -venv)"
        elif key in EXTRAS_EXCLUDED:
            entry["excluded"] = EXTRAS_EXCLUDED[key]
        elif key in EXTRAS_BUILT:
            entry["install"] = EXTRAS_BUILT[key]
        elif item.kind in ("pip", "apt"):
            entry["install"] = item.spec
        else:
            entry["excluded"] = (f"{NOT_REVIEWED}: upstream's final image {'builds' if item.kind == 'build' else 'downloads'}"
                                 f" it ({item.origin}); no stage here makes it yet")
        extras[key] = entry
        prov[f"runtime_extras.{key}.upstream"] = item.origin
    return dict(sorted(extras.items())), prov


def cuda_runtime_packages(installs: list[FinalInstall], cuda: str) -> tuple[list[str], str]:
    """The CUDA pieces upstream's final stage installs for runtime JIT (names carrying the CUDA version, NCCL's),
    in its order, and the step's origin; the template where its Dockerfile names none."""
    dash = cuda.replace(".", "-")
    found = [i for i in installs if i.kind == "apt" and (i.key.endswith(f"-{dash}") or i.key.startswith("libnccl"))]
    if not found:
        return [p.format(v=dash) for p in CUDA_RUNTIME_TEMPLATE], ""
    return [i.key for i in found], found[0].origin


# What this build does about each step of upstream's image build (releases.upstream_build.build_steps), by key. A file
# of the release named in backquotes must exist in that release (`release check` holds it: a reason stays true). A
# key upstream adds that is not here is written "not reviewed", which `release check` fails.
SOURCE_TREE = "the build stage builds the wheel from the release's whole tree (source mode)"
RUST = ("rust-build: the release's Rust toolchain (recipe.rust_toolchain, from `rust-toolchain.toml`) and protoc "
        "(recipe.protoc_version) build what recipe.rust_artifacts names; the build stage puts them in the tree and "
        "check-wheel asserts them (source mode)")
UV_ENV = ("uv's settings for upstream's own installs; this image removes uv after its install "
          "(runtime_extras.uv)")
STEPS_DONE = {
    "requirements/common.txt": "resolved with the vLLM wheel in the final install (its requirements)",
    "requirements/cuda.txt": "resolved with the vLLM wheel in the final install (torch.*, flashinfer.version from "
                             "`requirements/cuda.txt`)",
    "use_existing_torch.py": "the build stage runs it (recipe.use_existing_torch): the build keeps base's torch",
    "tools/use_existing_torch.py": "the build stage runs it (recipe.use_existing_torch): the build keeps base's torch",
    "requirements/build.txt": "the build stage installs it (recipe.build_requirements)",
    "requirements/build/cuda.txt": "the build stage installs it (recipe.build_requirements)",
    "pyproject.toml": SOURCE_TREE, "setup.py": SOURCE_TREE, "CMakeLists.txt": SOURCE_TREE, "cmake": SOURCE_TREE,
    "csrc": SOURCE_TREE, "vllm/envs.py": SOURCE_TREE, "vllm/__init__.py": SOURCE_TREE,
    "rust": RUST, "rust-toolchain.toml": RUST, "build_rust.sh": RUST, "tools/build_rust.sh": RUST,
    "tools/build_rust.py": RUST, "requirements/build/rust.txt": RUST, "tools/install_protoc.sh": RUST,
    "tools/install_deepgemm.sh": "build-deepgemm (sources.deepgemm)",
    "tools/ep_kernels/install_python_libraries.sh": "build-deepep (runtime_extras.deepep)",
    "tools/install_gdrcopy.sh": "vllm-base stage installs libgdrapi (runtime_extras.gdrcopy)",
    "docker/entrypoints/vllm-nonroot-entrypoint.sh": "the vllm-openai-nonroot target (uid 2000, gid 0)",
    "reinstall:nvidia-cutlass-dsl-libs-cu13": "vllm-openai: forced reinstall after the one uv transaction "
                                              "(recipe.reinstall), as upstream",
    "nccl:apt-pin": "vllm-base stage: libnccl2 and libnccl-dev at the newest build for this CUDA "
                    "(recipe.nccl_apt_suffix)",
    "nccl:version": "uv override nvidia-nccl-cuNN==recipe.nccl_version in build-deepep and the final install",
    "env:DEBIAN_FRONTEND": "vllm-base stage ENV",
    "env:VLLM_ENABLE_CUDA_COMPATIBILITY": "vllm-openai ENV, 0 as upstream (CLAWMINE: driver floor)",
    "env:TORCH_CUDA_ARCH_LIST": "vllm-openai ENV = build.cuda_arch_list (the JIT builds for the arch list built)",
    "env:VLLM_USAGE_SOURCE": "vllm-openai ENV", "env:LD_LIBRARY_PATH": "vllm-openai ENV",
}
STEPS_EXCLUDED = {
    "env:UV_HTTP_TIMEOUT": UV_ENV, "env:UV_INDEX_STRATEGY": UV_ENV, "env:UV_LINK_MODE": UV_ENV,
    "env:UV_PYTHON_INSTALL_DIR": UV_ENV, "env:UV_CACHE_DIR": UV_ENV, "env:UV_COMPILE_BYTECODE": UV_ENV,
    "env:UV_OVERRIDE": "uv's override file for later installs into the image; this image keeps no uv (its NCCL "
                       "pin is applied in the build: recipe.nccl_version)",
    ".buildkite/check-wheel-size.py": "upstream's size limit for its PyPI upload (`.buildkite/check-wheel-size.py`); "
                                      "this wheel is not uploaded: check-wheel asserts its contents instead",
    "tools/setup_deepgemm_pythons.sh": "builds DeepGEMM's _C for every Python of requires-python so one cp38-abi3 "
                                       "wheel serves them all (`tools/setup_deepgemm_pythons.sh`); this image has one "
                                       "Python, the one `cmake/external_projects/deepgemm.cmake` builds for when "
                                       "DEEPGEMM_PYTHON_INTERPRETERS is unset",
    "tools/build_deepgemm_C.py": "the per-Python DeepGEMM _C helper of `tools/setup_deepgemm_pythons.sh` (above)",
    "examples": "sample scripts upstream copies to /vllm-workspace; not part of serving (the CLI and the server "
                "come from the wheel)",
    "benchmarks": "benchmark scripts upstream copies to /vllm-workspace; this project's benchmarks run from "
                  "smoke_tests/ (gracectl bench)",
    "./vllm/collect_env.py": "the wheel ships the same module (`vllm/collect_env.py`: `vllm collect-env`)",
    "env:VLLM_BUILD_COMMIT": "upstream's CI identifiers; this image says what it is in image.json and its labels",
    "env:VLLM_BUILD_PIPELINE": "upstream's CI identifiers; this image says what it is in image.json and its labels",
    "env:VLLM_BUILD_URL": "upstream's CI identifiers; this image says what it is in image.json and its labels",
    "env:VLLM_IMAGE_TAG": "upstream's CI identifiers; this image says what it is in image.json and its labels",
}
# Native files of the official wheel that a build for build.cuda_arch_list without Blackwell does not make (each
# gated on 10.x/12.x arches in the release's cmake): check-wheel does not ask for them on a Hopper-only list.
BLACKWELL_ONLY = {"vllm/_qutlass_C*.so": "cmake/external_projects/qutlass.cmake (QUTLASS_SM100/SM120_ARCHS)"}


def steps_entries(steps: list[BuildStep]) -> tuple[dict, dict]:
    """The manifest's [build_steps] for upstream's build steps, and the provenance of each."""
    entries, prov = {}, {}
    for step in steps:
        entry: dict = {"upstream": step.what}
        if step.key in STEPS_DONE:
            entry["done"] = STEPS_DONE[step.key]
        else:
            entry["excluded"] = STEPS_EXCLUDED.get(step.key) or (f"{NOT_REVIEWED}: upstream's build runs it "
                                                                 f"({step.origin}); nothing here does it yet")
        entries[step.key] = entry
        prov[f"build_steps.{step.key}.upstream"] = step.origin
    return dict(sorted(entries.items())), prov


def _native(name: str) -> str:
    """A wheel member as a pattern that any build of it matches (.abi3.so / .cpython-3NN-<arch>.so -> *.so)."""
    return re.sub(r"\.(abi3|cpython-[^/]+?)\.so$", "*.so", name)


def wheel_contents(names: list[str], arch_list: str) -> list[str]:
    """What check-wheel asks of a source build: the official wheel's native files (extensions, vllm-rs), less
    those a Hopper-only arch list does not build."""
    blackwell = has_blackwell(arch_list)
    found = {_native(n) for n in names if n.startswith("vllm/") and (n.endswith(".so") or n == "vllm/vllm-rs")}
    return sorted(p for p in found if blackwell or p not in BLACKWELL_ONLY)


# The glibc of the base image's Ubuntu: the newest manylinux wheels the image can install.
UBUNTU_GLIBC = {"20.04": "2_31", "22.04": "2_35", "24.04": "2_39"}


@dataclass(frozen=True)
class Choices:
    """What the site decides for a new release (the defaults are this project's GH200 choices)."""

    index_url: str = "https://pypi.org/simple"
    tfa_image: str = "gh200-vllm-tfa"
    fallback_image: str = "gh200-vllm"
    platform: str = "linux/arm64"
    base_image: str = "nvcr.io/nvidia/cuda"  # NVIDIA's registry (upstream's versions.json names Docker Hub's)
    ubuntu: str = "24.04"  # Python 3.12 from Ubuntu's own archive
    cuda_arch_list: str = "9.0a"
    max_jobs: int = 66
    nvcc_threads: int = 2
    # "wheel" until a release's source path is proven end to end (issue 28): `plan` warns when a site picks source.
    vllm_build: str = "wheel"
    triton_kernels_ref: str = ""  # empty: the tag of the Triton the image runs
    triton_kernels_reason: str = ""
    overrides: tuple[tuple[str, str], ...] = ()  # (name==version, reason)

    @classmethod
    def of(cls, m: Manifest) -> Choices:
        """The choices a manifest already holds (so that `check` re-derives exactly what it should contain)."""
        tk = m.provenance.get("sources.triton_kernels.ref", "")
        return cls(index_url=m.python.index_url, platform=m.release.platform, base_image=m.base.build.image,
                   ubuntu=m.base.build.tag.rpartition("ubuntu")[2] or "24.04",
                   cuda_arch_list=m.build.cuda_arch_list, max_jobs=m.build.max_jobs,
                   nvcc_threads=m.build.nvcc_threads, vllm_build=m.sources.vllm.build,
                   triton_kernels_ref=m.sources.triton_kernels.ref if tk.startswith("override:") else "",
                   triton_kernels_reason=tk.removeprefix("override:").strip(),
                   overrides=tuple((o, m.provenance.get(f"python.overrides.{o.split('==')[0]}", "")
                                    .removeprefix("override:").strip()) for o in m.python.overrides))


@dataclass
class Derived:
    version: str
    data: dict  # the tfa manifest, as TOML data
    provenance: dict[str, str]
    sdist: Path
    requirements: list[str] = field(default_factory=list)  # the full set to resolve (release check)
    vendored: FetchSource | None = None  # the triton_kernels vLLM's build vendors
    # Where a choice overrides a derived pin: upstream's value and its origin (release check shows both).
    upstream: dict[str, str] = field(default_factory=dict)
    upstream_origin: dict[str, str] = field(default_factory=dict)


def _cu(cuda: str) -> str:
    return cuda.replace(".", "")


def _torch_facts(index: PackageIndex, torch: str, cuda: str, python: str) -> tuple[bool, str, str]:
    """(is the index's aarch64 torch the CUDA build, the Triton it requires, where that was read)."""
    name, meta = index.wheel_metadata("torch", torch, "manylinux_aarch64", python)
    requires = _on_linux(meta.get_all("Requires-Dist") or [], "aarch64", python)
    # The CUDA build for THIS release's CUDA: its nvidia-* libraries carry the major (cu13 for CUDA 13.x).
    cuda_build = any(re.match(rf"nvidia-[a-z-]+-cu{cuda.split('.')[0]}$", r.name) for r in requires)
    triton = _triton_of(requires)
    where = f"{name} metadata"
    if not triton:  # a CPU build names no Triton: the CUDA build's (x86_64 on the index) does
        name, meta = index.wheel_metadata("torch", torch, "manylinux_x86_64", python)
        triton = _triton_of(_on_linux(meta.get_all("Requires-Dist") or [], "x86_64", python))
        where = f"{name} metadata (the CUDA build; the aarch64 wheel on the index is a CPU build)"
    if not triton:
        raise UpstreamError(f"torch {torch}: neither its aarch64 nor its x86_64 wheel names a triton version")
    return cuda_build, triton.lstrip("=~"), where.replace(" metadata", f" metadata (Requires-Dist: triton{triton})", 1)


def _on_linux(requires: list[str], machine: str, python: str = "3.12") -> list[Requirement]:
    """The requirements that apply on Linux `machine` (markers evaluated, extras left out)."""
    env = {"platform_machine": machine, "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix",
           "python_version": python, "python_full_version": python + ".0", "extra": ""}
    reqs = [Requirement(r) for r in requires]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def _triton_of(requires: list[Requirement]) -> str:
    """The Triton a torch pins: `triton==3.6.0`, or `triton~=3.8.0` (3.8.x from 3.8.0: its triton_kernels tag is
    the release's, v3.8.0)."""
    for r in requires:
        if r.name == "triton" and len(r.specifier) == 1 and next(iter(r.specifier)).operator in ("==", "~="):
            return str(r.specifier)
    return ""


def derive(index: PackageIndex, version: str, choices: Choices = Choices()) -> Derived:
    """The tfa manifest of vLLM `version`, every pin from its own sources, with their origins."""
    if not re.match(r"^\d+\.\d+\.\d+([a-z0-9.]*)$", version):
        raise UsageError(f"{version!r} is not a vLLM release version (e.g. 0.34.0)")
    sdist = index.sdist("vllm", version)
    reqs, args = requirement_pins(sdist), docker_args(sdist)
    prov: dict[str, str] = {}

    def pin(path: str, value, origin: str):
        prov[path] = origin
        return value

    for key in ("CUDA_VERSION", "PYTHON_VERSION"):
        if key not in args:
            raise UpstreamError(f"vllm {version}: docker/versions.json and docker/Dockerfile name no {key}")
    cuda_full = args["CUDA_VERSION"].value
    cuda = ".".join(cuda_full.split(".")[:2])
    for dist in ("torch", "torchvision", "torchaudio", "flashinfer-python"):
        if dist not in reqs:
            raise UpstreamError(f"vllm {version}: requirements/cuda.txt pins no {dist}")
    torch_v = reqs["torch"].value
    cuda_build, triton, triton_where = _torch_facts(index, torch_v, cuda, args["PYTHON_VERSION"].value)
    if cuda_build:
        torch_index, local = choices.index_url, ""
        index_origin = f"{torch_v} on the index is the CUDA build for aarch64 (its metadata requires nvidia-*)"
    else:
        torch_index, local = PYTORCH_INDEX.format(cu=_cu(cuda)), f"+cu{_cu(cuda)}"
        index_origin = (f"chosen: the index's aarch64 torch {torch_v} is a CPU build, so the PyTorch index of "
                        f"CUDA {cuda} (docker/versions.json CUDA_VERSION)")
    tk_ref = choices.triton_kernels_ref or f"v{triton}"
    tk_upstream = f"the triton_kernels of triton {triton}, which {triton_where} requires"
    tk_origin = f"override: {choices.triton_kernels_reason}" if choices.triton_kernels_ref else tk_upstream
    sources = fetch_sources(sdist)
    by_key = {s.key: s for s in sources}
    for needed in ("flash_attn", "flashmla", "cmake.triton_kernels"):
        if needed not in by_key:
            raise UpstreamError(f"vllm {version}: its cmake fetches no {needed.removeprefix('cmake.')}: not a "
                                "layout this reader knows")
    jit = dockerfile_installs(sdist, "flashinfer-jit-cache")
    o = args["CUDA_VERSION"].origin
    installs = final_stage_installs(sdist)
    cuda_packages, cuda_packages_at = cuda_runtime_packages(installs, cuda)
    extras, extras_prov = runtime_extras(installs, args["PYTHON_VERSION"].value, cuda_packages)
    prov.update(extras_prov)
    steps = build_steps(sdist)
    rec = recipe(sdist, steps)
    step_entries, steps_prov = steps_entries(steps)
    prov.update(steps_prov)
    wheel, names = index.wheel_names("vllm", version)
    recipe_data = {
        "build_requirements": pin("recipe.build_requirements", [rec.build_requirements[0]], rec.build_requirements[1]),
        "use_existing_torch": pin("recipe.use_existing_torch", *rec.use_existing_torch),
        "rust_toolchain": pin("recipe.rust_toolchain", *rec.rust_toolchain),
        "protoc_version": pin("recipe.protoc_version", *rec.protoc_version),
        "rust_artifacts": pin("recipe.rust_artifacts", list(rec.rust_artifacts[0]), rec.rust_artifacts[1]),
        "wheel_contents": pin("recipe.wheel_contents", wheel_contents(names, choices.cuda_arch_list),
                              f"{wheel} file list (native files; arch list {choices.cuda_arch_list})"),
        "reinstall": pin("recipe.reinstall", list(rec.reinstall[0]), rec.reinstall[1]),
        "nccl_apt_suffix": pin("recipe.nccl_apt_suffix", f"+cuda{cuda}" if rec.nccl_apt_pinned[0] else "",
                               rec.nccl_apt_pinned[1]),
        "nccl_version": pin("recipe.nccl_version", *rec.nccl_version),
        "flashinfer_prefetch": pin("recipe.flashinfer_prefetch", *rec.flashinfer_prefetch),
    }
    for key in [k for k, v in recipe_data.items() if v in ("", [])]:
        del recipe_data[key]
        prov.pop(f"recipe.{key}", None)
    data: dict = {
        "schema_version": 1,
        "release": {},
        "python": {"version": pin("python.version", args["PYTHON_VERSION"].value, args["PYTHON_VERSION"].origin),
                   "index_url": choices.index_url},
        "torch": {
            "version": pin("torch.version", torch_v + local, reqs["torch"].origin),
            "torchvision": pin("torch.torchvision", reqs["torchvision"].value + local, reqs["torchvision"].origin),
            "torchaudio": pin("torch.torchaudio", reqs["torchaudio"].value + local, reqs["torchaudio"].origin),
            "index_url": pin("torch.index_url", torch_index, index_origin),
        },
        "cuda": {"version": pin("cuda.version", cuda, o),
                 "runtime_packages": pin("cuda.runtime_packages", cuda_packages,
                                         f"{cuda_packages_at} (the JIT set vLLM's own final stage installs)"
                                         if cuda_packages_at else f"{o} (the JIT set vLLM's own final stage "
                                         "installs, named for this CUDA)")},
        "flashinfer": {"version": pin("flashinfer.version", reqs["flashinfer-python"].value,
                                      reqs["flashinfer-python"].origin),
                       "jit_cache_index_url": pin("flashinfer.jit_cache_index_url",
                                                  FLASHINFER_INDEX.format(cu=_cu(cuda)) if jit else "",
                                                  jit or "docker/Dockerfile installs no flashinfer-jit-cache"),
                       "cubins_url": FLASHINFER_CUBINS},
        "base": {kind: {"image": choices.base_image,
                        "tag": pin(f"base.{kind}.tag", f"{cuda_full}-{flavour}-ubuntu{choices.ubuntu}", o),
                        "digest": ""} for kind, flavour in (("build", "devel"), ("runtime", "base"))},
        "build": {"max_jobs": choices.max_jobs, "nvcc_threads": choices.nvcc_threads,
                  "cuda_arch_list": choices.cuda_arch_list, "cmake_build_type": "Release"},
        "sources": {
            "vllm": {"repo": "https://github.com/vllm-project/vllm.git",
                     "ref": pin("sources.vllm.ref", f"v{version}", f"the release: vllm-{version}.tar.gz"),
                     "build": choices.vllm_build},
            "triton": {"repo": TRITON_REPO, "ref": pin("sources.triton.ref", f"v{triton}", triton_where),
                       "build": "wheel"},
            "triton_kernels": {"repo": TRITON_REPO, "ref": pin("sources.triton_kernels.ref", tk_ref, tk_origin),
                               "subdir": TRITON_KERNELS_SUBDIR},
        },
    }
    data["torch"]["cuda_build_on_index"] = pin("torch.cuda_build_on_index", cuda_build, index_origin)
    for key, src in by_key.items():
        entry = {"repo": pin(f"sources.{key}.repo", src.repo, src.origin),
                 "ref": pin(f"sources.{key}.ref", src.ref, src.origin)}
        if key.startswith("cmake."):
            entry["env"] = pin(f"sources.{key}.env", src.env, src.origin)
            if src.subdir:
                entry["subdir"] = pin(f"sources.{key}.subdir", src.subdir, src.origin)
            data["sources"].setdefault("cmake", {})[key.removeprefix("cmake.")] = entry
        else:
            data["sources"][key] = entry
    if "cmake.deepgemm" not in by_key and "DEEPGEMM_GIT_REF" in args:  # a DeepGEMM wheel beside vLLM (0.19)
        ref = args["DEEPGEMM_GIT_REF"]
        data["sources"]["deepgemm"] = {"repo": pin("sources.deepgemm.repo", DEEPGEMM_REPO, ref.origin),
                                       "ref": pin("sources.deepgemm.ref", ref.value, ref.origin)}
    data["runtime_extras"] = extras
    indexes = extra_indexes(sdist)
    if indexes:
        data["python"]["extra_index_urls"] = pin("python.extra_index_urls", [p.value for p in indexes],
                                                 ", ".join(p.origin for p in indexes))
    data["recipe"] = recipe_data
    data["build_steps"] = step_entries
    if choices.overrides:
        data["python"]["overrides"] = [o for o, _ in choices.overrides]
        for o, reason in choices.overrides:
            prov[f"python.overrides.{o.split('==')[0]}"] = f"override: {reason}"
    requirements = [f"-r {sdist / 'requirements' / 'cuda.txt'}", f"triton=={triton}"]
    upstream, upstream_origin = {}, {}
    if choices.triton_kernels_ref:
        upstream["sources.triton_kernels.ref"] = f"v{triton}"
        upstream_origin["sources.triton_kernels.ref"] = tk_upstream
    return Derived(version, data, prov, sdist, requirements, by_key["cmake.triton_kernels"], upstream,
                   upstream_origin)


# --- comparing ------------------------------------------------------------------------------------------------
