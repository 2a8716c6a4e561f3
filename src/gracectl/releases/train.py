"""The release train: `gracectl release new VERSION` and `gracectl release check [NAME...]`.

A release's pins are DERIVED from its own sources on the site's package index (gracectl.releases.upstream reads the
sdist; adapters.package_index fetches it and the metadata of what it pins), never typed by hand:

  derive(version)  -> the tfa manifest's data + where each value came from (gracectl.releases.derive)
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

import ast
import importlib.util
import re
import shutil
import sys
import tempfile
import textwrap
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from gracectl.adapters import proc
from gracectl.adapters.registry import open_registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.package_index import PackageIndex, cache_key, default_cache, resolve, without_userinfo
from gracectl.errors import CommandFailedError, GraceError, ReleaseCheckError, UpstreamError, UsageError
from gracectl.image_ref import ImageRef
from gracectl.releases.manifest import Manifest, TAG_RE, load_manifest, load_release, release_names, releases_dir
from gracectl.releases.mirrors import NO_MIRROR, Mirror, load_mirror
from gracectl.checkout import JENKINSFILE, REPO_ROOT, SMOKE_TESTS
from gracectl.releases.upstream_build import has_file
from gracectl.releases.derive import NOT_REVIEWED, UBUNTU_GLIBC, Choices, Derived, derive

CONTRACT_MODULE = SMOKE_TESTS / "triton_kernels_contract.py"
# Build-time scripts that import a package the release pins: checked against that package's wheel before a build.
PREFETCH_SCRIPT = REPO_ROOT / "vllm" / "flashinfer-prefetch.py"
# Paths a site chooses: never drift. Everything else in a manifest is derived and compared.
CHOSEN = ("schema_version", "extends", "provenance", "release.", "build.", "base.build.image", "base.build.digest",
          "base.runtime.image", "base.runtime.digest", "python.index_url", "python.overrides",
          "flashinfer.cubins_url", "sources.vllm.build", "sources.vllm.version", "sources.triton.build")



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


# What this image does about an upstream final-stage install is the site's decision (releases.derive's rule
# when written); what upstream installs (kind, spec, pins) is derived and compared.
EXTRA_DECISIONS = (".install", ".covered", ".excluded")


STEP_DECISIONS = (".done", ".excluded")


def _chosen(path: str) -> bool:
    return (any(path == c or path.startswith(c) for c in CHOSEN) or path.endswith(".commit")
            or (path.startswith("runtime_extras.") and path.endswith(EXTRA_DECISIONS))
            or (path.startswith("build_steps.") and path.endswith(STEP_DECISIONS)))


def _ledger_lines(table: str, d: Derived, have: dict, missing: tuple[str, str, str], fix: str) -> list[Line]:
    """Per entry upstream has in a ledger table ([runtime_extras], [build_steps]): one the manifest has no entry for
    fails (`missing`: its status, what upstream does, what the manifest would do), and so does an exclusion left
    "not reviewed"."""
    lines = []
    for key, entry in sorted(d.data.get(table, {}).items()):
        if key not in have:
            kind = f"{entry['kind']}, " if "kind" in entry else ""
            lines.append(Line(missing[0], f"{table}.{key}", f"{missing[1]} {entry['upstream']} ({kind}"
                              f"{d.provenance.get(f'{table}.{key}.upstream', '?')}); the manifest neither "
                              f"{missing[2]} nor excludes it"))
    for key, entry in sorted(have.items()):
        if entry.excluded.startswith(NOT_REVIEWED):
            lines.append(Line("FAIL", f"{table}.{key}", f"{entry.upstream}: {entry.excluded}: {fix}"))
    return lines


def _steps_lines(m: Manifest, d: Derived) -> list[Line]:
    """Per step of upstream's image build: the ledger's rules (releases.derive.STEPS_DONE / STEPS_EXCLUDED), and a
    decision naming a file (in backquotes) that this release does not have fails: its reason is no longer true."""
    lines = _ledger_lines("build_steps", d, m.build_steps, ("FAIL", "upstream's build runs", "does"),
                          "do it in a stage or exclude it with a reason (releases.derive.STEPS_EXCLUDED)")
    for key, step in sorted(m.build_steps.items()):
        for named in re.findall(r"`([^`\s]+)`", step.done or step.excluded):
            if not has_file(d.sdist, named):
                lines.append(Line("FAIL", f"build_steps.{key}", f"the reason names `{named}`, which vllm "
                                  f"{d.version} does not have: the reason is no longer true"))
    return lines


def _extras_lines(m: Manifest, d: Derived) -> list[Line]:
    """Per upstream final-stage install: the ledger's rules (releases.derive.EXTRAS_*); a missing one is drift."""
    return _ledger_lines("runtime_extras", d, m.runtime_extras, ("DRIFT", "upstream's final image installs", "installs"),
                         "build it in a stage or exclude it with a reason (releases.derive.EXTRAS_EXCLUDED)")


@dataclass
class Line:
    status: str  # ok | DRIFT | override | chosen | FAIL
    path: str
    text: str
    missing: tuple[str, ...] = ()  # a failed pairing: the names vLLM imports that the tree lacks

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
    lines = _extras_lines(m, d) + _steps_lines(m, d)
    missing_extras = {f"runtime_extras.{k}." for k in d.data.get("runtime_extras", {}) if k not in m.runtime_extras}
    missing_extras |= {f"build_steps.{k}." for k in d.data.get("build_steps", {}) if k not in m.build_steps}
    for path in sorted(set(have) | set(want)):
        if _chosen(path) or path.startswith(tuple(missing_extras)):
            continue
        origin = d.provenance.get(path, "")
        mine, theirs = have.get(path, ""), want.get(path, "")
        if m.provenance.get(path, "").startswith("override:"):
            # d was derived with the manifest's own overrides: upstream's value is the one they replace.
            upstream = d.upstream.get(path, theirs)
            lines.append(Line("override", path, f"{mine} (upstream: {upstream or '-'}"
                              f"{', ' + d.upstream_origin[path] if path in d.upstream_origin else ''}; "
                              f"{m.provenance[path]})"))
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
        raise UpstreamError(f"offline: the triton_kernels tree {repo}@{ref} is not in the cache {cache}: give the "
                            f"tree with --triton-kernels-tree {ref}=DIR, or run once without --offline")
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


def tree_name(ref: str) -> str:
    """A triton_kernels tree as people know it: by the Triton release of its tag (never by the layout vLLM's
    get_triton_kernels_version() detects: a 3.7.1 tree without matmul_ogs reads as its "3.8")."""
    return f"the triton_kernels of Triton {ref[1:]} (tag {ref})" if TAG_RE.match(ref) else \
        f"the triton_kernels at {ref}"


def missing_names(sdist: Path, tree: Path) -> tuple[list[str], int, str]:
    """(what vLLM (its source in the sdist) imports that the tree lacks, how many names it imports, the
    generation vLLM takes the tree for)."""
    tkc = contract_module()
    generation = tkc.tree_generation(tree)
    needed = tkc.required(tkc.derive_contract(sdist / "vllm"), generation)
    return tkc.missing_in_tree(tree, needed), sum(len(v) or 1 for v in needed.values()), generation


def pairing(sdist: Path, tree: Path, what: str, ref: str) -> Line:
    """Would vLLM import everything it needs from this triton_kernels tree (of `ref`)?"""
    missing, count, generation = missing_names(sdist, tree)
    if missing:
        return Line("FAIL", f"pairing.{what}", f"vLLM would log 'Failed to import Triton kernels' or hit "
                    f"'cannot import name' with {tree_name(ref)} from {tree}: missing " + "; ".join(missing),
                    tuple(missing))
    return Line("ok", f"pairing.{what}", f"{tree_name(ref)}: all {count} names vLLM imports are there (vLLM reads "
                f"it as generation {generation}; {tree})")


# --- build-time imports ----------------------------------------------------------------------------------------


def imported_names(script: Path, package: str) -> dict[str, list[str]]:
    """module -> the names a script imports from `package` (`from package.mod import a, b`)."""
    found: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            found.setdefault(node.module, []).extend(a.name for a in node.names)
    return found


def defined_names(source: str) -> set[str]:
    """What a module defines at its top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def missing_api(script: Path, package: str, files: dict[str, bytes]) -> list[str]:
    """"module.name" for each name the script imports that the package's files (a wheel's) do not define."""
    missing = []
    for module, names in imported_names(script, package).items():
        base = module.replace(".", "/")
        source = files.get(f"{base}.py") or files.get(f"{base}/__init__.py")
        if source is None:
            missing.append(f"{module} (no such module)")
            continue
        have = defined_names(source.decode())
        missing += [f"{module}.{n}" for n in names if n not in have]
    return missing


def _build_imports_line(m: Manifest, index: PackageIndex) -> Line:
    """The FlashInfer prefetch (vllm/flashinfer-prefetch.py) against the FlashInfer wheel the image installs."""
    if not m.recipe.flashinfer_prefetch:
        return Line("ok", "build_imports.flashinfer", "not run: this release's own image fetches no TRTLLM "
                    "headers, nor does this one")
    version = m.overridden("flashinfer-python") or m.flashinfer.version
    if index.offline:
        return Line("skipped", "build_imports.flashinfer", "offline: reading flashinfer-python's wheel needs the index")
    files: dict[str, bytes] = {}
    wheel = ""
    for module in imported_names(PREFETCH_SCRIPT, "flashinfer"):
        for member in (f"{module.replace('.', '/')}.py", f"{module.replace('.', '/')}/__init__.py"):  # not the tree
            wheel, got = index.wheel_files("flashinfer-python", version, member, platform="any")
            files.update(got)
    missing = missing_api(PREFETCH_SCRIPT, "flashinfer", files)
    if missing:
        return Line("FAIL", "build_imports.flashinfer", f"vllm/flashinfer-prefetch.py imports {', '.join(missing)}, "
                    f"which {wheel} does not have: the build would fail at that step")
    return Line("ok", "build_imports.flashinfer", f"every name vllm/flashinfer-prefetch.py imports is in {wheel}")


# --- the operations -------------------------------------------------------------------------------------------


def check_release(m: Manifest, index: PackageIndex, *, mirror: Mirror = NO_MIRROR, resolve_set: bool = True,
                  trees: dict[str, Path] | None = None, resolved: Resolved | None = None) -> Report:
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
        report.lines.append(pairing(d.sdist, found, f"{what} {src.ref}", src.ref))
    except UpstreamError as exc:
        report.lines.append(Line("FAIL", f"pairing.{what}", str(exc)))
    except (ValueError, SyntaxError, OSError) as exc:  # a vLLM generation the contract does not know, a bad tree
        report.lines.append(Line("FAIL", f"pairing.{what}", f"cannot read the pairing: {type(exc).__name__}: {exc}"))
    try:
        report.lines.append(_build_imports_line(m, index))
    except UpstreamError as exc:
        report.lines.append(Line("FAIL", "build_imports.flashinfer", str(exc)))
    if resolve_set:
        report.lines.append(_resolve_line(m, d, mirror, index, resolved))
    return report


def mirrored_requirements(sdist: Path, mirror: Mirror, dest: Path) -> Path:
    """A copy of the release's requirements/ whose `--extra-index-url` lines name the site's mirror of each index
    (uv reads them from the file: unmapped, it would reach for the upstream index itself)."""
    shutil.copytree(sdist / "requirements", dest, dirs_exist_ok=True)
    for path in dest.rglob("*.txt"):
        text = path.read_text()
        fixed = re.sub(r"(?m)^(\s*--extra-index-url[=\s]+)(\S+)", lambda m: m.group(1) + mirror.index(m.group(2)), text)
        if fixed != text:
            path.write_text(fixed)
    return dest / "cuda.txt"


def resolve_advice(reason: str, version: str) -> str:
    """What to do about a failed resolution, by its cause."""
    if re.search(r"Failed to fetch|dns error|Connect|connection|timed out|HTTP status server error", reason, re.I):
        return ("an index cannot be reached: map it to the site's mirror in the --mirror file's [indexes] "
                "(python.extra_index_urls names what the release adds), or check the network")
    if re.search(r"no version of|not found in the package registry|there is no version", reason, re.I):
        return (f"a pinned version is not on the index: mirror it, or override it with a reason: gracectl release "
                f"new {version} --override NAME==VERSION --reason '...'")
    return ("the pins conflict with each other (drift between the release's files?): see uv's explanation; "
            f"gracectl release new {version} --override NAME==VERSION --reason '...' pins one")


# A requirement set already resolved in this run -> (the manifest that resolved it, its line): a fallback
# resolves exactly its tfa manifest's set (~13 s each), so `release check` and `release new` resolve it once.
Resolved = dict[tuple, tuple[str, Line]]


def _resolve_line(m: Manifest, d: Derived, mirror: Mirror, index: PackageIndex,
                  resolved: Resolved | None = None) -> Line:
    if index.offline:
        return Line("skipped", "resolve", "offline: resolving needs the package index")
    torch = [f"{k}=={mirror.version(getattr(m.torch, key))}" for k, key in
             (("torch", "version"), ("torchvision", "torchvision"), ("torchaudio", "torchaudio"))]
    extra = [mirror.index(m.torch.index_url)] if m.torch.index_url != m.python.index_url else []
    glibc = UBUNTU_GLIBC.get(m.base.runtime.tag.rpartition("ubuntu")[2], "2_28")
    python = mirror.python_version or m.python.version
    wanted = d.requirements + torch + m.runtime_pip_requirements()
    # Everything uv is given (the requirement files are the sdist's, mirrored the same way for both).
    key = (tuple(wanted), mirror.index(m.python.index_url), tuple(extra), python, tuple(m.python.overrides), glibc,
           tuple(sorted(mirror.indexes.items())))
    if resolved is not None and key in resolved:
        by, line = resolved[key]
        return Line(line.status, "resolve", f"{line.text} (the same requirement set as {by}: its resolution reused)")
    with tempfile.TemporaryDirectory() as tmp:
        cuda = mirrored_requirements(d.sdist, mirror, Path(tmp) / "requirements")
        requirements = [f"-r {cuda}" if r == f"-r {d.sdist / 'requirements' / 'cuda.txt'}" else r for r in wanted]
        try:
            pins = resolve(requirements, index_url=mirror.index(m.python.index_url), extra_index_urls=extra,
                           python=python, overrides=m.python.overrides,
                           platform=f"aarch64-manylinux_{glibc}", cache=index.cache / "uv")
            mapped = [t for t, p in zip(torch, (m.torch.version, m.torch.torchvision, m.torch.torchaudio))
                      if not t.endswith(f"=={p}")]
            stand_in = f"; STAND-IN {', '.join(mapped)}: {mirror.versions_reason}" if mapped else ""
            line = Line("ok", "resolve", f"{len(pins)} packages resolve for linux/aarch64 (glibc "
                        f"{glibc.replace('_', '.')}), Python {python}{stand_in}")
        except UpstreamError as exc:
            line = Line("FAIL", "resolve", f"{exc} ({resolve_advice(str(exc), d.version)})")
    if resolved is not None:
        resolved[key] = (m.release.name, line)
    return line


def release_pair(version: str) -> tuple[str, str]:
    return f"v{version}-tfa", f"v{version}"


def _head(d: Derived, choices: Choices) -> str:
    return (f"# Written by `gracectl release new {d.version}` from vllm-{d.version}.tar.gz on {choices.index_url}:\n"
            "# every pin's origin is in [provenance]; `gracectl release check` re-derives them and reports drift.\n")


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
    head = _head(d, choices)
    data = {**d.data, "release": tfa_release, "provenance": dict(sorted(d.provenance.items()))}
    fb = {"schema_version": 1, "extends": tfa, "release": fb_release}
    fb_head = (f"# The working fallback of {tfa}: the same pins, vLLM's own vendored triton_kernels only.\n" + head)
    return (f"# vLLM {d.version} for GH200 with the triton_kernels of its Triton in site-packages.\n" + head
            + to_toml(data), fb_head + to_toml(fb))


def pin_base_digests(d: Derived, mirror: Mirror, access: RegistryAccess, on_line=print) -> None:
    """The CUDA base images' digests, read through the site's mirror of each (a mirror copies an image with its
    manifest, so the digest is upstream's); where that cannot be done the base stays pinned by tag, said here and
    by `plan`."""
    for kind, base in d.data["base"].items():
        upstream = f"{base['image']}:{base['tag']}"
        there = mirror.image(upstream)
        if mirror.standin_images:
            why = f"the mirror's {there} is a STAND-IN (its digest is not upstream's)"
        else:
            try:
                ref = ImageRef.parse(there)
                found = open_registry(ref, access).head_manifest(ref.repository, ref.tag)
                why = "" if found else f"{there}: no such tag"
            except GraceError as exc:
                found, why = None, str(exc)
            if found:
                base["digest"] = found.digest
                d.provenance[f"base.{kind}.digest"] = f"resolved through the mirror: {there}"
                continue
        on_line(f"base.{kind}: {upstream} pinned by tag only (digest not resolved: {why}); `gracectl plan` names it")


def render_fallback_only(d: Derived, choices: Choices, no_tfa: str) -> str:
    """The fallback as a manifest of its own (no tfa twin to extend): every pin, vLLM's vendored triton_kernels
    only; why there is no tfa image is kept in [provenance] (release.triton_kernels) and said on top."""
    _, fallback = release_pair(d.version)
    release = {"name": fallback, "description": f"vLLM v{d.version} for GH200, vendored triton_kernels "
               f"{d.vendored.ref} only: no tfa image ({choices.platform}, sm_90a)", "image": choices.fallback_image,
               "tag": fallback, "fallback": "", "platform": choices.platform, "triton_kernels": "vendored"}
    provenance = dict(sorted({**d.provenance, "release.triton_kernels": no_tfa}.items()))
    head = "".join(f"# {line}\n" for line in textwrap.wrap(f"FALLBACK ONLY: {no_tfa}", 112))
    return head + _head(d, choices) + to_toml({**d.data, "release": release, "provenance": provenance})


@dataclass
class Written:
    """What `release new` wrote: both manifests, or the fallback alone where no tfa image can work."""

    paths: list[Path]
    no_tfa: str = ""  # fallback only: why (which names vLLM imports, which Triton's triton_kernels lacks them)
    missing: tuple[str, ...] = ()
    triton_kernels: str = ""  # the tree the tfa image would have installed, by its Triton release


def _tfa_impossible(tfa: Report, choices: Choices) -> Line | None:
    """The tfa manifest's failed pairing when it is its only failure, with the DERIVED tree (the triton_kernels of
    the image's own Triton: a chosen --triton-kernels-ref that fails is the chooser's to fix, never a fallback)."""
    failed = tfa.failed
    if choices.triton_kernels_ref or len(failed) != 1 or not failed[0].missing:
        return None
    return failed[0] if failed[0].path.startswith("pairing.site-packages") else None


def new_release(version: str, index: PackageIndex, choices: Choices, directory: Path | None = None, *,
                mirror: Mirror = NO_MIRROR, trees: dict[str, Path] | None = None, force: bool = False,
                dry_run: bool = False, on_line=print, resolved: Resolved | None = None,
                access: RegistryAccess | None = None) -> Written:
    """Derive, check (pairing, resolution), then write releases/v<V>-tfa.toml and v<V>.toml and the Jenkinsfile's
    release choices. Nothing is written when a check fails, except where the only failure is that vLLM cannot
    work with the triton_kernels of its own Triton: then the fallback alone (v<V>.toml, standalone), said plainly.
    `dry_run` prints the manifests instead of writing."""
    directory = directory or releases_dir()
    names = release_pair(version)
    paths = [directory / f"{n}.toml" for n in names]
    existing = [p for p in paths if p.exists()]
    if existing and not force and not dry_run:
        raise UsageError(f"{existing[0]} exists: `gracectl release check {names[0]}` compares it with upstream; "
                         "--force rewrites it")
    d = derive(index, version, choices)
    if access is not None:
        pin_base_digests(d, mirror, access, on_line)
    texts = render(d, choices)
    resolved = {} if resolved is None else resolved  # the fallback's set is the tfa's: resolved once
    written = Written(paths)
    with tempfile.TemporaryDirectory() as tmp:
        for path, text in zip(paths, texts):
            (Path(tmp) / path.name).write_text(text)
        manifests = [load_manifest(Path(tmp) / p.name) for p in paths]  # the schema accepts what we write
        reports = []
        for m in manifests:
            reports.append(check_release(m, index, mirror=mirror, trees=trees, resolved=resolved))
            for line in reports[-1].lines:
                if line.status != "ok" or line.path.startswith(("pairing", "resolve")):
                    on_line(f"{m.release.name}: {line}")
        failed = reports[0].failed + reports[1].failed
        impossible = _tfa_impossible(reports[0], choices)
        if impossible and not reports[1].failed:
            tree = tree_name(manifests[0].sources.triton_kernels.ref)
            names_missing = tuple(n.split(" (")[0] for n in impossible.missing)
            written = Written(paths[1:], f"vLLM {version} imports {', '.join(names_missing)}; {tree}, the Triton "
                              "its torch requires, has none of them: no tfa image can work, so the fallback (vendored "
                              f"triton_kernels {d.vendored.ref}) only. A tfa image for a site that wants one is a "
                              f"reviewed override: gracectl release new {version} --triton-kernels-ref REF --reason "
                              "'...'", names_missing, tree)
            texts = (render_fallback_only(d, choices, written.no_tfa),)
            (Path(tmp) / paths[1].name).write_text(texts[0])
            load_manifest(Path(tmp) / paths[1].name)  # the schema accepts it too
            on_line(f"{names[1]}: FALLBACK ONLY: {written.no_tfa}")
            failed = []
        if dry_run:
            for path, text in zip(written.paths, texts):
                on_line(f"# ---- {path.name} (not written: --print)\n{text}")
        if failed:
            raise ReleaseCheckError(f"vllm {version}: {failed[0].path}: {failed[0].text} (nothing written)")
        if dry_run:
            return Written([], written.no_tfa, written.missing, written.triton_kernels)
        paths = written.paths
        directory.mkdir(parents=True, exist_ok=True)
        if JENKINSFILE.is_file():
            jenkins_release_choices(JENKINSFILE.read_text())  # fails here, before anything is written
        partials = [path.with_name(path.name + ".partial") for path in paths]
        for partial, text in zip(partials, texts):  # both written before either replaces a manifest
            partial.write_text(text)
        for partial, path in zip(partials, paths):
            partial.replace(path)
        if written.no_tfa:  # a tfa manifest of an earlier --force run would now extend nothing
            (directory / f"{names[0]}.toml").unlink(missing_ok=True)
    sync_jenkinsfile(directory)
    return written


def check_releases(names: list[str], cache: Path, *, index_url: str = "", offline: bool = False,
                   mirror: Mirror = NO_MIRROR, resolve_set: bool = True, trees: dict[str, Path] | None = None,
                   directory: Path | None = None, resolved: Resolved | None = None) -> list[Report]:
    """Each manifest checked against its own index (its python.index_url through the mirror), unless one is given."""
    reports, resolved = [], {} if resolved is None else resolved
    for name in names or ordered_releases(release_names(directory)):  # each tfa before its fallback
        m = load_release(name, directory)
        index = PackageIndex((index_url or mirror.sources_index_for(m.python.index_url)).rstrip("/"), cache, offline)
        reports.append(check_release(m, index, mirror=mirror, resolve_set=resolve_set, trees=trees,
                                     resolved=resolved))
    return reports


def check_before_build(release: str, *, vllm_ref: str = "", mirror_file: str = "", upstream_cache: str = "") -> None:
    """The manifest's pins re-derived from its release's sources and its triton_kernels pairing, in seconds,
    before a 40-minute build (resolving the full requirement set is `gracectl release check`'s, run by CI).
    The pipeline's plan stage runs it."""
    m = load_release(release)
    if vllm_ref and vllm_ref != m.sources.vllm.ref:
        # Another vLLM than the manifest's: a release tag is checked as that release; a commit has no sdist.
        if not TAG_RE.match(vllm_ref):
            print(f"release check {release}: skipped: VLLM_REF {vllm_ref} is a commit (no release sources to "
                  "check against; the build's own FETCHCONTENT_FULLY_DISCONNECTED and smoke levels still gate it)",
                  file=sys.stderr)
            return
        m = m.model_copy(update={"sources": m.sources.model_copy(
            update={"vllm": m.sources.vllm.model_copy(update={"ref": vllm_ref, "version": ""})})})
    mirror = load_mirror(Path(mirror_file) if mirror_file else None)
    index = PackageIndex(mirror.sources_index_for(m.python.index_url),
                         Path(upstream_cache) if upstream_cache else default_cache())
    report = check_release(m, index, mirror=mirror, resolve_set=False)
    for line in report.lines:
        if line.status != "ok" or line.path.startswith("pairing"):
            print(f"release check {release}: {line}", file=sys.stderr)
    if report.failed:
        raise ReleaseCheckError(f"{release}: {report.failed[0].path}: {report.failed[0].text} (`gracectl release "
                                f"check {release}` lists every line; nothing was built)")


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
    text = jenkinsfile.read_text()
    new = with_release_choices(text, release_names(directory))
    if new != text:
        partial = jenkinsfile.with_name(jenkinsfile.name + ".partial")
        partial.write_text(new)
        partial.replace(jenkinsfile)
    return new != text


def with_release_choices(text: str, names: list[str]) -> str:
    """The Jenkinsfile's text with its RELEASE choices set to `names` (newest first, each tfa before its fallback)."""
    jenkins_release_choices(text)
    listed = ", ".join(f"'{n}'" for n in ordered_releases(names))
    return _CHOICE_LINE.sub(lambda m: m.group(1) + "[" + listed + "]", text)


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
