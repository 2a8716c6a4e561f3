"""STAND-INS for the upstream inputs that cannot be had here: git repositories (vLLM, Triton incl.
python/triton_kernels, flash-attention, FlashMLA, CUTLASS, qutlass, DeepGEMM) made from scripts/testbed/standins/,
and a PEP 503 package index: stand-in wheels for what only the PyTorch and FlashInfer indexes carry (CUDA torch,
torchvision, torchaudio, flashinfer-jit-cache), next to REAL PyPI wheels (triton 3.6.0 for both arches, the
build tools, the smoke suite's needs).

The stand-in repositories get the same commits on every machine. Like upstream, their tags are fixed: BuildKit
caches a fetch by its build arguments (repository, ref), so an edit of scripts/testbed/standins/ reaches a
build only through a new ref (StandIns.add_vllm_commit, or `docker builder prune`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name as normalize  # PEP 503 names

from gracectl.adapters import proc
from gracectl.errors import GraceError, TestbedError
from gracectl.releases.manifest import load_release, release_names
from gracectl.checkout import DOCKERFILE, REPO_ROOT, SMOKE_TESTS
from gracectl.testbed.apt_standin import make_apt_repo, standin_packages
from gracectl.testbed.base_images import PYTHON_VERSION
from gracectl.testbed.progress import say
from gracectl.testbed.state import APT_STANDIN_DIR, State

STANDINS = REPO_ROOT / "scripts" / "testbed" / "standins"
# Upstream repository -> (path under the git daemon's base path, stand-in tree under STANDINS)
STANDIN_REPOS = {
    "https://github.com/vllm-project/vllm.git": ("vllm-project/vllm.git", "vllm"),
    "https://github.com/triton-lang/triton.git": ("triton-lang/triton.git", "triton"),
    "https://github.com/vllm-project/flash-attention.git": ("vllm-project/flash-attention.git", "flash-attention"),
    "https://github.com/vllm-project/FlashMLA.git": ("vllm-project/FlashMLA.git", "flashmla"),
    "https://github.com/nvidia/cutlass.git": ("NVIDIA/cutlass.git", "cutlass"),  # as vLLM's CMakeLists.txt spells it
    "https://github.com/IST-DASLab/qutlass.git": ("IST-DASLab/qutlass.git", "qutlass"),
    "https://github.com/deepseek-ai/DeepGEMM.git": ("deepseek-ai/DeepGEMM.git", "deepgemm"),
}
# The release tag each stand-in repository carries (the others are pinned by commit, mapped in [refs]).
STANDIN_TAGS = {"vllm": "v0.19.0", "triton": "v3.6.0", "cutlass": "v4.2.1"}
# Only on indexes this machine cannot reach (PyTorch's, FlashInfer's): stand-in wheels of the versions the
# manifests in releases/ pin there (a +cuNNN torch, a flashinfer-jit-cache). PyPI's CUDA torch needs none.
def standin_wheels() -> list[tuple[str, str]]:
    wheels = set()
    for m in (load_release(n) for n in release_names()):
        if "+" in m.torch.version:
            wheels |= {("torch", m.torch.version), ("torchvision", m.torch.torchvision),
                       ("torchaudio", m.torch.torchaudio)}
        if m.flashinfer.jit_cache_index_url:
            wheels.add(("flashinfer_jit_cache", m.overridden("flashinfer-python") or m.flashinfer.version))
    return sorted(wheels)
# Real platform wheels from PyPI for the images' Python on both arches (the images run the real Triton, so
# Triton's own C-stub build runs in the smoke suite).
# uv at the version vllm/Dockerfile pins: the final stage installs with it.
REAL_PLATFORM_WHEELS = ["triton==3.6.0", "uv=={}".format(
    re.search(r"^ARG UV_VERSION=(\S+)", DOCKERFILE.read_text(), re.M).group(1))]
# Per arch, the platform tags pip may pick (an explicit --platform is not widened to older manylinux tags).
WHEEL_PLATFORMS = (("manylinux_2_27_aarch64", "manylinux_2_17_aarch64"),
                   ("manylinux_2_27_x86_64", "manylinux_2_17_x86_64"))


# Fixed identity and dates: the stand-in repositories get the same commits on every machine, so the mirror
# file and BuildKit's cache keys stay the same from one `up` to the next.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "gracectl testbed", "GIT_AUTHOR_EMAIL": "testbed@gracectl.invalid",
    "GIT_COMMITTER_NAME": "gracectl testbed", "GIT_COMMITTER_EMAIL": "testbed@gracectl.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
}
ALT_VLLM_FILE = "vllm/_testbed_change.py"  # the one file the second vLLM commit adds

# The real stack's Triton repository: one tagged commit per REAL triton_kernels package the releases' official vLLM
# wheels vendor (v3.6.0 from 0.19.0's, v3.5.1 from 0.25.0's; taken at set-up time, file for file Triton's), each
# with a pyproject.toml saying what Triton's says (name, version 1.0.0, numpy and pytest), and the stand-in's tests/
# (the real suite is not in the wheel). `gracectl release check --mirror mirror-real.toml` reads its trees too.
REAL_TRITON_PATH = "triton-lang/triton-real.git"
REAL_TRITON_PYPROJECT = '''# As Triton's python/triton_kernels/pyproject.toml at v3.6.0 (written by the gracectl test bed).
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "triton_kernels"
version = "1.0.0"
dependencies = ["numpy", "pytest"]

[tool.setuptools.packages.find]
include = ["triton_kernels*"]
'''


class StandIns:
    def __init__(self, root: Path, state: State):
        self.root, self.state = root, state

    @property
    def git_root(self) -> Path:
        return self.root / "git"

    @property
    def index_root(self) -> Path:
        return self.root / "index"

    def make_repos(self) -> None:
        """Bare repositories with deterministic commits; rebuilt only when the stand-in sources change."""
        fingerprint = hashlib.sha256((tree_hash(STANDINS) + repr(sorted(STANDIN_REPOS.items()))).encode()).hexdigest()
        if self.state.fingerprints.get("repos") == fingerprint and all(
                (self.git_root / path).is_dir() for path, _ in STANDIN_REPOS.values()):
            say("stand-in repositories up to date")
            return
        repos: dict[str, dict[str, str]] = {}
        for url, (path, tree) in STANDIN_REPOS.items():
            bare = self.git_root / path
            shutil.rmtree(bare, ignore_errors=True)
            refs = {}
            tag = STANDIN_TAGS.get(tree)
            if tag:
                refs[tag] = commit_tree(bare, STANDINS / tree, f"stand-in {tree} {tag}", tag=tag)
            else:
                refs["commit"] = commit_tree(bare, STANDINS / tree, f"stand-in {tree}")
            if tree == "vllm":
                change = '"""Test-bed change: the second vLLM commit (one input changed)."""\nCHANGED = True\n'
                refs["alt"] = commit_tree(bare, STANDINS / tree, "stand-in vLLM: one change after v0.19.0",
                                          extra={ALT_VLLM_FILE: change})
                self.state.vllm_alt_ref = refs["alt"]
            repos[url] = refs
        self.state.repos = repos
        self.state.fingerprints["repos"] = fingerprint
        self.state.save(self.root)

    def add_vllm_commit(self, note: str) -> str:
        """A new commit in the stand-in vLLM repository (v0.19.0 plus one file saying `note`), for a rebuild
        with only the vLLM ref changed that no earlier build has cached. Returns the commit."""
        bare = self.git_root / STANDIN_REPOS["https://github.com/vllm-project/vllm.git"][0]
        if not bare.is_dir():
            raise TestbedError("the stand-in vLLM repository is missing: run `gracectl testbed up`")
        change = f'"""Test-bed change: {note}"""\nNOTE = {note!r}\n'
        return commit_tree(bare, STANDINS / "vllm", f"stand-in vLLM: {note}", extra={ALT_VLLM_FILE: change})

    def make_real_triton(self, trees: dict[str, Path]) -> str:
        """The real stack's Triton repository: a tagged commit per real triton_kernels package folder
        ({tag: folder}; oldest tag first, so the newest is HEAD). Returns the commit of v3.6.0 (the tfa pin)."""
        bare = self.git_root / REAL_TRITON_PATH
        stand_in_tests = STANDINS / "triton" / "python" / "triton_kernels" / "tests"
        ordered = sorted(trees.items(), key=lambda kv: [int(x) for x in re.findall(r"\d+", kv[0])])
        fingerprint = hashlib.sha256("".join(tag + tree_hash(tree) for tag, tree in ordered).encode()
                                     + (tree_hash(stand_in_tests) + REAL_TRITON_PYPROJECT).encode()).hexdigest()
        if self.state.fingerprints.get("real-triton") == fingerprint and bare.is_dir():
            say("real-stack Triton repository up to date")
            return self.state.fingerprints["real-triton-commit"]
        shutil.rmtree(bare, ignore_errors=True)
        commits = {}
        for tag, triton_kernels in ordered:
            with tempfile.TemporaryDirectory() as tmp:
                project = Path(tmp) / "python" / "triton_kernels"
                shutil.copytree(triton_kernels, project / "triton_kernels")
                shutil.copytree(stand_in_tests, project / "tests")
                (project / "pyproject.toml").write_text(REAL_TRITON_PYPROJECT)
                commits[tag] = commit_tree(bare, Path(tmp), f"real triton_kernels {tag} (from {triton_kernels.parent.name})",
                                           tag=tag)
        if "v3.6.0" not in commits:
            raise TestbedError("no release's vLLM wheel vendors triton_kernels v3.6.0 (the real stack's tfa pin)")
        self.state.fingerprints.update({"real-triton": fingerprint, "real-triton-commit": commits["v3.6.0"]})
        self.state.save(self.root)
        return commits["v3.6.0"]

    def add_real_triton_commit(self, note: str) -> str:
        """A new commit in the real-stack Triton repository (v3.6.0 plus one file in python/triton_kernels saying
        `note`): one input changed for a wheel-mode rebuild (benchmarks/real_stack.py). Returns the commit."""
        bare = self.git_root / REAL_TRITON_PATH
        if not bare.is_dir():
            raise TestbedError("the real-stack Triton repository is missing: run `gracectl testbed up`")
        with tempfile.TemporaryDirectory() as tmp:
            proc.run(["git", f"--git-dir={bare}", f"--work-tree={tmp}", "checkout", "-f", "v3.6.0", "--", "."],
                     env=GIT_ENV, echo=False)
            return commit_tree(bare, Path(tmp), f"real triton_kernels: {note}",
                               extra={"python/triton_kernels/testbed_change.txt": note + "\n"})

    def make_apt(self) -> Path:
        """The STAND-IN NVIDIA apt repository under the index (gracectl.testbed.apt_standin), for every release."""
        manifests = [load_release(n) for n in release_names()]
        packages = standin_packages({p for m in manifests for p in m.cuda.runtime_packages},
                                    {m.recipe.nccl_apt_suffix for m in manifests if m.recipe.nccl_apt_suffix})
        return make_apt_repo(self.index_root / APT_STANDIN_DIR, packages)

    def make_index(self) -> None:
        """PEP 503 layout: index/simple/<project>/{index.html, *.whl}; index/flashinfer/simple/ holds only the
        flashinfer-jit-cache stand-in (the real stack's FlashInfer index: everything else comes from PyPI)."""
        simple = self.index_root / "simple"
        requirements = pypi_requirements()
        # Paths relative to the checkout: every clone (CI's fresh ones, worktrees) shares the same index.
        fingerprint = hashlib.sha256(("layout 2" + tree_hash(STANDINS / "wheels") + repr(standin_wheels())
                                      + json.dumps(requirements).replace(str(REPO_ROOT), "")
                                      + json.dumps([REAL_PLATFORM_WHEELS, WHEEL_PLATFORMS])
                                      + (SMOKE_TESTS / "requirements.txt").read_text()).encode()
                                     ).hexdigest()
        if self.state.fingerprints.get("index") == fingerprint and (simple / "index.html").exists():
            say("package index up to date")
            return
        wheels = self.root / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        wheels.mkdir(parents=True)
        for name, version in standin_wheels():
            write_wheel(wheels, name, version, STANDINS / "wheels" / name,
                        summary=f"STAND-IN for {name} {version} (gracectl test bed): no real {name} inside")
        for platforms in WHEEL_PLATFORMS:  # cached outside the clone: ~176 MB each, downloaded once
            cache = self.root / "wheel-cache"
            proc.run([sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--only-binary=:all:",
                      *(a for p in platforms for a in ("--platform", p)), "--python-version", PYTHON_VERSION,
                      "--implementation", "cp",
                      "-d", str(cache), *REAL_PLATFORM_WHEELS], timeout=1800)
            for whl in cache.glob("*.whl"):
                shutil.copyfile(whl, wheels / whl.name)
        # Pure-python wheels that run on both arches and the images' Python; --isolated: not this host's pip
        # configuration (find-links, extra indexes), only PyPI or PIP_INDEX_URL.
        proc.run([sys.executable, "-m", "pip", "download", "--isolated", "--only-binary=:all:",
                  "--platform", "any", "--python-version", PYTHON_VERSION, "--implementation", "py",
                  "-d", str(wheels), *requirements], timeout=600)
        shutil.rmtree(simple, ignore_errors=True)
        projects: dict[str, list[Path]] = {}
        for whl in sorted(wheels.glob("*.whl")):
            projects.setdefault(normalize(whl.name.split("-")[0]), []).append(whl)
        for project, files in projects.items():
            d = simple / project
            d.mkdir(parents=True)
            links = []
            for whl in files:
                shutil.copyfile(whl, d / whl.name)
                digest = hashlib.sha256(whl.read_bytes()).hexdigest()
                links.append(f'<a href="{whl.name}#sha256={digest}">{whl.name}</a><br>')
            (d / "index.html").write_text(html(project, links))
        (simple / "index.html").write_text(html("simple", [f'<a href="{p}/">{p}</a><br>' for p in projects]))
        flashinfer = self.index_root / "flashinfer" / "simple"
        shutil.rmtree(flashinfer, ignore_errors=True)
        shutil.copytree(simple / "flashinfer-jit-cache", flashinfer / "flashinfer-jit-cache")
        (flashinfer / "index.html").write_text(html("simple", ['<a href="flashinfer-jit-cache/">flashinfer-jit-cache</a><br>']))
        self.state.fingerprints["index"] = fingerprint
        self.state.save(self.root)


def pypi_requirements() -> list[str]:
    """Real wheels from PyPI: the build tools at the versions vllm/Dockerfile pins, and the smoke suite's needs."""
    text = DOCKERFILE.read_text()
    pins = []
    for arg, project in (("SETUPTOOLS_VERSION", "setuptools"), ("WHEEL_VERSION", "wheel")):
        m = re.search(rf"^ARG {arg}=(\S+)", text, re.M)
        pins.append(f"{project}=={m.group(1)}" if m else project)
    # What the stand-in vLLM's requirements/build.txt asks for besides torch (setuptools-scm: its file finder).
    build_txt = (STANDINS / "vllm" / "requirements" / "build.txt").read_text().splitlines()
    pins += [line for line in build_txt if line.startswith("setuptools-scm")]
    return [*pins, "-r", str(SMOKE_TESTS / "requirements.txt")]


def git_answers(url: str) -> bool:
    try:
        proc.run(["git", "ls-remote", url], echo=False, timeout=10)
        return True
    except GraceError:
        return False


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def commit_tree(bare: Path, tree: Path, message: str, tag: str = "", extra: dict[str, str] | None = None) -> str:
    """Commit `tree` (+ `extra` files) on top of the bare repo's main branch; returns the commit."""
    env = GIT_ENV
    if not bare.exists():
        proc.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(bare)], env=env, echo=False)
        # fetch-source fetches by commit (flash-attn/flashmla pins): the server must allow any SHA-1.
        proc.run(["git", "-C", str(bare), "config", "uploadpack.allowAnySHA1InWant", "true"], env=env, echo=False)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(tree, work, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for rel, text in (extra or {}).items():
            (work / rel).write_text(text)
        git = ["git", f"--git-dir={bare}", f"--work-tree={work}"]
        proc.run([*git, "add", "-A", "."], env=env, echo=False)
        proc.run([*git, "commit", "-q", "-m", message], env=env, echo=False)
    if tag:
        proc.run(["git", "-C", str(bare), "tag", tag], env=env, echo=False)
    return proc.run(["git", "-C", str(bare), "rev-parse", "HEAD"], env=env, echo=False).stdout.strip()



def html(title: str, links: list[str]) -> str:
    return f"<!DOCTYPE html>\n<html><head><title>{title}</title></head><body>\n" + "\n".join(links) + "\n</body></html>\n"


def write_wheel(dest: Path, name: str, version: str, src: Path, summary: str) -> Path:
    """A pure-python py3-none-any wheel of the package directory src/<name>, byte-for-byte reproducible."""
    dist = f"{name}-{version}"
    files: dict[str, bytes] = {}
    for p in sorted((src / name).rglob("*.py")):
        files[str(p.relative_to(src))] = p.read_bytes()
    files[f"{dist}.dist-info/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n").encode()
    files[f"{dist}.dist-info/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: gracectl-testbed\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = io.StringIO()
    for path, data in files.items():
        digest = hashlib.sha256(data).digest()
        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.write(f"{path},sha256={b64},{len(data)}\n")
    record.write(f"{dist}.dist-info/RECORD,,\n")
    files[f"{dist}.dist-info/RECORD"] = record.getvalue().encode()
    whl = dest / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, data, zipfile.ZIP_DEFLATED)
    return whl
