"""Mirror configuration: maps each upstream input of a build to where a site actually fetches it.

The same mechanism serves an air-gapped production site (nvcr.io -> registry.internal, github.com ->
git.internal) and the local test bed (everything on 127.0.0.1). A mirror file is TOML:

    build_network = "host"                       # docker build --network (the test bed's services are on 127.0.0.1)
    python_version = "3.11"                      # only where the mirrored base images carry another Python

    [images]                                     # upstream image:tag -> mirror image:tag
    "nvcr.io/nvidia/cuda:12.9.1-devel-ubuntu24.04" = "127.0.0.1:5000/testbed/build-base:bookworm"

    [repos]                                      # upstream git URL -> mirror git URL
    "https://github.com/vllm-project/vllm.git" = "git://127.0.0.1:9418/vllm.git"

    [refs]                                       # upstream ref -> mirror ref, where a mirror cannot hold
    "29210221863736a08f71a866459e368ad1ac4a95" = "<commit in the mirror>"   # the same commit

    [indexes]                                    # upstream package index -> mirror index
    "https://pypi.org/simple" = "http://127.0.0.1:5080/simple"

    [git_url_rewrite]                            # URL prefixes for every other git fetch (submodules)
    "https://github.com/" = "https://git.internal/github/"

    [downloads]                                  # other download URLs (FlashInfer's cubin repository)
    "https://edge.urm.nvidia.com/artifactory/.../" = "https://artifacts.internal/flashinfer/"

    [packages]                                   # apt package -> the mirror's name; "" = not installed
    "cuda-nvcc-12-9" = ""                        # (a STAND-IN site: `standin_reason` says why)
    standin_reason = "..."                       # (top-level key) shown by the plan for every dropped input
    apt_sources = ["deb https://apt.internal/nvidia/cuda/ubuntu2404/sbsa /"]  # (top-level) NVIDIA's CUDA
                                                 # repository as the site mirrors it, for the CUDA packages and
                                                 # NCCL's pin (not left in the image)

    sources_index = "http://127.0.0.1:5090/index" # where `release check` reads a release's sources (sdist, wheel
                                                 # metadata) when [indexes] maps the build's index to a STAND-IN
                                                 # one that has no sdists (the test bed's); default: [indexes]

    [python_packages]                            # a pip requirement of [runtime_extras], by name -> the one
    "timm" = ""                                  # to install; "" = not installed (a STAND-IN index without it)

    vllm_native = false                          # the vLLM repository above is a STAND-IN without native parts:
                                                 # check-wheel asks no recipe.wheel_contents of its wheel
    [versions]                                   # a pinned Python package version -> the one the mirror has
    "2.10.0+cu129" = "2.10.0"                    # (STAND-IN: PyPI's CPU torch for the CUDA build; the plan
                                                 #  lists each with `versions_reason`)

A download mapped to "" is not fetched at all (a STAND-IN site without it; the plan lists it).

An input with no entry is fetched from upstream unchanged. The plan shows both sides.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated

from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gracectl.errors import UsageError


def project_name(requirement: str) -> str:
    """The PEP 503 project name a pip requirement ("runai-model-streamer[s3]>=0.15") installs."""
    return canonicalize_name(re.split(r"[\[<>=!~; ]", requirement, 1)[0])


class Mirror(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    build_network: Annotated[str, Field(pattern=r"^(default|host|none)$")] = "default"
    python_version: Annotated[str, Field(pattern=r"^3\.\d+$")] | None = None
    images: dict[str, str] = {}
    repos: dict[str, str] = {}
    refs: dict[str, str] = {}
    indexes: dict[str, str] = {}
    git_url_rewrite: dict[str, str] = {}
    downloads: dict[str, str] = {}
    packages: dict[str, str] = {}
    # apt sources lines ("deb [opts] URL SUITE [COMPONENT...]") the base stage adds for its CUDA packages: a site's
    # mirror of NVIDIA's CUDA repository; `apt_sources_reason` names a STAND-IN one (the test bed's) in the plan.
    apt_sources: list[Annotated[str, Field(pattern=r"^deb [^;\n]+$")]] = []
    apt_sources_reason: str = ""
    python_packages: dict[str, str] = {}
    standin_reason: str = ""
    versions: dict[str, str] = {}
    versions_reason: str = ""
    sources_index: str = ""
    # False where the vLLM repository the mirror serves is a STAND-IN without native parts (the test bed's): then
    # check-wheel cannot ask a source build for the official wheel's extensions (recipe.wheel_contents).
    vllm_native: bool = True
    # True where [images] maps the CUDA bases to STAND-IN images (the test bed's debootstrapped ones): their digests
    # are not upstream's, so `release new` pins no base digest through this mirror.
    standin_images: bool = False

    def image(self, ref: str) -> str:
        return self.images.get(ref, ref)

    def repo(self, url: str) -> str:
        return self.repos.get(url, url)

    def ref(self, ref: str) -> str:
        return self.refs.get(ref, ref)

    def index(self, url: str) -> str:
        return self.indexes.get(url, url)

    def sources_index_for(self, url: str) -> str:
        """The index `release check` reads the release's own sources from (sdists, wheel metadata)."""
        return self.sources_index or self.index(url)

    def download(self, url: str) -> str:
        return self.downloads.get(url, url)

    def version(self, version: str) -> str:
        return self.versions.get(version, version)

    def package(self, name: str) -> str:
        """The apt package to install for `name`; "" where the mirror has no such package (a stand-in site)."""
        return self.packages.get(name, name)

    def python_package(self, requirement: str) -> str:
        """The pip requirement to install for `requirement` (by its project name); "" where the mirror's index has
        no such project (a stand-in site)."""
        return self.python_packages.get(project_name(requirement), requirement)

    def git_rewrite_arg(self) -> str:
        """The GIT_URL_REWRITE build argument: "FROM=TO FROM=TO"."""
        for prefix, target in self.git_url_rewrite.items():
            if " " in prefix + target or "=" in prefix + target:
                raise UsageError(f"git_url_rewrite: {prefix!r} -> {target!r} may contain no spaces or '='")
        return " ".join(f"{k}={v}" for k, v in self.git_url_rewrite.items())


NO_MIRROR = Mirror()


def load_mirror(path: str | Path | None) -> Mirror:
    if path is None:
        return NO_MIRROR
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
        return Mirror.model_validate(data)
    except FileNotFoundError:
        raise UsageError(f"mirror file {path} does not exist (the test bed writes one: `gracectl testbed up`)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise UsageError(f"{path}: {field}: {err['msg']}") from None
