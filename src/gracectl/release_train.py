"""The release train: `gracectl release new VERSION` and `gracectl release check [NAME...]`.

A release's pins are DERIVED from its own sources on the site's package index (gracectl.upstream reads the
sdist; adapters.package_index fetches it and the metadata of what it pins), never typed by hand:

  derive(version)  -> the tfa manifest's data + where each value came from ([provenance])
  new_release      -> releases/v<V>-tfa.toml and its fallback releases/v<V>.toml (`extends` the tfa one),
                      after the checks below pass; the Jenkinsfile's RELEASE choices follow releases/
  check_release    -> every derived pin of a manifest against upstream (drift, one line each), the requirement set
                      resolved for linux/aarch64 (uv), the triton_kernels pairing (the names vLLM imports, read
                      from its source, against the tree the image installs): all before a 40-minute build

What a site CHOOSES (image names, the CUDA base image's registry and Ubuntu, arch list, jobs) is taken from
`Choices` (defaults: this project's) and, for `check`, from the manifest itself; an `override:` in [provenance]
is a deliberate difference from upstream, reported but not drift.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement

from gracectl.adapters import proc
from gracectl.adapters.package_index import PackageIndex, cache_key, resolve, without_userinfo
from gracectl.errors import CommandFailedError, ReleaseCheckError, UpstreamError, UsageError
from gracectl.manifest import Manifest, TAG_RE, load_manifest, load_release, release_names, releases_dir
from gracectl.mirrors import NO_MIRROR, Mirror
from gracectl.upstream import DEEPGEMM_REPO, FetchSource, docker_args, dockerfile_installs, fetch_sources, \
    requirement_pins

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACT_MODULE = REPO_ROOT / "smoke_tests" / "triton_kernels_contract.py"
JENKINSFILE = REPO_ROOT / "Jenkinsfile"
TRITON_REPO = "https://github.com/triton-lang/triton.git"
TRITON_KERNELS_SUBDIR = "python/triton_kernels"
PYTORCH_INDEX = "https://download.pytorch.org/whl/cu{cu}"
FLASHINFER_INDEX = "https://flashinfer.ai/whl/cu{cu}"
FLASHINFER_CUBINS = "https://edge.urm.nvidia.com/artifactory/sw-kernelinferencelibrary-public-generic-local/"
# The CUDA pieces vLLM's own final stage keeps for runtime JIT (FlashInfer, DeepGEMM, Triton) and NCCL's
# allocator (nccl.h); the names carry the CUDA version. (Issue 21 derives the rest of the final stage.)
CUDA_RUNTIME_TEMPLATE = ("cuda-nvcc-{v}", "cuda-cudart-{v}", "cuda-nvrtc-{v}", "cuda-cuobjdump-{v}",
                         "libcurand-dev-{v}", "libcublas-{v}", "libnccl-dev")
# The glibc of the base image's Ubuntu: the newest manylinux wheels the image can install.
UBUNTU_GLIBC = {"20.04": "2_31", "22.04": "2_35", "24.04": "2_39"}
# Paths a site chooses: never drift. Everything else in a manifest is derived and compared.
CHOSEN = ("schema_version", "extends", "provenance", "release.", "build.", "base.build.image", "base.build.digest",
          "cuda.runtime_packages",
          "base.runtime.image", "base.runtime.digest", "python.index_url", "python.overrides",
          "flashinfer.cubins_url", "sources.vllm.build", "sources.vllm.version", "sources.triton.build")


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
    vllm_build: str = "source"
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
    tk_origin = (f"override: {choices.triton_kernels_reason}" if choices.triton_kernels_ref
                 else f"the triton_kernels of triton {triton}, which {triton_where} requires")
    sources = fetch_sources(sdist)
    by_key = {s.key: s for s in sources}
    for needed in ("flash_attn", "flashmla", "cmake.triton_kernels"):
        if needed not in by_key:
            raise UpstreamError(f"vllm {version}: its cmake fetches no {needed.removeprefix('cmake.')}: not a "
                                "layout this reader knows")
    jit = dockerfile_installs(sdist, "flashinfer-jit-cache")
    o = args["CUDA_VERSION"].origin
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
                 "runtime_packages": pin("cuda.runtime_packages",
                                         [p.format(v=cuda.replace(".", "-")) for p in CUDA_RUNTIME_TEMPLATE],
                                         f"{o} (the JIT set vLLM's own final stage installs)")},
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
    if choices.overrides:
        data["python"]["overrides"] = [o for o, _ in choices.overrides]
        for o, reason in choices.overrides:
            prov[f"python.overrides.{o.split('==')[0]}"] = f"override: {reason}"
    requirements = [f"-r {sdist / 'requirements' / 'cuda.txt'}", f"triton=={triton}"]
    return Derived(version, data, prov, sdist, requirements, by_key["cmake.triton_kernels"])


# --- comparing ------------------------------------------------------------------------------------------------


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """{"torch.version": "2.14.0", "cuda.runtime_packages": "a b c", ...}: the values a drift line compares."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "."))
        elif isinstance(value, list):
            flat[path] = " ".join(map(str, value))
        elif value not in (None, ""):
            flat[path] = str(value).lower() if isinstance(value, bool) else str(value)
    return flat


def _chosen(path: str) -> bool:
    return any(path == c or path.startswith(c) for c in CHOSEN) or path.endswith(".commit")


@dataclass
class Line:
    status: str  # ok | DRIFT | override | chosen | FAIL
    path: str
    text: str

    def __str__(self) -> str:
        return f"{self.status:<8} {self.path:<34} {self.text}"


@dataclass
class Report:
    release: str
    lines: list[Line] = field(default_factory=list)

    @property
    def failed(self) -> list[Line]:
        return [line for line in self.lines if line.status in ("DRIFT", "FAIL")]


def compare(m: Manifest, d: Derived) -> list[Line]:
    """One line per derived pin: equal (ok), different (DRIFT) or deliberately different (override)."""
    have = flatten(m.model_dump(mode="json", exclude_defaults=False))
    want = flatten(d.data)
    lines = []
    for path in sorted(set(have) | set(want)):
        if _chosen(path):
            continue
        origin = d.provenance.get(path, "")
        mine, theirs = have.get(path, ""), want.get(path, "")
        if m.provenance.get(path, "").startswith("override:"):
            lines.append(Line("override", path, f"{mine} (upstream: {theirs or '-'}; {m.provenance[path]})"))
        elif mine == theirs:
            lines.append(Line("ok", path, f"{mine}  ({origin or 'chosen'})"))
        elif not mine:
            lines.append(Line("DRIFT", path, f"upstream has {theirs} ({origin}); the manifest lacks it"))
        elif not theirs:
            lines.append(Line("DRIFT", path, f"the manifest has {mine}; upstream no longer has it"))
        else:
            lines.append(Line("DRIFT", path, f"manifest {mine}, upstream {theirs} ({origin})"))
    return lines


# --- the triton_kernels pairing ---------------------------------------------------------------------------------


def contract_module() -> ModuleType:
    """smoke_tests/triton_kernels_contract.py: THE derivation of what vLLM imports from triton_kernels (it runs
    inside the image too, so it lives with the smoke suite; loaded here by path)."""
    spec = importlib.util.spec_from_file_location("gracectl_tk_contract", CONTRACT_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def triton_kernels_tree(repo: str, ref: str, subdir: str, cache: Path, mirror: Mirror = NO_MIRROR,
                        offline: bool = False) -> Path:
    """The triton_kernels package folder at repo@ref (through the site's git mirror), fetched once into cache."""
    url, at = mirror.repo(repo), mirror.ref(ref)
    key = cache_key(f"{url}@{at}")
    dest = cache / "triton_kernels" / key
    if (dest / "__init__.py").is_file():
        return dest
    if offline:
        raise UpstreamError(f"offline: the triton_kernels tree {repo}@{ref} is not in the cache {cache}")
    subdir = subdir.strip("/")
    package = subdir if subdir.endswith("triton_kernels/triton_kernels") else \
        "/".join(p for p in (subdir, "triton_kernels") if p)
    # The same prefix rewrites fetch-source.sh applies to every git fetch of the build (GIT_URL_REWRITE).
    rewrites = [a for prefix, to in mirror.git_url_rewrite.items() for a in ("-c", f"url.{to}.insteadOf={prefix}")]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc.run(["git", "init", "-q", tmp], echo=False)
            proc.run(["git", *rewrites, "-C", tmp, "fetch", "-q", "--depth", "1", url, at], timeout=600,
                     secrets=[urllib.parse.urlsplit(url).password or ""])
            proc.run(["git", "-C", tmp, "checkout", "-q", "FETCH_HEAD", "--", package], echo=False)
        except CommandFailedError as exc:
            raise UpstreamError(f"cannot fetch triton_kernels {ref} from {without_userinfo(url)} ({exc}): give the tree with "
                                f"--triton-kernels-tree {ref}=DIR, or a --mirror that serves this repository") from None
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(tmp) / package, partial)
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest


def pairing(sdist: Path, tree: Path, what: str) -> Line:
    """Would vLLM (its source in the sdist) import everything it needs from this triton_kernels tree?"""
    tkc = contract_module()
    contract = tkc.derive_contract(sdist / "vllm")
    generation = tkc.tree_generation(tree)
    needed = tkc.required(contract, generation)
    missing = tkc.missing_in_tree(tree, needed)
    count = sum(len(v) or 1 for v in needed.values())
    if missing:
        return Line("FAIL", f"pairing.{what}", f"vLLM would log 'Failed to import Triton kernels' or hit "
                    f"'cannot import name' with triton_kernels {generation} from {tree}: missing "
                    + "; ".join(missing))
    return Line("ok", f"pairing.{what}", f"triton_kernels generation {generation}: all {count} names vLLM "
                f"imports are there ({tree})")


# --- the operations -------------------------------------------------------------------------------------------


def check_release(m: Manifest, index: PackageIndex, *, mirror: Mirror = NO_MIRROR, resolve_set: bool = True,
                  trees: dict[str, Path] | None = None) -> Report:
    """Re-derive every pin of `m` from its release's sources and check what would fail before a build."""
    version = m.sources.vllm.version or m.sources.vllm.ref.removeprefix("v")
    if not TAG_RE.match(m.sources.vllm.ref):
        raise UsageError(f"{m.release.name}: sources.vllm.ref {m.sources.vllm.ref} is a commit: release check "
                         "reads a release's sdist (pin a release tag)")
    d = derive(index, version, Choices.of(m))
    report = Report(m.release.name, compare(m, d))
    if m.with_triton_kernels:
        src, what = m.sources.triton_kernels, "site-packages"
    else:
        src, what = m.sources.cmake.get("triton_kernels") or m.sources.triton_kernels, "vendored"
    try:
        found = (trees or {}).get(src.ref) or triton_kernels_tree(src.repo, src.pin, src.subdir, index.cache, mirror,
                                                                   index.offline)
        report.lines.append(pairing(d.sdist, found, f"{what} {src.ref}"))
    except UpstreamError as exc:
        report.lines.append(Line("FAIL", f"pairing.{what}", str(exc)))
    except (ValueError, SyntaxError, OSError) as exc:  # a vLLM generation the contract does not know, a bad tree
        report.lines.append(Line("FAIL", f"pairing.{what}", f"cannot read the pairing: {type(exc).__name__}: {exc}"))
    if resolve_set:
        report.lines.append(_resolve_line(m, d, mirror, index))
    return report


def _resolve_line(m: Manifest, d: Derived, mirror: Mirror, index: PackageIndex) -> Line:
    if index.offline:
        return Line("skipped", "resolve", "offline: resolving needs the package index")
    torch = [f"{k}=={mirror.version(getattr(m.torch, key))}" for k, key in
             (("torch", "version"), ("torchvision", "torchvision"), ("torchaudio", "torchaudio"))]
    extra = [mirror.index(m.torch.index_url)] if m.torch.index_url != m.python.index_url else []
    glibc = UBUNTU_GLIBC.get(m.base.runtime.tag.rpartition("ubuntu")[2], "2_28")
    try:
        pins = resolve(d.requirements + torch, index_url=mirror.index(m.python.index_url), extra_index_urls=extra,
                       python=mirror.python_version or m.python.version, overrides=m.python.overrides,
                       platform=f"aarch64-manylinux_{glibc}", cache=index.cache / "uv")
    except UpstreamError as exc:
        return Line("FAIL", "resolve", f"{exc} (a manifest override is the way out: gracectl release new "
                    f"{d.version} --override NAME==VERSION --reason '...')")
    mapped = [t for t, p in zip(torch, (m.torch.version, m.torch.torchvision, m.torch.torchaudio))
              if not t.endswith(f"=={p}")]
    stand_in = f"; STAND-IN {', '.join(mapped)}: {mirror.versions_reason}" if mapped else ""
    return Line("ok", "resolve", f"{len(pins)} packages resolve for linux/aarch64 (glibc {glibc.replace('_', '.')}), "
                f"Python {mirror.python_version or m.python.version}{stand_in}")


def release_pair(version: str) -> tuple[str, str]:
    return f"v{version}-tfa", f"v{version}"


def render(d: Derived, choices: Choices) -> tuple[str, str]:
    """The tfa manifest and its fallback as TOML text."""
    tfa, fallback = release_pair(d.version)
    tk = d.data["sources"]["triton_kernels"]["ref"]
    tfa_release = {"name": tfa, "description": f"vLLM v{d.version} + triton_kernels {tk} for GH200 "
                   f"({choices.platform}, sm_90a)", "image": choices.tfa_image, "tag": tfa,
                   "fallback": f"{choices.fallback_image}:{fallback}", "platform": choices.platform,
                   "triton_kernels": "site-packages"}
    fb_release = {"name": fallback, "description": f"vLLM v{d.version} for GH200, working fallback (vendored "
                  f"triton_kernels {d.vendored.ref}) ({choices.platform}, sm_90a)", "image": choices.fallback_image,
                  "tag": fallback, "fallback": "", "platform": choices.platform, "triton_kernels": "vendored"}
    head = (f"# Written by `gracectl release new {d.version}` from vllm-{d.version}.tar.gz on {choices.index_url}:\n"
            "# every pin's origin is in [provenance]; `gracectl release check` re-derives them and reports drift.\n")
    data = {**d.data, "release": tfa_release, "provenance": dict(sorted(d.provenance.items()))}
    fb = {"schema_version": 1, "extends": tfa, "release": fb_release}
    fb_head = (f"# The working fallback of {tfa}: the same pins, vLLM's own vendored triton_kernels only.\n" + head)
    return (f"# vLLM {d.version} for GH200 with the triton_kernels of its Triton in site-packages.\n" + head
            + to_toml(data), fb_head + to_toml(fb))


def new_release(version: str, index: PackageIndex, choices: Choices, directory: Path | None = None, *,
                mirror: Mirror = NO_MIRROR, trees: dict[str, Path] | None = None, force: bool = False,
                dry_run: bool = False, on_line=print) -> list[Path]:
    """Derive, check (pairing, resolution), then write releases/v<V>-tfa.toml and v<V>.toml and the Jenkinsfile's
    release choices. Nothing is written when a check fails; `dry_run` prints the manifests instead of writing."""
    directory = directory or releases_dir()
    names = release_pair(version)
    paths = [directory / f"{n}.toml" for n in names]
    existing = [p for p in paths if p.exists()]
    if existing and not force and not dry_run:
        raise UsageError(f"{existing[0]} exists: `gracectl release check {names[0]}` compares it with upstream; "
                         "--force rewrites it")
    d = derive(index, version, choices)
    texts = render(d, choices)
    with tempfile.TemporaryDirectory() as tmp:
        for path, text in zip(paths, texts):
            (Path(tmp) / path.name).write_text(text)
        manifests = [load_manifest(Path(tmp) / p.name) for p in paths]  # the schema accepts what we write
        failed = []
        for m in manifests:
            report = check_release(m, index, mirror=mirror, trees=trees, resolve_set=m is manifests[0])
            for line in report.lines:
                if line.status != "ok" or line.path.startswith(("pairing", "resolve")):
                    on_line(f"{m.release.name}: {line}")
            failed += report.failed
        if dry_run:
            for path, text in zip(paths, texts):
                on_line(f"# ---- {path.name} (not written: --print)\n{text}")
        if failed:
            raise ReleaseCheckError(f"vllm {version}: {failed[0].path}: {failed[0].text} (nothing written)")
        if dry_run:
            return []
        directory.mkdir(parents=True, exist_ok=True)
        if JENKINSFILE.is_file():
            jenkins_release_choices(JENKINSFILE.read_text())  # fails here, before anything is written
        partials = [path.with_name(path.name + ".partial") for path in paths]
        for partial, text in zip(partials, texts):  # both written before either replaces a manifest
            partial.write_text(text)
        for partial, path in zip(partials, paths):
            partial.replace(path)
    sync_jenkinsfile(directory)
    return paths


def check_releases(names: list[str], cache: Path, *, index_url: str = "", offline: bool = False,
                   mirror: Mirror = NO_MIRROR, resolve_set: bool = True,
                   trees: dict[str, Path] | None = None) -> list[Report]:
    """Each manifest checked against its own index (its python.index_url through the mirror), unless one is given."""
    reports = []
    for name in names or release_names():
        m = load_release(name)
        index = PackageIndex((index_url or mirror.sources_index_for(m.python.index_url)).rstrip("/"), cache, offline)
        reports.append(check_release(m, index, mirror=mirror, resolve_set=resolve_set, trees=trees))
    return reports


# --- one owner for the list of releases ----------------------------------------------------------------------

_CHOICE_LINE = re.compile(r"(choice\(name: 'RELEASE', choices: )\[[^\]]*\]")


def jenkins_release_choices(text: str) -> list[str]:
    m = _CHOICE_LINE.search(text)
    if not m:
        raise UsageError("the Jenkinsfile has no `choice(name: 'RELEASE', choices: [...])` parameter")
    return re.findall(r"'([^']+)'", m.group(0).split("choices:", 1)[1])


def sync_jenkinsfile(directory: Path | None = None, jenkinsfile: Path = JENKINSFILE) -> bool:
    """Rewrite the Jenkinsfile's RELEASE choices from releases/ (newest first, each tfa before its fallback).
    Returns whether the file changed. releases/ is the owner; tests/unit/test_release_train.py holds the copy."""
    directory = directory or releases_dir()
    if not jenkinsfile.is_file() or directory.resolve() != (jenkinsfile.parent / "releases").resolve():
        return False  # releases kept elsewhere (GRACECTL_RELEASES_DIR) are not this Jenkinsfile's
    names = ordered_releases(release_names(directory))
    text = jenkinsfile.read_text()
    jenkins_release_choices(text)
    new = _CHOICE_LINE.sub(lambda m: m.group(1) + "[" + ", ".join(f"'{n}'" for n in names) + "]", text)
    if new != text:
        partial = jenkinsfile.with_name(jenkinsfile.name + ".partial")
        partial.write_text(new)
        partial.replace(jenkinsfile)
    return new != text


def ordered_releases(names: list[str]) -> list[str]:
    def key(name: str):
        nums = [int(x) for x in re.findall(r"\d+", name.split("-")[0])]
        return [-n for n in nums], name.endswith("-tfa") is False, name
    return sorted(names, key=key)


# --- TOML (what release new writes: tables, strings, booleans, integers, lists of strings) -------------------


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(k: str) -> str:
    return k if re.match(r"^[A-Za-z0-9_-]+$", k) else _value(k)


def to_toml(data: dict, prefix: str = "") -> str:
    scalars = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = "\n".join(scalars) + ("\n" if scalars else "")
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}{_key(k)}"
            if any(not isinstance(x, dict) for x in v.values()) or not v:
                out += f"\n[{name}]\n"
            out += to_toml(v, name + ".")
    return out
