"""The build plan: everything `gracectl build` will do for a release, computed without running anything.

manifest (+ mirror, + operator overrides) -> build arguments, stage graph, tags, OCI labels, build command.
`gracectl plan RELEASE` prints it; `gracectl build` executes exactly this plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gracectl.image import builders
from gracectl.adapters import proc
from gracectl.releases.driver_floor import min_driver
from gracectl.errors import CommandFailedError, ToolMissingError, UsageError
from gracectl.releases.manifest import (COMMIT_RE, TAG_RE, TAG_NAME_RE, VLLM_BUILDS, CmakeSource, Manifest, Source,
                               has_blackwell, load_release)
from gracectl.releases.mirrors import NO_MIRROR, Mirror, load_mirror
from gracectl.image.extras import extras_plan
from gracectl.checkout import DOCKERFILE, IMAGE_SOURCE, REPO_ROOT

# Where the Rust build gets its toolchain (rustup's dist server) and protoc (its GitHub release); a site maps both
# in its mirror's [downloads].
RUSTUP_DIST_SERVER = "https://static.rust-lang.org"
PROTOC_URL = "https://github.com/protocolbuffers/protobuf/releases/download/v{v}/protoc-{v}-linux-{arch}.zip"
PROTOC_ARCH = {"linux/arm64": "aarch_64", "linux/amd64": "x86_64"}
FINAL_STAGE = "vllm-openai"
# What a site may build (`--target`): the final image, or it run as a non-root user; -> what its tags add.
TARGETS = {FINAL_STAGE: "", "vllm-openai-nonroot": "-nonroot"}

# The Dockerfile's stage graph: stage -> the stages it is built FROM or mounts files from. Named as upstream vLLM's
# docker/Dockerfile names them (base: the devel build base, vllm-base: the runtime base, build: the vLLM wheel).
# tests/unit/test_dockerfile.py parses vllm/Dockerfile and checks it is exactly this.
STAGE_GRAPH: dict[str, tuple[str, ...]] = {
    "base": (),
    "vllm-base": (),
    "build-triton": ("base",),
    "build-triton-kernels": ("base",),
    "build-flash-attn": ("base",),
    "build-flashmla": ("base",),
    "build-cmake-sources": ("base",),
    "build-deepgemm": ("base",),
    "build-deepep": ("base",),
    "rust-build": ("base",),
    "build": ("base", "build-flash-attn", "build-flashmla", "build-cmake-sources", "rust-build"),
    "vllm-from-source": ("build",),
    "vllm-from-wheel": ("vllm-base",),
    "vllm-choice": ("vllm-from-{vllm_build}",),
    "triton-kernels-site-packages": ("build-triton-kernels",),
    "triton-kernels-vendored": ("vllm-base",),
    "triton-kernels-choice": ("triton-kernels-{mode}",),
    "vllm-openai": ("vllm-base", "build-triton", "vllm-choice", "build-deepgemm", "build-deepep",
                    "triton-kernels-choice"),
    "vllm-openai-nonroot": ("vllm-openai",),
}


@dataclass(frozen=True)
class Overrides:
    """What an operator may change for one build without editing the manifest (Jenkins parameters)."""

    vllm_ref: str = ""
    image_tag: str = ""
    build_number: int = 0
    registry: str = ""  # host[:port][/namespace] the tags are pushed to; empty = local names only
    vllm_build: str = ""  # "source" | "wheel"; empty = the manifest's sources.vllm.build
    target: str = FINAL_STAGE  # one of TARGETS
    builder: str = ""  # a buildx builder's name; empty: the node's dockerd (gracectl.image.builders)

    def __post_init__(self):
        builders.check_name(self.builder)
        if self.target not in TARGETS:
            raise UsageError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.vllm_build and self.vllm_build not in VLLM_BUILDS:
            raise UsageError(f"--vllm-build must be one of {', '.join(VLLM_BUILDS)}, got {self.vllm_build!r}")
        if self.vllm_ref and not (TAG_RE.match(self.vllm_ref) or COMMIT_RE.match(self.vllm_ref)):
            raise UsageError(f"--vllm-ref must be a release tag or a full 40-hex commit, got {self.vllm_ref!r}")
        if self.image_tag and not TAG_NAME_RE.match(self.image_tag):
            raise UsageError(f"--image-tag {self.image_tag!r} is not a valid image tag")
        if self.build_number < 0:
            raise UsageError("--build-number must be >= 0")
        if self.registry and not re.match(r"^[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*$", self.registry):
            raise UsageError(f"--registry must be HOST[:PORT][/NAMESPACE], got {self.registry!r}")


@dataclass
class Plan:
    release: str
    platform: str
    dockerfile: str
    context: str
    target: str
    build_args: dict[str, str]
    stages: dict[str, list[str]]
    final_stages: list[str]  # the stages the final image actually needs (BuildKit builds only these)
    labels: dict[str, str]
    moving_tag: str  # image:tag that promotion moves (e.g. gh200-vllm-tfa:v0.19.0-tfa)
    build_tag: str  # immutable image:<tag>-b<N>-<commit7>, never overwritten
    cache_ref: str  # registry image:tag holding the shared build cache (buildx); empty without a registry
    twin_cache_ref: str  # the cache of the release pair's other image (tfa <-> fallback), read too; "" if none
    fallback: str
    source_commit: str
    build_network: str
    unpinned: list[str] = field(default_factory=list)  # inputs pinned by tag only (no digest/commit yet)
    standins: list[str] = field(default_factory=list)  # upstream inputs the mirror drops (the test bed's)
    # Stages in the final image's build that build nothing for this release (no DeepGEMM wheel, no cmake source).
    empty_stages: list[str] = field(default_factory=list)
    # What upstream's final image installs and what this build does about each: "KEY (kind): upstream -> how".
    runtime_extras: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what a site should know before it builds (unproven paths)
    builder: str = ""  # the buildx builder that builds it; empty: the node's dockerd (gracectl.image.builders)

    def build_command(self, *, tags: list[str] | None = None, push: bool = False, by_digest: bool = False,
                      registry_cache: bool = False, metadata_file: str | None = None) -> tuple[list[str], dict[str, str]]:
        """The exact command line (and extra environment) on the plan's builder.

        `registry_cache` (needs --registry): builds on different agents share BuildKit's cache through the
        registry: a buildx builder exports every stage to `cache_ref`; plain `docker build` (no cache exporter)
        embeds an inline cache in the image and reuses the one of the image the moving tag points at.
        `push` (a buildx builder only): the builder pushes by digest itself (gracectl.image.builders.buildx_command);
        `by_digest` with it: to the build tag's repository, by digest only (no tag at all).
        """
        tags = [] if by_digest else tags if tags is not None else [self.build_tag]
        common = ["--platform", self.platform, "--target", self.target, "--file", self.dockerfile]
        if self.build_network != "default":
            common += ["--network", self.build_network]
        for key, value in self.build_args.items():
            common += ["--build-arg", f"{key}={value}"]
        for key, value in self.labels.items():
            common += ["--label", f"{key}={value}"]
        for tag in tags:
            common += ["--tag", tag]
        cache = registry_cache and bool(self.cache_ref)
        if self.builder:
            return builders.buildx_command(self.builder, common, context=self.context,
                                           cache_ref=self.cache_ref if cache else "",
                                           twin_cache_ref=self.twin_cache_ref if cache else "", push=push,
                                           by_digest_to=self.build_tag.rsplit(":", 1)[0] if by_digest else "",
                                           metadata_file=metadata_file), {}
        # Plain `docker build` with BuildKit: no --push (gracectl pushes afterwards).
        cmd = ["docker", "build", *common, "--progress", "plain"]
        if cache:
            cmd += ["--build-arg", "BUILDKIT_INLINE_CACHE=1", "--cache-from", self.moving_tag]
        cmd += [self.context]
        return cmd, {"DOCKER_BUILDKIT": "1"}

    def to_dict(self) -> dict:
        cmd, env = self.build_command()
        return {
            "release": self.release,
            "platform": self.platform,
            "dockerfile": self.dockerfile,
            "context": self.context,
            "target": self.target,
            "stages": self.stages,
            "final_stages": self.final_stages,
            "not_built": [s for s in self.stages if s not in self.final_stages or s in self.empty_stages],
            "build_args": self.build_args,
            "min_driver": self.build_args["MIN_DRIVER"],
            "labels": self.labels,
            "tags": {"moving": self.moving_tag, "build": self.build_tag, "fallback": self.fallback,
                     "cache": self.cache_ref},
            "source_commit": self.source_commit,
            "unpinned": self.unpinned,
            "standins": self.standins,
            "runtime_extras": self.runtime_extras,
            "warnings": self.warnings,
            "builder": builders.describe(self.builder),
            "build_command": [f"{k}={v}" for k, v in env.items()] + cmd,
        }


def source_commit() -> str:
    """The commit of this checkout (the build definition), or 'unknown' outside git."""
    try:
        out = proc.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], check=False, echo=False)
    except ToolMissingError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _pin(mirror: Mirror, src: Source | None) -> str:
    """REPO@REF as the build fetches it; empty for a source the release does not have (sources.deepgemm)."""
    return f"{mirror.repo(src.repo)}@{mirror.ref(src.pin)}" if src else ""


def cmake_sources_arg(mirror: Mirror, cmake: dict[str, CmakeSource]) -> str:
    """CMAKE_SOURCES: "ENV|REPO|REF|SUBDIR ..." (SUBDIR may be empty), one entry per sources.cmake, by name."""
    return " ".join(f"{s.env}|{mirror.repo(s.repo)}|{mirror.ref(s.pin)}|{s.subdir}"
                    for _, s in sorted(cmake.items()))


def vllm_version(manifest: Manifest, vllm_ref: str) -> str:
    """The version stamped into the vLLM wheel: the tag's, or the manifest's plus the overriding commit."""
    src = manifest.sources.vllm
    base = src.version or src.ref.removeprefix("v")
    if not vllm_ref or vllm_ref == src.ref:
        return base
    if TAG_RE.match(vllm_ref):
        return vllm_ref.removeprefix("v")
    return f"{base}+g{vllm_ref[:7]}"


def stage_closure(stages: dict[str, list[str]], target: str) -> list[str]:
    """Stages `target` needs, dependencies first (what BuildKit will actually build)."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dep in stages[name]:
            visit(dep)
        order.append(name)

    visit(target)
    return order


def make_plan(manifest: Manifest, *, mirror: Mirror = NO_MIRROR, overrides: Overrides = Overrides(),
              commit: str | None = None) -> Plan:
    m, rel, src = manifest, manifest.release, manifest.sources
    commit = commit or source_commit()
    vllm_src = src.vllm.model_copy(update={"ref": overrides.vllm_ref, "commit": ""}) if overrides.vllm_ref else src.vllm
    python_version = mirror.python_version or m.python.version
    runtime_base = m.base.runtime.ref
    cuda_packages = [mirror.package(p) for p in m.cuda.runtime_packages]
    vllm_build = overrides.vllm_build or src.vllm.build
    if vllm_build == "wheel" and not TAG_RE.match(vllm_src.ref):
        raise UsageError(f"vLLM ref {vllm_src.ref} is a commit: only a release tag has an official wheel "
                         f"(build it with --vllm-build source)")
    torch_pins = {k: mirror.version(getattr(m.torch, k)) for k in ("version", "torchvision", "torchaudio")}
    extras = extras_plan(m, mirror)

    build_args = {
        "BUILD_BASE_IMAGE": mirror.image(m.base.build.ref),
        "RUNTIME_BASE_IMAGE": mirror.image(runtime_base),
        "PYTHON_VERSION": python_version,
        "PIP_INDEX_URL": mirror.index(m.python.index_url),
        "TORCH_INDEX_URL": mirror.index(m.torch.index_url),
        "TORCH_VERSION": torch_pins["version"],
        # base's torch, for what compiles against it: the vLLM source build and a DeepGEMM wheel.
        "BUILD_TORCH": "1" if vllm_build == "source" or src.deepgemm or extras.deepep_ref else "",
        "TORCHVISION_VERSION": torch_pins["torchvision"],
        "TORCHAUDIO_VERSION": torch_pins["torchaudio"],
        "CUDA_VERSION": m.cuda.version,
        "CUDA_RUNTIME_PACKAGES": " ".join(p for p in cuda_packages if p),
        "APT_SOURCES": ";".join(mirror.apt_sources),
        # An override of flashinfer-python (the release's pin is not on the index) moves its JIT cache with it:
        # FlashInfer refuses a JIT cache of another version than the library.
        "FLASHINFER_VERSION": m.overridden("flashinfer-python") or m.flashinfer.version,
        # Empty: the release's own image installs no flashinfer-jit-cache, nor does this one.
        "FLASHINFER_INDEX_URL": mirror.index(m.flashinfer.jit_cache_index_url) if m.flashinfer.jit_cache_index_url
        else "",
        "FLASHINFER_CUBINS_URL": mirror.download(m.flashinfer.cubins_url),
        "GIT_URL_REWRITE": mirror.git_rewrite_arg(),
        "TORCH_CUDA_ARCH_LIST": m.build.cuda_arch_list,
        "MAX_JOBS": str(m.build.max_jobs),
        "NVCC_THREADS": str(m.build.nvcc_threads),
        "CMAKE_BUILD_TYPE": m.build.cmake_build_type,
        "TRITON_REPO": mirror.repo(src.triton.repo),
        "TRITON_REF": mirror.ref(src.triton.pin),
        "TRITON_VERSION": src.triton.ref.removeprefix("v"),
        "TRITON_BUILD": src.triton.build,
        "TRITON_KERNELS": rel.triton_kernels,
        "TRITON_KERNELS_REPO": mirror.repo(src.triton_kernels.repo),
        "TRITON_KERNELS_REF": mirror.ref(src.triton_kernels.pin),
        "TRITON_KERNELS_SUBDIR": src.triton_kernels.subdir,
        "FLASH_ATTN_REPO": mirror.repo(src.flash_attn.repo),
        "FLASH_ATTN_REF": mirror.ref(src.flash_attn.pin),
        "FLASHMLA_REPO": mirror.repo(src.flashmla.repo),
        "FLASHMLA_REF": mirror.ref(src.flashmla.pin),
        "CMAKE_SOURCES": cmake_sources_arg(mirror, src.cmake),
        # Empty: the release has no DeepGEMM wheel of its own (its vLLM fetches DeepGEMM in cmake), none is built.
        "DEEPGEMM_REPO": mirror.repo(src.deepgemm.repo) if src.deepgemm else "",
        "DEEPGEMM_REF": mirror.ref(src.deepgemm.pin) if src.deepgemm else "",
        "VLLM_REPO": mirror.repo(vllm_src.repo),
        "VLLM_REF": mirror.ref(vllm_src.pin),
        "VLLM_VERSION": vllm_version(m, overrides.vllm_ref),
        "VLLM_BUILD": vllm_build,
        "PIP_OVERRIDES": " ".join(m.python.overrides),
        # [recipe]: how the release's own build makes vLLM (source mode) and fixes its install.
        "BUILD_REQUIREMENTS": " ".join(m.recipe.build_requirements),
        "USE_EXISTING_TORCH": m.recipe.use_existing_torch,
        "RUST_TOOLCHAIN": m.recipe.rust_toolchain,
        "RUST_SOURCE": f"{mirror.repo(vllm_src.repo)}|{mirror.ref(vllm_src.pin)}" if m.recipe.rust_toolchain else "",
        "RUSTUP_DIST_SERVER": mirror.download(RUSTUP_DIST_SERVER) if m.recipe.rust_toolchain else "",
        "PROTOC_URL": mirror.download(PROTOC_URL.format(v=m.recipe.protoc_version,
                                                        arch=PROTOC_ARCH[rel.platform]))
        if m.recipe.protoc_version else "",
        "RUST_ARTIFACTS": " ".join(m.recipe.rust_artifacts),
        "WHEEL_CONTENTS": " ".join(m.recipe.wheel_contents) if mirror.vllm_native else "",
        "REINSTALL_AFTER": " ".join(m.recipe.reinstall),
        # Only where the mirror's apt sources carry NCCL (a mirror without NVIDIA's repository maps it to "").
        "NCCL_APT_SUFFIX": m.recipe.nccl_apt_suffix if mirror.package("libnccl-dev") else "",
        "NCCL_PACKAGE": f"nvidia-nccl-cu{m.cuda.version.split('.')[0]}=={m.recipe.nccl_version}"
        if m.recipe.nccl_version else "",
        # FlashInfer's TRTLLM MoE headers serve Blackwell alone.
        "FLASHINFER_PREFETCH": "1" if m.recipe.flashinfer_prefetch and has_blackwell(m.build.cuda_arch_list) else "",
        # [runtime_extras]: what vLLM's own final image installs beyond vLLM's requirements (apt packages in the
        # vllm-base stage, pip requirements in the final install, DeepEP built against the image's torch, gdrcopy).
        "RUNTIME_APT_PACKAGES": " ".join(extras.apt),
        "RUNTIME_PIP": " ".join(extras.pip),
        "DEEPEP_REPO": extras.deepep_repo,
        "DEEPEP_REF": extras.deepep_ref,
        "NVSHMEM_PACKAGE": extras.nvshmem,
        "GDRCOPY_URL": extras.gdrcopy_url,
        "RUNTIME_EXTRAS": " ".join(extras.record),
        # /opt/gracectl/image.json's own values (the rest of it is the build's inputs above).
        "RELEASE": rel.name,
        # The oldest NVIDIA driver that runs the image's CUDA (gracectl.releases.driver_floor): label, image.json,
        # doctor, smoke.
        "MIN_DRIVER": min_driver(m.cuda.version),
    }
    # The image's labels: given to the build by the plan (--label), never declared in the Dockerfile, so each value
    # is computed here once. Pins are REPO@REF as the build fetches them.
    labels = {
        "org.opencontainers.image.title": rel.image,
        "org.opencontainers.image.description": rel.description,
        "org.opencontainers.image.version": rel.name,
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.source": IMAGE_SOURCE,
        "org.opencontainers.image.base.name": runtime_base,
        "io.gracectl.release": rel.name,
        "io.gracectl.python": python_version,
        "io.gracectl.torch": torch_pins["version"],
        "io.gracectl.cuda-arch-list": m.build.cuda_arch_list,
        "io.gracectl.cuda": m.cuda.version,
        "io.gracectl.min-driver": build_args["MIN_DRIVER"],
        "io.gracectl.triton_kernels": rel.triton_kernels,
        "io.gracectl.vllm-build": vllm_build,
        "io.gracectl.version.vllm": build_args["VLLM_VERSION"],
        "io.gracectl.version.triton": build_args["TRITON_VERSION"],
        "io.gracectl.version.torchvision": torch_pins["torchvision"],
        "io.gracectl.version.torchaudio": torch_pins["torchaudio"],
        "io.gracectl.version.flashinfer": build_args["FLASHINFER_VERSION"],
        "io.gracectl.pin.vllm": _pin(mirror, vllm_src),
        "io.gracectl.pin.triton": _pin(mirror, src.triton),
        # The triton_kernels this image holds: site-packages' pin, or (the fallback) the copy vLLM vendors.
        "io.gracectl.pin.triton_kernels": _pin(mirror, src.triton_kernels if m.with_triton_kernels
                                               else src.cmake.get("triton_kernels") or src.triton_kernels),
        "io.gracectl.pin.flash_attn": _pin(mirror, src.flash_attn),
        "io.gracectl.pin.flashmla": _pin(mirror, src.flashmla),
        "io.gracectl.pin.deepgemm": _pin(mirror, src.deepgemm),
        "io.gracectl.pin.cmake": " ".join(f"{name}={_pin(mirror, s)}" for name, s in sorted(src.cmake.items())),
        "io.gracectl.runtime-extras": build_args["RUNTIME_EXTRAS"],
    }

    stages = {name: [d.format(mode=rel.triton_kernels, vllm_build=vllm_build) for d in deps]
              for name, deps in STAGE_GRAPH.items()}
    tag = overrides.image_tag or rel.tag + TARGETS[overrides.target]
    # the pair's other image: the tfa names its fallback; the fallback extends its tfa
    twin = rel.fallback.split(":")[0] if rel.fallback else load_release(m.extends).release.image if m.extends else ""
    prefix = f"{overrides.registry}/" if overrides.registry else ""
    unpinned = [f"base.{k}: {b.ref} (no digest)" for k, b in (("build", m.base.build), ("runtime", m.base.runtime))
                if not b.digest]
    unpinned += [f"sources.{k}: {s.repo}@{s.ref} (tag, no commit)" for k, s in
                 {**src.pinned(), "vllm": vllm_src}.items() if not s.commit and not COMMIT_RE.match(s.ref)]
    standins = [f"cuda.runtime_packages: {p} (not installed: {mirror.standin_reason})"
                for p, mapped in zip(m.cuda.runtime_packages, cuda_packages) if not mapped]
    if mirror.apt_sources_reason and any(cuda_packages):
        standins.append(f"cuda.runtime_packages: from {'; '.join(mirror.apt_sources)} ({mirror.apt_sources_reason})")
    standins += [f"torch.{k}: {getattr(m.torch, k)} -> {v} ({mirror.versions_reason})"
                 for k, v in torch_pins.items() if v != getattr(m.torch, k)]
    if not build_args["FLASHINFER_CUBINS_URL"]:
        standins.append(f"flashinfer.cubins_url: {m.flashinfer.cubins_url} (not fetched: {mirror.standin_reason})")
    standins += extras.standins
    if vllm_build == "source" and m.recipe.wheel_contents and not mirror.vllm_native:
        standins.append(f"recipe.wheel_contents: not asserted ({len(m.recipe.wheel_contents)} native files of the "
                        "official wheel; the mirror's vLLM source is a STAND-IN without native parts)")
    warnings = []
    if vllm_build == "source":
        warnings.append(f"vLLM build mode 'source' is UNPROVEN for {rel.name}: CI walks the source path only on the "
                        "test bed's stand-in vLLM source (not this release's tree; no Rust build, no CUDA compile); "
                        f"'wheel' (the official vllm=={src.vllm.ref.removeprefix('v')} wheel) is the proven default "
                        "(CLAWMINE.md, build modes)")
    final_stages = stage_closure(stages, overrides.target)
    empty_stages = [s for s, empty in (("build-deepgemm", not src.deepgemm), ("build-cmake-sources", not src.cmake),
                                       ("build-deepep", not extras.deepep_ref))
                    if empty and s in final_stages]
    return Plan(
        release=rel.name,
        platform=rel.platform,
        dockerfile=str(DOCKERFILE.relative_to(REPO_ROOT)),
        context=".",
        target=overrides.target,
        build_args=build_args,
        stages=stages,
        final_stages=final_stages,
        labels=labels,
        moving_tag=f"{prefix}{rel.image}:{tag}",
        build_tag=f"{prefix}{rel.image}:{tag}-b{overrides.build_number}-{commit[:7]}",
        cache_ref=f"{prefix}{rel.image}:buildcache" if prefix else "",
        twin_cache_ref=f"{prefix}{twin}:buildcache" if prefix and twin and twin != rel.image else "",
        fallback=f"{prefix}{rel.fallback}{TARGETS[overrides.target]}" if rel.fallback else "",
        source_commit=commit,
        build_network=mirror.build_network,
        unpinned=unpinned,
        standins=standins,
        empty_stages=empty_stages,
        runtime_extras=extras.lines,
        warnings=warnings,
        builder=overrides.builder,
    )


def lint_dockerfile() -> None:
    """hadolint on vllm/Dockerfile; its findings in a one-line error. Every ignored rule says why in the file."""
    try:
        proc.run(["hadolint", str(DOCKERFILE.relative_to(REPO_ROOT))], cwd=REPO_ROOT)
    except CommandFailedError as exc:
        findings = "; ".join(line.strip() for line in exc.output.splitlines() if line.strip())
        raise CommandFailedError(f"hadolint found problems in vllm/Dockerfile: {findings or exc}") from None


def plan_for(release: str, mirror: Path | None = None, vllm_ref: str = "", image_tag: str = "",
             build_number: int = 0, registry: str = "", vllm_build: str = "", target: str = FINAL_STAGE,
             builder: str = "") -> Plan:
    """The one way a release name and the operator's options become a Plan (CLI, pipeline, rehearse)."""
    return make_plan(
        load_release(release),
        mirror=load_mirror(mirror),
        overrides=Overrides(vllm_ref=vllm_ref, image_tag=image_tag, build_number=build_number, registry=registry,
                            vllm_build=vllm_build, target=target, builder=builder),
    )
