"""What a vLLM release's own sources pin, read from its sdist: each value with the file and line it came from.

Pure reading (no network): `gracectl release new` writes a manifest from these pins, `gracectl release check`
compares a manifest with them. The files read, as vLLM lays them out since 0.19:
  requirements/cuda.txt                 torch, torchvision, torchaudio, flashinfer-python
  docker/versions.json (else the        CUDA_VERSION, PYTHON_VERSION, DEEPGEMM_GIT_REF (a DeepGEMM wheel
    Dockerfile's ARGs)                  built beside vLLM), FLASHINFER's jit cache in docker/Dockerfile
  CMakeLists.txt, cmake/external_projects/*.cmake
                                        every FetchContent source (Declare or Populate; git or a source
                                        archive), its pin, and the *_SRC_DIR environment override that replaces it
ROCm-only branches (`if(VLLM_TARGET_DEVICE STREQUAL "rocm")`) are skipped: the image is CUDA.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from gracectl.errors import UpstreamError

# FetchContent names with a Dockerfile stage of their own; every other one is sources.cmake.<name>.
NAMED_SOURCES = {"vllm-flash-attn": "flash_attn", "flashmla": "flashmla"}
DEEPGEMM_REPO = "https://github.com/deepseek-ai/DeepGEMM.git"  # tools/install_deepgemm.sh clones it


@dataclass(frozen=True)
class Pin:
    path: str  # dotted manifest path: "torch.version", "sources.cmake.cutlass.ref"
    value: str
    origin: str  # "requirements/cuda.txt:8", "cmake/external_projects/flashmla.cmake:22"


@dataclass(frozen=True)
class FetchSource:
    """One FetchContent source of vLLM's cmake."""

    name: str  # FetchContent name, lowercased: "cutlass", "vllm-flash-attn", "triton_kernels"
    repo: str
    ref: str
    env: str  # the *_SRC_DIR override variable ("" when the file has none)
    subdir: str  # SOURCE_SUBDIR: the part vLLM uses ("" = the whole repository)
    origin: str  # file:line of the pin

    @property
    def key(self) -> str:
        """Its manifest key under sources: flash_attn, flashmla, or cmake.<name>."""
        return NAMED_SOURCES.get(self.name) or "cmake." + self.name.replace("-", "_")


def _line_of(text: str, needle: str) -> int:
    idx = text.find(needle)
    return text.count("\n", 0, idx) + 1 if idx >= 0 else 0


def requirement_pins(sdist: Path, file: str = "requirements/cuda.txt") -> dict[str, Pin]:
    """name -> Pin for every `name==version` line of a requirements file (markers dropped)."""
    path = sdist / file
    if not path.is_file():
        raise UpstreamError(f"the sdist has no {file}: not a vLLM CUDA release layout this reader knows")
    pins = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*([A-Za-z0-9_.+!-]+)", line)
        if m:
            name = m.group(1).lower()
            pins[name] = Pin(name, m.group(3), f"{file}:{n}")
    return pins


def extra_indexes(sdist: Path, file: str = "requirements/cuda.txt") -> list[Pin]:
    """The package indexes a requirements file adds (`--extra-index-url URL`, through its `-r` includes), each
    with its file and line: from 0.27 requirements/cuda.txt adds FlashInfer's wheel site."""
    found: dict[str, Pin] = {}
    seen: set[str] = set()

    def read(rel: str) -> None:
        path = sdist / rel
        if rel in seen or not path.is_file():
            return
        seen.add(rel)
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r"^\s*--extra-index-url[=\s]+(\S+)", line)
            if m:
                found.setdefault(m.group(1), Pin(m.group(1), m.group(1), f"{rel}:{n}"))
            inc = re.match(r"^\s*-r\s+(\S+)", line)
            if inc:
                read(str(Path(rel).parent / inc.group(1)))

    read(file)
    return list(found.values())


def docker_args(sdist: Path) -> dict[str, Pin]:
    """The release image's build arguments: docker/versions.json (generated from the Dockerfile's ARGs since
    0.19), else the Dockerfile's `ARG NAME=value` lines."""
    versions = sdist / "docker" / "versions.json"
    args: dict[str, Pin] = {}
    dockerfile = sdist / "docker" / "Dockerfile"
    if dockerfile.is_file():
        for n, line in enumerate(dockerfile.read_text().splitlines(), 1):
            m = re.match(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)\s*$", line)
            if m and m.group(1) not in args:
                args[m.group(1)] = Pin(m.group(1), m.group(2).strip('"'), f"docker/Dockerfile:{n}")
    if versions.is_file():
        text = versions.read_text()
        for name, entry in json.loads(text).get("variable", {}).items():
            if isinstance(entry, dict) and "default" in entry:
                at = text.find('"default"', text.find('"' + name + '"'))  # the value's line, not the key's
                args[name] = Pin(name, str(entry["default"]), f"docker/versions.json:{text.count(chr(10), 0, at) + 1}")
    return args


def dockerfile_installs(sdist: Path, package: str) -> str:
    """file:line where the release's docker/Dockerfile installs `package` ("" when it does not)."""
    dockerfile = sdist / "docker" / "Dockerfile"
    if not dockerfile.is_file():
        return ""
    text = dockerfile.read_text()
    line = _line_of(text, f"{package}==")
    return f"docker/Dockerfile:{line}" if line else ""


_ROCM_IF = re.compile(r'^\s*if\s*\(\s*VLLM_TARGET_DEVICE\s+STREQUAL\s+"rocm"\s*\)', re.I)


def _cmake_statements(text: str):
    """(line number, command, argument text) for each cmake command, with comments dropped, flagged when it
    sits in a ROCm-only branch."""
    stack: list[bool] = []  # per open if(): is this branch ROCm-only?
    clean = re.sub(r"#[^\n]*", "", text)
    for m in re.finditer(r"(?m)^\s*([A-Za-z_]+)\s*\(((?:[^()]|\([^()]*\))*)\)", clean):
        cmd, args = m.group(1).lower(), m.group(2)
        line = clean.count("\n", 0, m.start(1)) + 1
        if cmd == "if":
            stack.append(bool(_ROCM_IF.match(m.group(0))))
        elif cmd in ("else", "elseif") and stack:
            stack[-1] = False
        elif cmd == "endif" and stack:
            stack.pop()
        yield line, cmd, args, any(stack)


def _words(args: str) -> list[str]:
    return [w.strip('"') for w in re.findall(r'"[^"]*"|[^\s]+', args)]


def fetch_sources(sdist: Path) -> list[FetchSource]:
    """Every FetchContent source vLLM's CUDA build fetches, with its pin and override, from CMakeLists.txt and
    cmake/external_projects/*.cmake (Declare and Populate alike)."""
    # cmake/*.cmake outside external_projects/ are the CPU, ROCm and helper builds (oneDNN, ComputeLibrary).
    files = [sdist / "CMakeLists.txt", *sorted((sdist / "cmake" / "external_projects").glob("*.cmake"))]
    found: dict[str, FetchSource] = {}
    for path in files:
        if not path.is_file():
            continue
        rel = path.relative_to(sdist).as_posix()
        text = path.read_text()
        variables: dict[str, tuple[str, int]] = {}
        env_seen: list[tuple[int, str]] = [(text.count("\n", 0, m.start()) + 1, m.group(1))
                                           for m in re.finditer(r"ENV\{(\w+_SRC_DIR)\}", text)]

        def expand(word: str, line: int) -> tuple[str, int]:
            """A word with ${VAR}s replaced; the line of the set() that gave the (last) value."""
            origin = line
            for _ in range(5):
                refs = re.findall(r"\$\{(\w+)\}", word)
                if not refs:
                    break
                for ref in refs:
                    value, at = variables.get(ref, (f"${{{ref}}}", origin))
                    word, origin = word.replace(f"${{{ref}}}", value), at
            return word, origin

        for line, cmd, args, rocm in _cmake_statements(text):
            if rocm:
                continue
            words = _words(args)
            if cmd == "set" and len(words) >= 2:
                variables[words[0]] = (" ".join(words[1:]), line)
            elif cmd == "string" and (words[:1] == ["REPLACE"] and len(words) >= 5
                                      or words[:2] == ["REGEX", "REPLACE"] and len(words) >= 6):
                # string(REPLACE a b OUT IN) / string(REGEX REPLACE a b OUT IN): the URL's host may change
                # (github.com -> codeload); its repository and ref do not, which is what the pin is.
                out, src = (words[3], words[4]) if words[0] == "REPLACE" else (words[4], words[5])
                variables[out] = expand(src, line)
            elif cmd in ("fetchcontent_declare", "fetchcontent_populate") and words:
                opts = dict(zip(words[1::2], words[2::2])) if len(words) > 2 else {}
                name = words[0].lower()
                repo, ref, origin = "", "", line
                def at(key: str) -> int:  # the line of an option inside the command (a literal pin's line)
                    m = re.search(rf"\b{key}\b", args)
                    return line + args[:m.start()].count("\n") if m else line

                if "GIT_REPOSITORY" in opts:
                    repo, _ = expand(opts["GIT_REPOSITORY"], line)
                    ref, origin = expand(opts.get("GIT_TAG", ""), at("GIT_TAG"))
                elif "URL" in opts:
                    url, origin = expand(opts["URL"], at("URL"))
                    m = re.match(r"^(https://github\.com/[^/]+/[^/]+?)(?:\.git)?/(?:tar\.gz|archive)/(.+?)"
                                 r"(?:\.tar\.gz)?$", url)
                    if not m:
                        raise UpstreamError(f"{rel}:{line}: FetchContent {name} downloads {url}, which is not a "
                                            "GitHub source archive this reader can pin")
                    repo, ref = m.group(1), m.group(2)
                if not repo:
                    continue  # the SOURCE_DIR branch (the local override itself)
                if "${" in repo + ref:
                    raise UpstreamError(f"{rel}:{line}: FetchContent {name}: cannot resolve {repo}@{ref}")
                env = next((e for at, e in reversed(env_seen) if at <= line), "")
                repo = repo if repo.endswith(".git") else repo + ".git"
                found[name] = FetchSource(name, repo, ref, env, opts.get("SOURCE_SUBDIR", ""), f"{rel}:{origin}")
    return sorted(found.values(), key=lambda s: s.name)
