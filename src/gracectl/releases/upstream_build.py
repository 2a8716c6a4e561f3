"""What a vLLM release's own image build RUNS, read from its docker/Dockerfile as upstream's default linux/arm64
build runs it: every release file a step of the `vllm-openai` target's stages copies or executes (build
requirements, the Rust build, protoc, DeepEP, gdrcopy, ...), the post-install fixes (forced reinstalls), the NCCL
pins and the environment its final image sets. Each with the file and line it came from.

gracectl.releases.derive turns them into the manifest's [recipe] (the values the build uses) and [build_steps]
(each upstream step: done here, or excluded with a reason); `release check` fails on a step the manifest has no
entry for. Pure reading, like gracectl.releases.final_stage (whose Dockerfile reader this shares).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gracectl.adapters.package_index import SDIST_MEMBERS
from gracectl.errors import UpstreamError
from gracectl.releases.upstream import docker_args
from gracectl.releases.final_stage import FINAL_TARGET, _assignments, _instructions, _live_ranges, read_dockerfile, \
    script_default

RUST_TOOLCHAIN_FILE = "rust-toolchain.toml"
PROTOC_SCRIPT = "tools/install_protoc.sh"
# Files a `COPY . .` brings are the whole tree: not a step of their own.
_WHOLE_TREE = {".", "./"}
# A word of a RUN that names a file of the release ("requirements/build/cuda.txt", "build_rust.sh").
_PATH_WORD = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.*-]+)*$")


def has_file(sdist: Path, rel: str) -> bool:
    """Does the release have this file or folder? The sdist's member list where the extraction kept only some."""
    rel = rel.removeprefix("./").rstrip("/")
    members = sdist / SDIST_MEMBERS
    if members.is_file():
        return any(m == rel or m.startswith(rel + "/") for m in members.read_text().splitlines())
    return (sdist / rel).exists()


@dataclass(frozen=True)
class BuildStep:
    """One thing upstream's image build does that this image must do too, or exclude with a reason."""

    key: str  # the release file it runs ("requirements/build/cuda.txt"), "env:NAME", "reinstall:PKG", "nccl:..."
    what: str  # one line, as upstream does it
    origin: str  # docker/Dockerfile:LINE


def _closure(text: str, stages: dict[str, tuple[str, int, int]]) -> list[str]:
    """The stages `vllm-openai` is built from: its FROM chain and every stage a COPY --from / mount from= names."""
    lines = text.splitlines()
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in stages or name in order:
            return
        parent, first, last = stages[name]
        visit(parent)
        for _, instr, body in _instructions(lines, first, last):
            for dep in re.findall(r"(?:--from=|\bfrom=)([A-Za-z0-9_.-]+)", body):
                visit(dep)
        order.append(name)

    visit(FINAL_TARGET)
    if not order:
        raise UpstreamError(f"docker/Dockerfile has no `{FINAL_TARGET}` stage: not a layout this reader knows")
    return order


def _runtime_chain(stages: dict[str, tuple[str, int, int]]) -> list[str]:
    """The FROM chain of the final image itself (its environment is what containers run with)."""
    chain, name = [], FINAL_TARGET
    while name in stages:
        chain.append(name)
        name = stages[name][0]
    return chain


def build_steps(sdist: Path) -> list[BuildStep]:
    """Every step of upstream's image build, keyed by what it runs (see BuildStep.key), in the Dockerfile's order
    (first occurrence wins). Branches the default arm64 build does not take are left out."""
    text, lines, stages, values = read_dockerfile(sdist, "its build")
    runtime = set(_runtime_chain(stages))
    found: dict[str, BuildStep] = {}

    def add(key: str, what: str, line: int) -> None:
        found.setdefault(key, BuildStep(key, re.sub(r"\s+", " ", what).strip()[:200], f"docker/Dockerfile:{line}"))

    for stage in _closure(text, stages):
        _, first, last = stages[stage]
        for line, instr, body in _instructions(lines, first, last):
            if instr == "COPY" and not re.search(r"--from=", body):
                words = [w for w in body.split()[1:] if not w.startswith("--")]
                for src in words[:-1]:
                    src = src.rstrip("/")
                    if src not in _WHOLE_TREE and has_file(sdist, src):
                        add(src, f"{stage}: COPY {src}", line)
            elif instr == "ENV" and stage in runtime:
                for name in re.findall(r"(?:^ENV\s+|\s)([A-Z][A-Z0-9_]*)[= ]", body):
                    add(f"env:{name}", f"{stage}: {body}", line)
            elif instr == "RUN":
                local = {**values, **_assignments(body, values)}
                dead = _live_ranges(body, local)
                live = "".join(ch for i, ch in enumerate(body) if not any(a <= i < b for a, b in dead))
                for word in re.findall(r"[^\s;&|()'\"]+", live):
                    if _PATH_WORD.match(word) and "/" in word or word.endswith((".sh", ".py")):
                        if not word.startswith("/") and has_file(sdist, word):
                            add(word, f"{stage}: RUN ... {word} ...", line)
                for pkg in re.findall(r"--force-reinstall\b[^&;]*?\"?([A-Za-z0-9_.-]+)==", live):
                    add(f"reinstall:{pkg}", f"{stage}: forced reinstall of {pkg} after the install", line)
                if re.search(r"libnccl2=\$\{?\w+", live) and "+cuda" in live:
                    add("nccl:apt-pin", f"{stage}: libnccl2/libnccl-dev pinned to the +cuda<major.minor> build", line)
                if re.search(r"\$\{?NCCL_VERSION\b", live):
                    add("nccl:version", f"{stage}: NCCL_VERSION forced (uv override) into the install", line)
    return list(found.values())


@dataclass(frozen=True)
class Recipe:
    """The values this image's build takes from upstream's build (the manifest's [recipe])."""

    build_requirements: tuple[str, str]  # (file, origin): what the wheel build installs
    use_existing_torch: tuple[str, str]  # the script that strips the torch pins (moved to tools/ in 0.34)
    rust_toolchain: tuple[str, str]  # (channel, origin); "" when the release has no Rust build
    protoc_version: tuple[str, str]
    rust_artifacts: tuple[tuple[str, ...], str]  # what the Rust stage hands the wheel build (globs)
    reinstall: tuple[tuple[str, ...], str]  # packages force-reinstalled after the one transaction
    nccl_version: tuple[str, str]  # NCCL_VERSION of docker/versions.json ("" before 0.27)
    nccl_apt_pinned: tuple[bool, str]  # are libnccl2/libnccl-dev pinned to the +cuda<major.minor> build
    flashinfer_prefetch: tuple[bool, str]  # does its final image fetch FlashInfer's TRTLLM headers at build time


def recipe(sdist: Path, steps: list[BuildStep]) -> Recipe:
    """[recipe] of a release: read from its build steps and the files they name."""
    keys = {s.key: s for s in steps}
    build_req = next((s for s in steps if re.match(r"^requirements/build(/cuda)?\.txt$", s.key)), None)
    if build_req is None:
        raise UpstreamError("docker/Dockerfile's build installs no requirements/build.txt or "
                            "requirements/build/cuda.txt: not a layout this reader knows")
    toolchain = ("", "")
    if RUST_TOOLCHAIN_FILE in keys:
        text = (sdist / RUST_TOOLCHAIN_FILE).read_text()
        m = re.search(r'(?m)^channel\s*=\s*"([^"]+)"', text)
        if not m:
            raise UpstreamError(f"{RUST_TOOLCHAIN_FILE} names no channel")
        toolchain = (m.group(1), f"{RUST_TOOLCHAIN_FILE}:{text.count(chr(10), 0, m.start()) + 1}")
    protoc = script_default(sdist, PROTOC_SCRIPT, "VERSION") if PROTOC_SCRIPT in keys else ("", "")
    torch_script = next((s for s in steps if s.key.endswith("use_existing_torch.py")), None)
    nccl_pin = keys.get("nccl:apt-pin")
    dockerfile = (sdist / "docker" / "Dockerfile").read_text()
    artifacts = re.findall(r"(?m)^COPY\s+--from=rust-build\s+/\S+?/(vllm/\S+)\s", dockerfile)
    rust_at = next((f"docker/Dockerfile:{n}" for n, line in enumerate(dockerfile.splitlines(), 1)
                    if line.startswith("COPY --from=rust-build")), "")
    reinstall = tuple(s.key.removeprefix("reinstall:") for s in steps if s.key.startswith("reinstall:"))
    reinstall_at = next((s.origin for s in steps if s.key.startswith("reinstall:")), "")
    nccl = docker_args(sdist).get("NCCL_VERSION")
    prefetch_at = dockerfile.find("download_trtllm_headers")
    return Recipe(build_requirements=(build_req.key, build_req.origin),
                  use_existing_torch=(torch_script.key, torch_script.origin) if torch_script
                  else ("use_existing_torch.py", "docker/Dockerfile copies none: the name vLLM's tree has had"),
                  rust_toolchain=toolchain,
                  protoc_version=protoc, rust_artifacts=(tuple(dict.fromkeys(artifacts)), rust_at),
                  reinstall=(reinstall, reinstall_at),
                  nccl_version=(nccl.value, nccl.origin) if nccl else ("", ""),
                  nccl_apt_pinned=(bool(nccl_pin), nccl_pin.origin if nccl_pin else ""),
                  flashinfer_prefetch=(prefetch_at >= 0, f"docker/Dockerfile:{dockerfile.count(chr(10), 0, prefetch_at) + 1}"
                                       if prefetch_at >= 0 else "docker/Dockerfile fetches no TRTLLM headers"))
