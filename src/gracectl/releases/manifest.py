"""Release manifests: `releases/<name>.toml`, the single source of truth for every input of a build.

A manifest is validated against the schema below; any problem (unknown key, missing pin, malformed ref,
unknown release) becomes a one-line ManifestError naming the file and the field (exit code 2).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gracectl.checkout import RELEASES
from gracectl.errors import ManifestError
from gracectl.image_ref import DIGEST_RE
from gracectl.image_ref import TAG_PATTERN
from gracectl.image_ref import TAG_RE as TAG_NAME_RE  # image tags and release names share the tag rule

# A git ref we accept as a pin: a release tag (v1.2.3, v0.19.0rc1) or a full 40-hex commit.
# Branch names are refused on purpose: they move, so a build would not be reproducible.
TAG_RE = re.compile(r"^v\d+(\.\d+){1,3}([a-z0-9.+-]*)$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
IMAGE_NAME_RE = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*$")
RELEASE_NAME_RE = TAG_NAME_RE


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseImage(_Strict):
    """An image reference split so that the tag and digest pins are visible and checkable."""

    image: Annotated[str, Field(min_length=1)]
    tag: Annotated[str, Field(pattern=TAG_PATTERN)]
    digest: str = ""  # sha256:... once resolved; empty means "pin by tag only" and `plan` says so

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        if v and not DIGEST_RE.match(v):
            raise ValueError(f"digest must look like sha256:<64 hex>, got {v!r}")
        return v

    @property
    def ref(self) -> str:
        return f"{self.image}:{self.tag}@{self.digest}" if self.digest else f"{self.image}:{self.tag}"


class Source(_Strict):
    """A git source pinned by tag or commit; `commit` is the slot for the resolved commit of a tag."""

    repo: Annotated[str, Field(min_length=1)]
    ref: str
    commit: str = ""
    subdir: str = ""

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not re.match(r"^(https|http|git|file)://[^\s]+$", v):
            raise ValueError(f"repo must be an https://, http://, git:// or file:// URL, got {v!r}")
        return v

    @field_validator("ref")
    @classmethod
    def _ref(cls, v: str) -> str:
        if not (TAG_RE.match(v) or COMMIT_RE.match(v)):
            raise ValueError(f"ref must be a release tag (v1.2.3) or a full 40-hex commit, got {v!r}")
        return v

    @field_validator("commit")
    @classmethod
    def _commit(cls, v: str) -> str:
        if v and not COMMIT_RE.match(v):
            raise ValueError(f"commit must be a full 40-hex commit, got {v!r}")
        return v

    @field_validator("subdir")
    @classmethod
    def _subdir(cls, v: str) -> str:
        if v.startswith("/") or ".." in Path(v).parts:
            raise ValueError(f"subdir must be a relative path inside the repository, got {v!r}")
        return v

    @property
    def pin(self) -> str:
        """The most exact pin we have: the commit when resolved, else the ref."""
        return self.commit or self.ref


class TritonSource(Source):
    # "wheel": the release's official wheel (triton==<ref without v>) from the package index, minutes;
    # "source": compile the repository at ref (needs LLVM, 30+ minutes), for a patched Triton.
    build: Literal["wheel", "source"] = "wheel"


VLLM_BUILDS = ("source", "wheel")


class VllmSource(Source):
    # The package version to stamp; derived from a tag ref when empty (v0.19.0 -> 0.19.0).
    version: str = ""
    # "source": build the wheel at ref with flash-attn, FlashMLA, CUTLASS, qutlass (25-40 min on a GH200);
    # "wheel": install the official vllm==<version> wheel from the package index (its own vendored kernels).
    build: Literal["source", "wheel"] = "source"


ENV_NAME_RE = r"^[A-Z][A-Z0-9_]*_SRC_DIR$"


class CmakeSource(Source):
    """A source vLLM's cmake fetches itself (FetchContent), given to it instead through its `*_SRC_DIR`
    environment override, so the build fetches nothing. Which ones exist is the release's own set (derived from
    its CMakeLists.txt and cmake/external_projects/*.cmake by `gracectl release new`)."""

    env: Annotated[str, Field(pattern=ENV_NAME_RE)]


class Sources(_Strict):
    vllm: VllmSource
    triton: TritonSource
    # What the tfa image installs at the top level of site-packages (release.triton_kernels): by default the
    # triton_kernels of the Triton the image runs. vLLM's own vendored copy is cmake.triton_kernels.
    triton_kernels: Source
    # FetchContent sources with a stage of their own (vLLM's flash-attention fork and FlashMLA).
    flash_attn: Source
    flashmla: Source
    # DeepGEMM as a wheel of its own, for releases whose docker/Dockerfile builds it so (0.19.0: DEEPGEMM_GIT_REF);
    # later releases fetch it in their cmake (cmake.deepgemm) and ship it inside the vLLM wheel.
    deepgemm: Source | None = None
    # Every other FetchContent source of the release's cmake, by its FetchContent name (cutlass, qutlass, ...).
    cmake: dict[Annotated[str, Field(pattern=r"^[a-z0-9_]+$")], CmakeSource] = {}

    def pinned(self) -> dict[str, Source]:
        """Every source by its manifest key (labels, pins, the plan's 'pinned by tag only' list)."""
        named = {name: getattr(self, name) for name in type(self).model_fields if name != "cmake"}
        return {**{k: v for k, v in named.items() if v is not None},
                **{f"cmake.{k}": v for k, v in sorted(self.cmake.items())}}


# torch, torchvision and torchaudio from the PyTorch index are pinned WITH their local version (+cu129): a CPU
# build that an index also carries under the same public version can then never be picked. From torch 2.11 on,
# PyPI's aarch64 torch IS the CUDA build (it requires nvidia-*-cu13): pinned by public version, with
# `cuda_build_on_index = true`, which `gracectl release check` verifies from the wheel's metadata.
TORCH_VERSION_RE = r"^\d+\.\d+\.\d+(\+cu\d{3})?$"


class Torch(_Strict):
    version: Annotated[str, Field(pattern=TORCH_VERSION_RE)]
    torchvision: Annotated[str, Field(pattern=TORCH_VERSION_RE)]
    torchaudio: Annotated[str, Field(pattern=TORCH_VERSION_RE)]
    index_url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    # The index's wheel for the platform is the CUDA build under its public version (no +cuNNN to pin by).
    cuda_build_on_index: bool = False

    @property
    def public_version(self) -> str:
        return self.version.split("+")[0]


class Cuda(_Strict):
    """The CUDA toolkit pieces the final image keeps for runtime JIT (Triton, FlashInfer, DeepGEMM, NCCL's
    allocator), as vLLM's own final stage installs them. Package names carry the CUDA version, so they live
    here beside it, not in the Dockerfile."""

    version: Annotated[str, Field(pattern=r"^\d+\.\d+$")]
    runtime_packages: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.+-]+$")]]


class FlashInfer(_Strict):
    # flashinfer-python / flashinfer-cubin come with vLLM's requirements; the JIT cache (precompiled modules)
    # lives on FlashInfer's own per-CUDA index, and the TRTLLM headers its MoE JIT downloads at run time on
    # FlashInfer's cubin repository: both are fetched at build time so air-gapped sites need neither.
    version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+([.a-z0-9]*)$")]
    # Empty: the release's own image installs no flashinfer-jit-cache (0.34.0 dropped it).
    jit_cache_index_url: Annotated[str, Field(pattern=r"^(https?://\S+)?$")] = ""
    cubins_url: Annotated[str, Field(pattern=r"^https?://\S+/$")]


class Python(_Strict):
    version: Annotated[str, Field(pattern=r"^3\.\d+$")]
    index_url: Annotated[str, Field(pattern=r"^https?://\S+$")] = "https://pypi.org/simple"
    # Requirement overrides (uv's --override) for a pin of the release that the index cannot serve, e.g.
    # "flashinfer-python==0.7.4" where vLLM 0.34.0 requires 0.7.3; each needs its reason in [provenance].
    overrides: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+$")]] = []
    # Indexes the release's requirements add (`--extra-index-url` in requirements/cuda.txt: FlashInfer's wheel site
    # from 0.27); a site maps each in its mirror's [indexes], and resolution goes through the mapping.
    extra_index_urls: list[Annotated[str, Field(pattern=r"^https?://\S+$")]] = []


class Bases(_Strict):
    build: BaseImage
    runtime: BaseImage


def has_blackwell(arch_list: str) -> bool:
    """Does a TORCH_CUDA_ARCH_LIST build for Blackwell (10.x, 11.x, 12.x)? Some kernels and headers serve only it."""
    return any(a.split(".")[0] in ("10", "11", "12") for a in arch_list.replace("+PTX", "").split())


class BuildSettings(_Strict):
    # vLLM's GH200 recipe: setup.py runs ninja -j(max_jobs / nvcc_threads) with nvcc_threads threads each, so
    # 66 / 2 = 33 compile jobs x 2 threads = 66 of Grace's 72 cores (CLAWMINE.md has the arithmetic).
    max_jobs: Annotated[int, Field(ge=1, le=512)] = 66
    nvcc_threads: Annotated[int, Field(ge=1, le=16)] = 2
    cuda_arch_list: Annotated[str, Field(pattern=r"^\d+\.\d+a?(\+PTX)?( \d+\.\d+a?(\+PTX)?)*$")] = "9.0a"
    # Unset, vLLM's setup.py builds RelWithDebInfo (bigger, slower to link).
    cmake_build_type: Literal["Release", "RelWithDebInfo", "Debug"] = "Release"


class RuntimeExtra(_Strict):
    """One thing vLLM's own final image installs (read from the release's docker/Dockerfile by `gracectl release
    new`), and what THIS image does about it: exactly one of `install` (from the site's mirrors: a pip
    requirement, an apt package, or the module a build stage makes), `covered` (installed by another part of
    this manifest or of vllm/Dockerfile, named) or `excluded` (why it is left out). `release check` fails when
    upstream's final stage installs something the manifest has no entry for."""

    kind: Literal["pip", "apt", "build", "download"]
    upstream: Annotated[str, Field(min_length=1)]  # as upstream's Dockerfile installs it
    install: str = ""
    covered: str = ""
    excluded: str = ""
    # Derived pins of what upstream builds or downloads (DeepEP, NVSHMEM, gdrcopy).
    repo: str = ""
    ref: Annotated[str, Field(pattern=r"^([0-9a-f]{7,40}|v\d[\w.+-]*)?$")] = ""  # upstream pins DeepEP abbreviated
    version: str = ""
    nvshmem: str = ""
    arch_list: str = ""
    url: Annotated[str, Field(pattern=r"^(https?://\S+)?$")] = ""

    @model_validator(mode="after")
    def _one_decision(self) -> RuntimeExtra:
        chosen = [k for k in ("install", "covered", "excluded") if getattr(self, k)]
        if len(chosen) != 1:
            raise ValueError(f"give exactly one of install, covered, excluded (has {', '.join(chosen) or 'none'})")
        return self

    @property
    def status(self) -> str:
        return "installed" if self.install else "covered" if self.covered else "excluded"


class Recipe(_Strict):
    """How upstream's own image build makes vLLM, as this release's docker/Dockerfile does it (releases.upstream_build
    reads it; `release check` compares): the files the wheel build installs and runs, the Rust build's toolchain
    and what it hands the wheel, the native files the official wheel holds (check-wheel asserts them in source
    mode), the forced reinstalls after the install, the NCCL pins."""

    build_requirements: list[Annotated[str, Field(pattern=r"^requirements/[A-Za-z0-9_./-]+\.txt$")]] = []
    use_existing_torch: Annotated[str, Field(pattern=r"^([A-Za-z0-9_-]+/)*use_existing_torch\.py$")] = \
        "use_existing_torch.py"
    rust_toolchain: Annotated[str, Field(pattern=r"^(\d+\.\d+(\.\d+)?|stable)?$")] = ""  # "": no Rust build
    protoc_version: Annotated[str, Field(pattern=r"^(\d+(\.\d+)*)?$")] = ""
    rust_artifacts: list[Annotated[str, Field(pattern=r"^vllm/[A-Za-z0-9_.*-]+$")]] = []
    wheel_contents: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_./*-]+$")]] = []
    reinstall: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]] = []
    nccl_apt_suffix: Annotated[str, Field(pattern=r"^(\+cuda\d+\.\d+)?$")] = ""
    nccl_version: Annotated[str, Field(pattern=r"^(\d+\.\d+\.\d+)?$")] = ""
    # Upstream's final image fetches FlashInfer's TRTLLM MoE headers at build time (0.19.0 does; 0.25.0 no longer).
    # Run here only where also the arch list has Blackwell (the headers serve its MoE kernels alone).
    flashinfer_prefetch: bool = False


class BuildStep(_Strict):
    """One step of upstream's image build (the release file it runs, an ENV of its final image, a post-install
    fix), and what THIS build does about it: exactly one of `done` (where) or `excluded` (why). A file of the
    release named in backquotes (`tools/x.sh`) must exist in that release: `release check` holds it."""

    upstream: Annotated[str, Field(min_length=1)]
    done: str = ""
    excluded: str = ""

    @model_validator(mode="after")
    def _one_decision(self) -> BuildStep:
        if bool(self.done) == bool(self.excluded):
            raise ValueError("give exactly one of done, excluded")
        return self


class Release(_Strict):
    name: Annotated[str, Field(pattern=TAG_PATTERN)]  # release names follow the tag rule
    description: str = ""
    image: Annotated[str, Field(pattern=IMAGE_NAME_RE.pattern)]
    tag: Annotated[str, Field(pattern=TAG_PATTERN)]
    # The image:tag operators roll back to when this one misbehaves (empty for the fallback itself).
    fallback: str = ""
    platform: Literal["linux/arm64", "linux/amd64"] = "linux/arm64"
    # "site-packages": the triton_kernels wheel is installed at the top level (vLLM prefers it);
    # "vendored": only vLLM's own vllm/third_party copy (the working fallback).
    triton_kernels: Literal["site-packages", "vendored"]

    @field_validator("fallback")
    @classmethod
    def _fallback(cls, v: str) -> str:
        if v and not re.match(r"^[a-z0-9._/-]+:[A-Za-z0-9_.-]+$", v):
            raise ValueError(f"fallback must be IMAGE:TAG, got {v!r}")
        return v


class Manifest(_Strict):
    schema_version: Literal[1]
    # The fallback manifest names its tfa twin here and says only what differs ([release]); loading merges them.
    extends: str = ""
    release: Release
    python: Python
    torch: Torch
    cuda: Cuda
    flashinfer: FlashInfer
    base: Bases
    build: BuildSettings = BuildSettings()
    sources: Sources
    # What vLLM's own final image installs beyond vLLM and its requirements, each installed, covered or excluded
    # (RuntimeExtra), by a stable key: the package's name, "deepep", "gdrcopy".
    runtime_extras: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._+-]*$")], RuntimeExtra] = {}
    # How upstream's build makes vLLM (Recipe), and every step of it, done here or excluded (BuildStep), by its key:
    # the release file it runs, "env:NAME", "reinstall:PACKAGE", "nccl:apt-pin", "nccl:version".
    recipe: Recipe = Recipe()
    build_steps: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.:/*-]*$")], BuildStep] = {}
    # Where each pin came from, by its dotted path: "requirements/cuda.txt:8" (a file of the release's sdist),
    # "torch 2.14.0 metadata: ..." (a package the release pins), "chosen: ..." (a site decision) or
    # "override: ..." (differs from upstream on purpose, with the reason). Written by `gracectl release new`.
    provenance: dict[str, str] = {}

    @model_validator(mode="after")
    def _cross_field(self) -> Manifest:
        if not self.sources.triton_kernels.subdir:
            raise ValueError("sources.triton_kernels.subdir is required (python/triton_kernels in Triton)")
        if not self.sources.vllm.version and not TAG_RE.match(self.sources.vllm.ref):
            raise ValueError("sources.vllm.version is required when sources.vllm.ref is a commit")
        if self.sources.vllm.build == "wheel" and not TAG_RE.match(self.sources.vllm.ref):
            raise ValueError("sources.vllm.ref must be a release tag when sources.vllm.build = 'wheel'")
        if self.sources.triton.build == "wheel" and not TAG_RE.match(self.sources.triton.ref):
            raise ValueError("sources.triton.ref must be a release tag when sources.triton.build = 'wheel'")
        cu = "cu" + self.cuda.version.replace(".", "")
        for key in ("version", "torchvision", "torchaudio"):
            version = getattr(self.torch, key)
            if "+" not in version and not self.torch.cuda_build_on_index:
                raise ValueError(f"torch.{key}: {version!r} has no +cuNNN local version, so a CPU build could be "
                                 "picked (set torch.cuda_build_on_index = true only where the index's wheel is "
                                 "the CUDA build)")
            local = version.partition("+")[2]
            if local and local != cu:
                raise ValueError(f"torch.{key}: +{local} does not match cuda.version {self.cuda.version} (+{cu})")
        for override in self.python.overrides:
            if not self.provenance.get(f"python.overrides.{override.split('==')[0]}", "").startswith("override:"):
                raise ValueError(f"python.overrides: {override} needs its reason in [provenance] as "
                                 f"\"python.overrides.{override.split('==')[0]}\" = \"override: ...\"")
        return self

    def overridden(self, dist: str) -> str:
        """The version python.overrides installs for `dist` instead of the release's pin, or ""."""
        return next((o.split("==")[1] for o in self.python.overrides if o.split("==")[0].lower() == dist), "")

    def runtime_pip_requirements(self) -> list[str]:
        """What the final install adds for [runtime_extras]: the pip installs, and for DeepEP the NVSHMEM host
        library its extension loads (nvidia-nvshmem-cuNN, at least the version it was built with; torch's own pin
        wins where torch has one, as in upstream's image)."""
        reqs = [e.install for e in self.runtime_extras.values() if e.kind == "pip" and e.install]
        deepep = self.runtime_extras.get("deepep")
        if deepep and deepep.install and deepep.nvshmem:
            reqs.append(f"nvidia-nvshmem-cu{self.cuda.version.split('.')[0]}>={deepep.nvshmem}")
        return reqs

    @property
    def with_triton_kernels(self) -> bool:
        return self.release.triton_kernels == "site-packages"

    @property
    def image_ref(self) -> str:
        return f"{self.release.image}:{self.release.tag}"


_releases_dir: Path | None = None  # GRACECTL_RELEASES_DIR, handed down once by the edge (cli.configure_process)


def use_releases_dir(path: Path | None) -> None:
    """The folder of release manifests (None: the checkout's); set by the edge only."""
    global _releases_dir
    _releases_dir = path


def releases_dir() -> Path:
    """The edge's GRACECTL_RELEASES_DIR, else `releases/` of the checkout this package runs from, else ./releases."""
    if _releases_dir:
        return _releases_dir
    if RELEASES.is_dir():
        return RELEASES
    return Path.cwd() / "releases"


def release_names(directory: Path | None = None) -> list[str]:
    directory = directory or releases_dir()
    return sorted(p.stem for p in directory.glob("*.toml"))


def pair_of(name: str, directory: Path | None = None) -> str:
    """The other release of `name`'s pair: the fallback extends its tfa; "" when it has none."""
    m = load_release(name, directory)
    if m.extends:
        return m.extends
    return next((other for other in release_names(directory)
                 if other != name and load_release(other, directory).extends == name), "")


def load_release(name_or_path: str, directory: Path | None = None) -> Manifest:
    """Load a release by name (`v0.19.0-tfa`) or by path to a TOML file."""
    directory = directory or releases_dir()
    path = Path(name_or_path)
    if path.suffix != ".toml":
        if not RELEASE_NAME_RE.match(name_or_path):  # a name, never a path out of releases/ (`../`)
            raise ManifestError(f"{name_or_path[:100]!r} is not a release name (letters, digits, _.-; at most "
                                "128; or give a path to a .toml file)")
        path = directory / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(release_names(directory)) or "none"
            raise ManifestError(f"unknown release {name_or_path!r}: no {path} (known releases: {known})")
    return load_manifest(path)


def _merge(parent: dict, child: dict) -> dict:
    """child over parent, table by table; [release] is the child's alone (it names the image)."""
    merged = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(parent.get(key), dict) and key != "release":
            merged[key] = _merge(parent[key], value)
        else:
            merged[key] = value
    return merged


def _with_parent(path: Path, data: dict) -> dict:
    parent_name = data.get("extends")
    if not parent_name:
        return data
    if not isinstance(parent_name, str) or not RELEASE_NAME_RE.match(parent_name) or parent_name == path.stem:
        raise ManifestError(f"{path}: extends: {parent_name!r} must name another release in {path.parent}")
    parent_path = path.parent / f"{parent_name}.toml"
    parent = _read_toml(parent_path)
    if parent.get("extends"):
        raise ManifestError(f"{path}: extends: {parent_name} extends {parent['extends']!r} itself (one level only)")
    return _merge(parent, data)


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None


def load_manifest(path: Path) -> Manifest:
    data = _with_parent(path, _read_toml(path))
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ManifestError(f"{path}: {field}: {msg}{more}") from None
    if manifest.release.name != path.stem:
        raise ManifestError(f"{path}: release.name: {manifest.release.name!r} must match the file name {path.stem!r}")
    return manifest
