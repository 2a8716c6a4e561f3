"""`gracectl doctor`: does this node have what the pipeline's stages need? One finding per line.

What each stage needs is said by the stage itself (stages.STAGES, Stage.node_needs); the checks are here, and
what to install comes from the tools table (adapters.tools). The Jenkinsfile runs doctor first on each node,
so a missing program or a full disk fails the job at once with what to install, not hours into a build.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from gracectl.releases import driver_floor
from gracectl.image import builders
from gracectl.pipeline.stages import Stage
from gracectl.adapters import docker, proc, tools
from gracectl.adapters.registry import open_registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.image_ref import ImageRef
from gracectl.errors import GraceError, ToolMissingError, UsageError
from gracectl.releases.manifest import load_release

DEFAULT_MIN_FREE_GB = 100  # a vLLM source build: BuildKit cache, CUDA base layers, the image (gh200: 480 GB)
MIN_FREE_ENV = "GRACECTL_MIN_FREE_GB"
OK, MISSING, SKIPPED = "ok", "MISSING", "skipped"


@dataclass
class Settings:
    access: RegistryAccess  # how the stages would reach the registry (the edge's: gracectl.settings)
    registry: str = ""  # HOST[:PORT][/NAMESPACE]; empty: the registry check is skipped
    min_free_gb: float = DEFAULT_MIN_FREE_GB
    smoke_gpus: str = "all"  # "none": the smoke stage runs without GPUs (the CPU test bed)
    release: str = ""  # the release the job builds and smokes: its image's minimum driver; empty: not checked
    builder: str = ""  # the buildx builder the build stage names (BUILDER / --builder); empty: the node's dockerd


@dataclass
class Finding:
    check: str
    status: str  # OK | MISSING | SKIPPED
    detail: str  # what was found, or what to do
    stages: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.status:<8} {self.check:<15} {self.detail}  [{', '.join(self.stages)}]"


class Missing(Exception):
    """A check failed: the message says what to install or do."""


def _output(args: Sequence[str], *, timeout: float = 60, **kwargs) -> str:
    """stdout of a quick probe through proc (a missing program's error names what to install); Missing if not."""
    try:
        return proc.run(args, echo=False, timeout=timeout, **kwargs).stdout.strip()
    except GraceError as exc:
        raise Missing(str(exc)) from None


def _first_line(text: str) -> str:
    return text.splitlines()[0].strip() if text.strip() else ""


def check_git(_: Settings) -> str:
    return _first_line(_output(["git", "--version"]))


def check_hadolint(_: Settings) -> str:
    return _first_line(_output(["hadolint", "--version"]))


def check_skopeo(_: Settings) -> str:
    return _first_line(_output(["skopeo", "--version"]))


def check_docker(_: Settings) -> str:
    try:
        server = docker.run(["version", "--format", "{{.Server.Version}}"], echo=False, timeout=30).stdout.strip()
    except ToolMissingError as exc:
        raise Missing(str(exc)) from None
    except GraceError as exc:
        raise Missing(f"no docker daemon answers {docker.binary()} ({exc}): start dockerd, or add this user to "
                      f"the docker group") from None
    return f"{docker.binary()}, daemon {server}"


def check_buildkit(settings: Settings) -> str:
    """The builder the build stage will use: a named buildx builder (buildx has it, and its nodes), else the
    node's dockerd, whose client builds with DOCKER_BUILDKIT=1 (Debian's 20.10): proven by a real empty build."""
    client = docker.binary()
    if settings.builder:
        try:
            return builders.inspect(settings.builder)
        except GraceError as exc:
            raise Missing(str(exc)) from None
    try:
        _output(docker.command(["docker", "build", "--output", "type=tar,dest=/dev/null", "-"]),
                input="FROM scratch\n", env=docker.BUILDKIT_ENV, timeout=120)
    except Missing as exc:
        raise Missing(f"{client} has no buildx and refuses DOCKER_BUILDKIT=1 builds ({exc}): "
                      f"{tools.hint('docker-buildx')} (GRACECTL_DOCKER picks the client)") from None
    return f"builder {builders.describe('')}: {client} builds with DOCKER_BUILDKIT=1"


def check_nvidia_runtime(settings: Settings) -> str:
    """`docker run --gpus` needs NVIDIA's container toolkit: a configured runtime or the hook dockerd calls."""
    if settings.smoke_gpus == "none":
        return ""
    runtimes = _output(docker.command(["docker", "info", "--format", "{{json .Runtimes}}"]))
    if '"nvidia"' in runtimes:
        return "docker runtime nvidia"
    hook = shutil.which("nvidia-container-runtime-hook")
    if hook:
        return f"{hook} (docker --gpus)"
    raise Missing(f"docker has no nvidia runtime and no nvidia-container-runtime-hook is on PATH: "
                  f"{tools.hint('nvidia-container-runtime-hook')}")


def check_gpu(settings: Settings) -> str:
    if settings.smoke_gpus == "none":
        return ""
    gpus = [line for line in _output(["nvidia-smi", "-L"]).splitlines() if line.startswith("GPU ")]
    if not gpus:
        raise Missing("nvidia-smi sees no GPU: check the driver (`nvidia-smi`) and the node's GPUs")
    return f"{len(gpus)} GPU(s): {gpus[0].split(' (UUID')[0]}"


def check_driver(settings: Settings) -> str:
    """The node's driver meets the minimum of the release's image (gracectl.releases.driver_floor), in the smoke's
    words."""
    if settings.smoke_gpus == "none" or not settings.release:
        return ""
    cuda = load_release(settings.release).cuda.version
    floor = driver_floor.min_driver(cuda)
    check = driver_floor.node_driver_module()
    driver = check.from_query(_output(check.QUERY))
    if not driver:
        raise Missing(f"`{' '.join(check.QUERY)}` names no driver version: check the driver (`nvidia-smi`)")
    problem = check.floor_problem(driver, floor, cuda, settings.release)
    if problem:
        raise Missing(problem)
    return f"driver {driver}, {settings.release} needs {floor} or newer (CUDA {cuda})"


def check_disk(settings: Settings) -> str:
    """Free space where docker keeps images and the build cache (its root dir), else here."""
    where = Path.cwd()
    try:
        where = Path(_output(docker.command(["docker", "info", "--format", "{{.DockerRootDir}}"])) or where)
    except Missing:
        pass
    free_gb = shutil.disk_usage(where).free / 1e9
    if free_gb < settings.min_free_gb:
        raise Missing(f"{free_gb:.0f} GB free on {where}, a build needs {settings.min_free_gb:g} GB: free space "
                      f"(`docker builder prune`, old images) or set {MIN_FREE_ENV} / --min-free-gb")
    return f"{free_gb:.0f} GB free on {where} (needs {settings.min_free_gb:g})"


def check_registry(settings: Settings) -> str:
    if not settings.registry:
        return ""
    ref = ImageRef.parse(f"{settings.registry.rstrip('/')}/probe:x")
    try:
        open_registry(ref, replace(settings.access, deadline_s=10))  # pings /v2/ with the node's docker login
    except GraceError as exc:
        raise Missing(str(exc)) from None
    return f"{ref.registry} answers /v2/"


# name -> check; a check returns what it found, "" when it does not apply (skipped), or raises Missing.
CHECKS: dict[str, Callable[[Settings], str]] = {
    "git": check_git, "hadolint": check_hadolint, "docker": check_docker, "buildkit": check_buildkit,
    "nvidia-runtime": check_nvidia_runtime, "gpu": check_gpu, "driver": check_driver, "disk": check_disk,
    "skopeo": check_skopeo, "registry": check_registry,
}
SKIP_REASONS = {"nvidia-runtime": "GRACECTL_SMOKE_GPUS=none", "gpu": "GRACECTL_SMOKE_GPUS=none",
                "driver": "GRACECTL_SMOKE_GPUS=none, or no release given (RELEASE / --release)",
                "registry": "no registry given (REGISTRY / --registry)"}
# Checks whose finding the verdict repeats: the job's last line names the node's driver and the image's minimum.
SAID_IN_VERDICT = {"driver"}


def needs_of(stages: Sequence[Stage]) -> dict[str, list[str]]:
    """check name -> the stages that need it, in the order checks are run."""
    needs: dict[str, list[str]] = {}
    for s in stages:
        for name in s.node_needs:
            if name not in CHECKS:
                raise UsageError(f"stage {s.name} needs {name!r}, which gracectl doctor cannot check")
            needs.setdefault(name, []).append(s.name)
    return {name: needs[name] for name in CHECKS if name in needs}


def examine(stages: Sequence[Stage], settings: Settings) -> list[Finding]:
    findings = []
    for name, by in needs_of(stages).items():
        try:
            found = CHECKS[name](settings)
            finding = Finding(name, OK, found) if found else Finding(name, SKIPPED, SKIP_REASONS.get(name, ""))
        except Missing as exc:
            finding = Finding(name, MISSING, str(exc))
        finding.stages = by
        findings.append(finding)
    return findings


def verdict(findings: Sequence[Finding], stages: Sequence[Stage]) -> None:
    """ToolMissingError naming what is missing (exit 3), or nothing."""
    missing = [f for f in findings if f.status == MISSING]
    if missing:
        said = "".join(f"; {f.detail}" for f in missing if f.check in SAID_IN_VERDICT)
        raise ToolMissingError(f"this node cannot run stage(s) {', '.join(s.name for s in stages)}: missing "
                               f"{', '.join(f.check for f in missing)} (what to install is above){said}")
