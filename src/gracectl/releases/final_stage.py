"""What a vLLM release's own final image installs beyond vLLM: its docker/Dockerfile's `vllm-openai` stage and the
stages below it, read as upstream's default arm64 build runs them (pip packages with their pins and extras, apt
packages, the ep_kernels step's DeepEP + NVSHMEM, gdrcopy), each with the file and line it came from.
gracectl.releases.derive turns them into the manifest's [runtime_extras]; `release check` compares. Pure reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from gracectl.errors import UpstreamError
from gracectl.releases.upstream import _line_of, docker_args


# --- what the release's own final image installs (docker/Dockerfile's vllm-openai stage and those below it) ------

FINAL_TARGET = "vllm-openai"
# Shell values the reader assumes for the image this project builds: upstream's Dockerfile branches on them.
ASSUMED = {"TARGETPLATFORM": "linux/arm64", "PYTORCH_NIGHTLY": ""}
# Files of tools/ the final stage's steps run, and the defaults they hold (not in the Dockerfile's ARGs).
EP_KERNELS_SCRIPT = "tools/ep_kernels/install_python_libraries.sh"
GDRCOPY_SCRIPT = "tools/install_gdrcopy.sh"


@dataclass(frozen=True)
class FinalInstall:
    """One thing the release's own final image installs, as its Dockerfile says it."""

    key: str  # stable name: the PEP 503 name (pip), the package (apt), "deepep" / "gdrcopy" (built, downloaded)
    kind: str  # pip | apt | build | download
    spec: str  # as upstream installs it: "bitsandbytes>=0.42.0", "curl", "dist/*.whl"
    origin: str  # docker/Dockerfile:LINE
    details: tuple[tuple[str, str, str], ...] = ()  # (field, value, origin): repo, ref, version, url


def _stages(text: str) -> dict[str, tuple[str, int, int]]:
    """stage name -> (the FROM it builds on, first line, last line) of a Dockerfile."""
    found: list[tuple[str, str, int]] = []
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)\s+AS\s+(\S+)\s*$", line, re.I)
        if m:
            found.append((m.group(2), m.group(1), n))
    total = text.count("\n") + 1
    return {name: (parent, start, (found[i + 1][2] - 1) if i + 1 < len(found) else total)
            for i, (name, parent, start) in enumerate(found)}


def _instructions(lines: list[str], first: int, last: int):
    """(line, instruction, text) for each instruction between two lines, continuations joined; comment lines
    inside a continued instruction dropped, as docker drops them. Heredoc bodies are skipped."""
    n = first
    last = min(last, len(lines))
    while n <= last:
        line = lines[n - 1]
        start = n
        if not line.strip() or line.lstrip().startswith("#"):
            n += 1
            continue
        parts = [line]
        while parts[-1].rstrip().endswith("\\") and n < last:
            n += 1
            nxt = lines[n - 1]
            if nxt.lstrip().startswith("#"):
                continue  # a comment inside a continuation: dropped (the line before still continues)
            parts.append(nxt)
        heredoc = re.search(r"<<-?'?(\w+)'?", parts[0])
        if heredoc and parts[0].split(None, 1)[0].upper() == "RUN":
            while n < last and lines[n].strip() != heredoc.group(1):
                n += 1
            n += 1
        text = " ".join(p.rstrip().removesuffix("\\") for p in parts)
        yield start, text.split(None, 1)[0].upper(), text
        n += 1


def _expand(word: str, values: dict[str, str]) -> str:
    """${VAR}, $VAR and ${VAR%%.*} with known values; `$(echo $X | cut -d. -fA[,B] [| tr ...])` computed."""
    def subst(m: re.Match) -> str:
        var = values.get(m.group(1))
        if var is None:
            return m.group(0)
        op = m.group(2) or ""
        if op.startswith("%%"):
            return var.split(op[2:].replace("*", "", 1)[:1] or "\0", 1)[0] if op[2:].endswith("*") else var
        return var

    def command(m: re.Match) -> str:
        cmd = m.group(1)
        src = re.match(r"echo\s+\$\{?(\w+)\}?\s*\|\s*cut\s+-d\s*\.\s+-f(\d+)(?:,(\d+))?(.*)$", cmd.strip())
        if not src or src.group(1) not in values:
            return m.group(0)
        fields = values[src.group(1)].split(".")
        value = ".".join(fields[int(src.group(2)) - 1:int(src.group(3) or src.group(2))])
        for tr in re.findall(r"\|\s*tr\s+(-d\s+)?'(.)'(?:\s+'(.)')?", src.group(4)):
            value = value.replace(tr[1], "" if tr[0] else tr[2])
        return value

    word = re.sub(r"\$\(([^()]*)\)", command, word)
    return re.sub(r"\$\{(\w+)(%%[^}]*)?\}|\$(\w+)", lambda m: subst(m) if m.group(1) else
                  (values.get(m.group(3), m.group(0))), word)


def _condition(cond: str, values: dict[str, str]) -> bool | None:
    """A `[ A = B ]` / `[ A != B ]` / `[ -n A ]` / `[ -z A ]` / `[ ! -z A ]` test with known values, else None."""
    m = re.match(r"^\[\s*(!\s+)?(-[nz])\s+(\S+)\s*\]$", cond.strip())
    if m:
        value = _expand(m.group(3).strip('"'), values)
        if "$" in value:
            return None
        result = bool(value) if m.group(2) == "-n" else not value
        return not result if m.group(1) else result
    m = re.match(r'^\[\s*(\S+)\s+(!?=)\s+(\S+)\s*\]$', cond.strip())
    if not m:
        return None
    left, right = (_expand(w.strip('"').strip("'"), values) for w in (m.group(1), m.group(3)))
    if "$" in left + right:
        return None
    return (left == right) == (m.group(2) == "=")


def _live_ranges(text: str, values: dict[str, str]) -> list[tuple[int, int]]:
    """The spans of a RUN's text that upstream's default arm64 build executes: the branches of `if [ ... ]`
    tests that the known values decide the other way are cut out (unknown tests keep both branches)."""
    dead: list[tuple[int, int]] = []
    stack: list[tuple[bool | None, int, bool]] = []  # (condition, start of the live part, in else)
    for m in re.finditer(r"\bif\s+(\[[^\]]*\])\s*;?\s*then\b|\bif\b|\belse\b|\belif\b|\bfi\b", text):
        word = m.group(0).split()[0]
        if word == "if":
            cond = _condition(m.group(1), values) if m.group(1) else None
            stack.append((cond, m.end(), False))
        elif word in ("else", "elif") and stack:
            cond, start, _ = stack.pop()
            if cond is False:
                dead.append((start, m.start()))
            stack.append((cond, m.end(), True))
        elif word == "fi" and stack:
            cond, start, in_else = stack.pop()
            if (cond is False and not in_else) or (cond is True and in_else):
                dead.append((start, m.start()))
    return dead


def _assignments(text: str, values: dict[str, str]) -> dict[str, str]:
    """NAME=value shell assignments of a RUN (the first reachable one wins), expanded."""
    found: dict[str, str] = {}
    for m in re.finditer(r'(?:^|[\s;&(])([A-Z][A-Z0-9_]*)=("[^"]*"|\'[^\']*\'|\$\([^()]*\)|[^\s;&|)]+)', text):
        if m.group(1) not in found:
            found[m.group(1)] = _expand(m.group(2).strip('"').strip("'"), {**values, **found})
    return found


_PIP_OPTIONS_WITH_VALUE = {"--extra-index-url", "--index-url", "-i", "--python", "-c", "--constraint",
                           "--override", "--index-strategy", "--link-mode"}


def _words_after(command: str, text: str) -> list[tuple[str, int]]:
    """The words following each `command` in text, up to the shell operator that ends it, with their offsets
    (a `$(...)` and a quoted string are part of a word, never an end)."""
    masked = re.sub(r"\$\([^()]*\)|\"[^\"]*\"|'[^']*'", lambda m: "x" * len(m.group(0)), text)
    out = []
    end = re.compile(r"&&|\|\||\||;|\)|$")
    for m in re.finditer(command, masked):
        stop = end.search(masked, m.end()).start()
        for w in re.finditer(r"\S+", masked[m.end():stop]):
            out.append((text[m.end() + w.start():m.end() + w.end()], m.end() + w.start()))
    return out


def read_dockerfile(sdist: Path, what: str) -> tuple[str, list[str], dict[str, tuple[str, int, int]], dict[str, str]]:
    """The release's docker/Dockerfile: (text, lines, its stages, the values its shell sees in upstream's default
    arm64 build: ARG defaults, versions.json, ASSUMED; an ARG without a default is empty)."""
    path = sdist / "docker" / "Dockerfile"
    if not path.is_file():
        raise UpstreamError(f"the sdist has no docker/Dockerfile: {what} cannot be read")
    text = path.read_text()
    args = {k: p.value for k, p in docker_args(sdist).items()}
    bare = {m.group(1): "" for m in re.finditer(r"(?m)^ARG\s+(\w+)\s*$", text)}
    return text, text.splitlines(), _stages(text), {**bare, **args, **ASSUMED}


def final_stage_installs(sdist: Path) -> list[FinalInstall]:
    """Every install of the release's own final image (docker/Dockerfile: vllm-openai and the stages it is
    built on), as its default linux/arm64 build runs them: pip packages (with their pins and extras), apt
    packages, the built extensions it copies in (DeepEP with NVSHMEM: the ep_kernels step) and the packages it
    downloads (gdrcopy). Branches the default build does not take (nightly torch, INSTALL_KV_CONNECTORS=false,
    x86_64) are left out."""
    text, lines, stages, values = read_dockerfile(sdist, "its final image")
    chain, name = [], FINAL_TARGET
    while name in stages:
        chain.append(name)
        name = stages[name][0]
    if not chain:
        raise UpstreamError(f"docker/Dockerfile has no `{FINAL_TARGET}` stage: not a layout this reader knows")
    found: dict[str, FinalInstall] = {}

    def add(item: FinalInstall) -> None:
        found.setdefault(item.key, item)

    for stage in reversed(chain):
        _, first, last = stages[stage]
        for line, instr, body in _instructions(lines, first, last):
            if instr != "RUN":
                continue
            origin = f"docker/Dockerfile:{line}"
            body = re.sub(r"\b(?:ba)?sh\s+-c\s+'([^']*)'", r"\1", body)  # a `sh -c '...'` step: its script
            local = {**values, **_assignments(body, values)}
            dead = _live_ranges(body, local)
            live = lambda at: not any(a <= at < b for a, b in dead)  # noqa: E731
            for word, at in _words_after(r"\bapt-get\s+install\b", body):
                package = _expand(word.strip('"').split("=")[0], local)  # `libnccl-dev=${NCCL_VER}`: the package
                if not live(at) or package.startswith("-") or "$" in package:
                    continue
                add(FinalInstall(package, "apt", package, origin))
            skip = False
            for word, at in _words_after(r"\bpip\s+install\b", body):
                if skip:
                    skip = False
                    continue
                if not live(at):
                    continue
                if word in _PIP_OPTIONS_WITH_VALUE:
                    skip = True
                    continue
                if word.startswith("-"):  # an option (-r's file comes next, as the .txt below)
                    continue
                spec = _expand(word.strip('"').strip("'"), local)
                if spec.startswith("$"):
                    continue  # a nightly's `$(cat torch_lib_versions.txt)`: not the default build
                if "$" in spec:  # a pin computed at build time ("NAME==${VERSION_OF_WHAT_IS_INSTALLED}")
                    spec = word.strip('"').strip("'")
                if spec.endswith(".whl"):
                    kind_key = ("deepep", "build") if "ep_kernels" in spec else \
                        ("deepgemm", "build") if "deepgemm" in spec else ("vllm", "build")
                    add(FinalInstall(kind_key[0], kind_key[1], spec, origin))
                elif spec.endswith(".txt"):
                    add(FinalInstall("requirements/" + spec.rsplit("/", 1)[-1].replace("requirements-", ""),
                                     "pip", "-r " + spec, origin))
                else:
                    req = re.match(r"^([A-Za-z0-9_.-]+)", spec)
                    if req:
                        add(FinalInstall(canonicalize_name(req.group(1)), "pip", spec, origin))
            if "install_gdrcopy.sh" in body:
                add(FinalInstall("gdrcopy", "download", "tools/install_gdrcopy.sh", origin,
                                 _gdrcopy_details(sdist, local, origin)))
    if "deepep" in found:
        found["deepep"] = FinalInstall("deepep", "build", found["deepep"].spec, found["deepep"].origin,
                                       _deepep_details(sdist, text, values))
    return list(found.values())  # in the Dockerfile's order


def script_default(sdist: Path, script: str, name: str) -> tuple[str, str]:
    """(default, file:line) of `NAME=${NAME:-"default"}` in one of the release's tools/ scripts."""
    path = sdist / script
    if not path.is_file():
        raise UpstreamError(f"the sdist has no {script} (its final image runs it): re-fetch the sdist "
                            "(the cache predates reading it)")
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = re.match(rf'^\s*{name}="?\$\{{\w+:-"?([^"}}]+)"?\}}', line)
        if m:
            return m.group(1), f"{script}:{n}"
    raise UpstreamError(f"{script} sets no default {name}")


def _deepep_details(sdist: Path, text: str, values: dict[str, str]) -> tuple[tuple[str, str, str], ...]:
    """DeepEP's repository, ref and arch list, and the NVSHMEM it is built with (the ep_kernels build step)."""
    ref = values.get("DEEPEP_COMMIT_HASH", "")
    ref_at = f"docker/Dockerfile:{_line_of(text, 'ARG DEEPEP_COMMIT_HASH=')}"
    if not ref:
        ref, ref_at = script_default(sdist, EP_KERNELS_SCRIPT, "DEEPEP_COMMIT_HASH")
    nvshmem, nvshmem_at = values.get("NVSHMEM_VER", ""), f"docker/Dockerfile:{_line_of(text, 'ARG NVSHMEM_VER')}"
    if not nvshmem:
        nvshmem, nvshmem_at = script_default(sdist, EP_KERNELS_SCRIPT, "NVSHMEM_VER")
    script = (sdist / EP_KERNELS_SCRIPT).read_text()
    repo = re.search(r'"(https://github\.com/[^"\s]+/DeepEP)(?:\.git)?"', script)
    if not repo:
        raise UpstreamError(f"{EP_KERNELS_SCRIPT} names no DeepEP repository")
    # The arch list the ep_kernels step exports (the one before its script runs).
    step = text.find("/tmp/install_python_libraries.sh \\")
    arches = list(re.finditer(r"TORCH_CUDA_ARCH_LIST='([^']+)'", text[:step if step > 0 else len(text)]))
    arch, arch_at = (arches[-1].group(1), text.count("\n", 0, arches[-1].start()) + 1) if arches else ("", 0)
    return (("repo", repo.group(1) + ".git", f"{EP_KERNELS_SCRIPT}:{_line_of(script, repo.group(1))}"),
            ("ref", ref, ref_at), ("nvshmem", nvshmem, nvshmem_at), ("arch_list", arch, f"docker/Dockerfile:{arch_at}"))


GDRCOPY_URL = ("https://developer.download.nvidia.com/compute/redist/gdrcopy/CUDA%20{cuda}/{os_lower}/{arch}/"
               "libgdrapi_{version}_{deb_arch}.{os}.deb")


def _gdrcopy_details(sdist: Path, values: dict[str, str], origin: str) -> tuple[tuple[str, str, str], ...]:
    """The libgdrapi .deb tools/install_gdrcopy.sh downloads for the image's arch (its version, its URL)."""
    version, at = script_default(sdist, GDRCOPY_SCRIPT, "GDRCOPY_PKG_VER")
    os_ver, cuda = values.get("GDRCOPY_OS_VERSION", ""), values.get("GDRCOPY_CUDA_VERSION", "")
    if not os_ver or not cuda:
        raise UpstreamError("docker/Dockerfile installs gdrcopy without GDRCOPY_OS_VERSION / GDRCOPY_CUDA_VERSION")
    url = GDRCOPY_URL.format(cuda=cuda, os_lower=os_ver.lower(), arch="aarch64", version=version, deb_arch="arm64",
                             os=os_ver)
    return (("version", version, at), ("url", url, f"{GDRCOPY_SCRIPT} + {origin} (GDRCOPY_CUDA_VERSION {cuda}, "
                                                    f"GDRCOPY_OS_VERSION {os_ver}, arm64)"))
