"""The local test bed: real dockerd, registry, qemu and mirrors of every external input of vllm/Dockerfile.

`gracectl testbed up` makes a Debian machine with no GPU and no internet (only Debian's apt mirror and PyPI)
able to run the whole pipeline for real:

- installs what is missing (docker.io docker-registry skopeo qemu-user-static binfmt-support debootstrap git),
- starts dockerd when none answers, a Debian docker-registry on 127.0.0.1:<registry_port>,
- enables binfmt for arm64 and checks it by running an arm64 binary,
- builds Debian bookworm base images (debootstrap, cached as tarballs) for linux/arm64 and linux/amd64 and
  pushes them as multi-arch indexes (BuildKit resolves a foreign-platform base only from a registry),
- serves stand-in git repositories (vLLM, Triton incl. python/triton_kernels, flash-attention, FlashMLA)
  with `git daemon` and a PEP 503 package index (stand-in torch/triton wheels + real PyPI wheels),
- writes the mirror file (`<state>/mirror.toml`) that maps every upstream input of the manifests there.

State lives in `$GRACECTL_STATE_DIR`, else `.state/testbed/` of the checkout; `state.json` records what `up`
started (pids, ports, images) so that `down` stops exactly that and a second `up` changes nothing.
Base rootfs tarballs are cached in `<state>/rootfs/` under a key of the debootstrap arguments (cold `up`:
about 7 minutes on 2 cores, arm64 under qemu; warm: under a second).

The stand-in repositories get the same commits on every machine. Like upstream, their tags are fixed: BuildKit
caches a fetch by its build arguments (repository, ref), so an edit of scripts/testbed/standins/ reaches a
build only through a new ref (Testbed.add_vllm_commit, or `docker builder prune`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gracectl.adapters import docker, proc, tools
from gracectl.adapters.registry import Registry
from gracectl.errors import GraceError, RegistryError, TestbedError
from gracectl.manifest import load_release, release_names
from gracectl.plan import DOCKERFILE, REPO_ROOT
from gracectl.registry_server import HOST, RegistryServer, port_in_use

STANDINS = REPO_ROOT / "scripts" / "testbed" / "standins"
ARCHES = ("arm64", "amd64")
SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Runtime base: Python, venv, git, CA certificates. Build base: the same plus what the Dockerfile's build-base
# stage would otherwise apt-get install under qemu on every cold build cache (minutes, every time).
BASE_INCLUDES = {
    "runtime-base": "python3,python3-venv,git,ca-certificates",
    "build-base": "python3,python3-venv,python3-dev,git,ca-certificates,build-essential,ccache",
}
PYTHON_VERSION = "3.11"  # Debian bookworm's python3
# program -> Debian packages that provide it, from the one table (adapters.tools); apt-get update once, then
# all missing ones in one go. Debian's docker client by its path: gracectl never takes `docker` from PATH.
PACKAGES = {("/usr/bin/docker" if prog == "docker" else prog): pkgs
            for prog, pkgs in tools.testbed_packages().items()}
# Upstream repository -> (path under the git daemon's base path, stand-in tree under STANDINS)
STANDIN_REPOS = {
    "https://github.com/vllm-project/vllm.git": ("vllm-project/vllm.git", "vllm"),
    "https://github.com/triton-lang/triton.git": ("triton-lang/triton.git", "triton"),
    "https://github.com/vllm-project/flash-attention.git": ("vllm-project/flash-attention.git", "flash-attention"),
    "https://github.com/vllm-project/FlashMLA.git": ("vllm-project/FlashMLA.git", "flashmla"),
}
STANDIN_WHEELS = {"torch": "2.10.0", "triton": "3.6.0"}


# Fixed identity and dates: the stand-in repositories get the same commits on every machine, so the mirror
# file and BuildKit's cache keys stay the same from one `up` to the next.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "gracectl testbed", "GIT_AUTHOR_EMAIL": "testbed@gracectl.invalid",
    "GIT_COMMITTER_NAME": "gracectl testbed", "GIT_COMMITTER_EMAIL": "testbed@gracectl.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
}
ALT_VLLM_FILE = "vllm/_testbed_change.py"  # the one file the second vLLM commit adds


def state_dir() -> Path:
    return Path(os.environ.get("GRACECTL_STATE_DIR") or REPO_ROOT / ".state" / "testbed")


@dataclass
class State:
    """What `up` did (state.json): `down` stops exactly the pids recorded here."""

    registry_port: int = 5000
    git_port: int = 9418
    index_port: int = 5080
    pids: dict[str, int] = field(default_factory=dict)  # component -> pid started by us
    images: dict[str, str] = field(default_factory=dict)  # pushed image ref -> cache key it was built from
    repos: dict[str, dict[str, str]] = field(default_factory=dict)  # upstream url -> {ref name: commit}
    fingerprints: dict[str, str] = field(default_factory=dict)  # repos/index content -> hash (rebuild on change)
    vllm_alt_ref: str = ""  # the second vLLM commit (one input changed)
    mirror_file: str = ""

    @classmethod
    def load(cls, root: Path) -> State:
        try:
            return cls(**json.loads((root / "state.json").read_text()))
        except FileNotFoundError:
            return cls()
        except (ValueError, TypeError) as exc:
            raise TestbedError(f"{root / 'state.json'} is damaged ({exc}): run `gracectl testbed down` "
                               f"and remove it") from None

    def save(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "state.json").write_text(json.dumps(asdict(self), indent=2) + "\n")

    @property
    def registry(self) -> str:
        return f"{HOST}:{self.registry_port}"

    def base_image(self, flavour: str) -> str:
        return f"{self.registry}/testbed/{flavour}:{SUITE}"


# --------------------------------------------------------------------------------------------------------
# progress
_t0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - _t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(title: str):
    say(f"{title} ...")
    start = time.monotonic()
    yield
    say(f"{title}: done in {time.monotonic() - start:.1f}s")


def now_and_then(prefix: str, every: float = 20.0):
    """An on_line callback that shows a long command's latest output line at most every `every` seconds."""
    last = time.monotonic()

    def on_line(line: str) -> None:
        nonlocal last
        if line.strip() and time.monotonic() - last >= every:
            last = time.monotonic()
            say(f"{prefix}: {line.strip()[:100]}")

    return on_line


# --------------------------------------------------------------------------------------------------------
# processes we start and stop

def pid_alive(pid: int, program: str) -> bool:
    """True when `pid` lives and still runs `program` (a recycled pid is not ours)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    # a prefix: `git daemon` becomes git-daemon, python3 may be python3.11 behind a version manager's shim
    if any(os.path.basename(a.decode(errors="replace")).startswith(program) for a in cmdline[:3]):
        return True
    # Right after exec the kernel may show an empty cmdline for a moment: the name in stat (15 chars) decides.
    return cmdline == [b""] and stat[stat.index("(") + 1:stat.rindex(")")].startswith(program[:15])


def spawn(args: list[str], log: Path) -> int:
    """Start a daemon in its own session (it outlives gracectl), output to `log`; returns its pid."""
    args = [proc.which(args[0]), *args[1:]]
    print(f"+ {proc.format_command(args)}", file=sys.stderr, flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    return child.pid


def stop_pid(pid: int, program: str, timeout: float = 10.0) -> bool:
    if not pid_alive(pid, program):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid, program):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return True


def wait_until(check, what: str, timeout: float, log: Path | None = None, pid: int = 0, program: str = "") -> None:
    deadline = time.monotonic() + timeout
    outcome = f"did not come up within {timeout:.0f}s"
    while time.monotonic() < deadline:
        if check():
            return
        if pid and not pid_alive(pid, program):
            outcome = "exited while starting"
            break
        time.sleep(0.2)
    tail = ""
    if log and log.exists():
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    raise TestbedError(f"{what} {outcome}" + (f" (log {log}: {tail})" if log else ""))


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


# --------------------------------------------------------------------------------------------------------
# the test bed

class Testbed:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, root: Path | None = None):
        self.root = Path(root or state_dir())
        self.state = State.load(self.root)

    # paths
    @property
    def git_root(self) -> Path:
        return self.root / "git"

    @property
    def index_root(self) -> Path:
        return self.root / "index"

    @property
    def mirror_path(self) -> Path:
        return self.root / "mirror.toml"

    def registry_server(self) -> RegistryServer:
        return RegistryServer(root=self.root / "registry", port=self.state.registry_port)

    # ----------------------------------------------------------------------------------------------------
    def up(self, registry_port: int | None = None, git_port: int | None = None, index_port: int | None = None) -> State:
        st = self.state
        for name, port in (("registry_port", registry_port), ("git_port", git_port), ("index_port", index_port)):
            if port is not None and port != getattr(st, name):
                if self._running(name.removesuffix("_port")):
                    raise TestbedError(f"the test bed runs with {name}={getattr(st, name)}: "
                                       f"`gracectl testbed down` first to change it")
                setattr(st, name, port)
        start = time.monotonic()
        with step("packages"):
            self.install_packages()
        with step("dockerd"):
            self.start_dockerd()
        with step(f"registry on {st.registry}"):
            self.start_registry()
        st.save(self.root)
        with step("binfmt for arm64"):
            enable_binfmt()
        for flavour in BASE_INCLUDES:
            # arm64 (qemu: CPU) and amd64 (mostly download) debootstrap side by side; one job per arch at a
            # time, so that each arch's .deb cache has one writer
            with ThreadPoolExecutor(len(ARCHES)) as pool:
                list(pool.map(lambda arch: self.rootfs(flavour, arch), ARCHES))  # noqa: B023
            for arch in ARCHES:
                self.base_image(flavour, arch)
            self.push_index(flavour)
        with step("arm64 runs under qemu"):
            self.check_arm64()
        with step("stand-in git repositories"):
            self.make_repos()
            self.start_git_daemon()
        with step("package index"):
            self.make_index()
            self.start_index()
        self.write_mirror()
        st.save(self.root)
        say(f"test bed up in {time.monotonic() - start:.1f}s; mirror file {self.mirror_path}")
        return st

    def _running(self, component: str) -> bool:
        program = {"registry": "docker-registry", "git": "git", "index": "python"}[component]
        if component == "registry":
            return self.registry_server().running()
        pid = self.state.pids.get({"git": "git-daemon", "index": "index"}[component])
        return bool(pid) and pid_alive(pid, program)

    # ----------------------------------------------------------------------------------------------------
    def install_packages(self) -> None:
        missing = sorted({pkg for prog, pkgs in PACKAGES.items() if not shutil.which(prog) for pkg in pkgs})
        if not missing:
            say("all packages present")
            return
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        proc.run(["apt-get", "update", "-q"], env=env, timeout=600)
        proc.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env, timeout=1200)

    def start_dockerd(self) -> None:
        if docker.answers():
            say("dockerd answers")
            return
        if os.geteuid() != 0:
            raise TestbedError("no dockerd answers and starting one needs root: run `gracectl testbed up` as root")
        log = self.root / "dockerd.log"
        pid = spawn(["dockerd"], log)
        self.state.pids["dockerd"] = pid
        self.state.save(self.root)
        wait_until(docker.answers, "dockerd", 60, log, pid, "dockerd")

    def start_registry(self) -> None:
        server = self.registry_server()
        if server.running() and server.answers():
            say(f"registry already runs (pid {server.pid()})")
        else:
            server.start()  # TestbedError when the port is taken by something else
        self.state.pids["registry"] = server.pid()

    # ----------------------------------------------------------------------------------------------------
    def rootfs(self, flavour: str, arch: str) -> Path:
        """The debootstrap tarball for (flavour, arch), cached on disk under a key of the debootstrap args."""
        args = ["debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={BASE_INCLUDES[flavour]}",
                SUITE]
        key = hashlib.sha256(json.dumps(args + [DEBIAN_MIRROR]).encode()).hexdigest()[:12]
        tarball = self.root / "rootfs" / f"{flavour}-{arch}-{key}.tar"
        if tarball.exists():
            return tarball
        slow = " (runs under qemu: minutes)" if arch != "amd64" else ""
        with step(f"debootstrap {flavour} {arch}{slow}"):
            tarball.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=tarball.parent, prefix=f".{flavour}-{arch}-") as tmp:
                target = Path(tmp) / "rootfs"
                # --cache-dir keeps the downloaded .debs: the other flavour and later keys reuse them.
                cache = self.root / "debs" / arch
                cache.mkdir(parents=True, exist_ok=True)
                proc.run([args[0], f"--cache-dir={cache}", *args[1:], str(target), DEBIAN_MIRROR], timeout=3600,
                         on_line=now_and_then(f"debootstrap {flavour} {arch}"))
                # Nothing of the build host's apt state: smaller image, same bytes every time.
                for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                    for p in (target / junk).glob("*"):
                        if p.is_file():
                            p.unlink()
                partial = Path(tmp) / "rootfs.tar"
                proc.run(["tar", "--numeric-owner", "-C", str(target), "-cf", str(partial), "."])
                partial.rename(tarball)
        return tarball

    def base_image(self, flavour: str, arch: str) -> str:
        """The rootfs as an image for linux/<arch>, pushed; skipped when the registry has it already.

        Not `docker import --platform`: dockerd 20.10 records the host's architecture in an imported image
        whatever --platform says, and BuildKit would then pick the wrong image from the index. A BuildKit
        `FROM scratch` + `ADD rootfs.tar /` for --platform linux/<arch> makes the same single layer with the
        right platform in its config.
        """
        tarball = self.rootfs(flavour, arch)
        key = f"{tarball.stem}+scratch-add"
        ref = f"{self.state.base_image(flavour)}-{arch}"
        if self.state.images.get(ref) == key and self.registry_has(ref):
            return ref
        with step(f"image {ref}"), tempfile.TemporaryDirectory(dir=tarball.parent) as context:
            os.link(tarball, Path(context) / "rootfs.tar")  # the build context, without a copy
            (Path(context) / "Dockerfile").write_text(
                f"FROM scratch\nADD rootfs.tar /\nLABEL io.gracectl.testbed.rootfs={tarball.name}\n"
                'CMD ["/bin/bash"]\n')
            docker.run(["build", "--platform", f"linux/{arch}", "--tag", ref, context], env=docker.BUILDKIT_ENV)
            docker.run(["push", ref])
        self.state.images[ref] = key
        self.state.save(self.root)
        return ref

    def push_index(self, flavour: str) -> str:
        """One multi-arch index over the per-arch tags: FROM <index> picks the build's --platform."""
        ref = self.state.base_image(flavour)
        parts = [f"{ref}-{arch}" for arch in ARCHES]
        key = "+".join(self.state.images[p] for p in parts)
        if self.state.images.get(ref) == key and self.registry_has(ref):
            return ref
        with step(f"multi-arch index {ref}"):
            docker.run(["manifest", "create", "--insecure", "--amend", ref, *parts])
            docker.run(["manifest", "push", "--insecure", "--purge", ref])
        self.state.images[ref] = key
        self.state.save(self.root)
        return ref

    def registry_has(self, ref: str) -> bool:
        name, tag = ref.split("/", 1)[1].rsplit(":", 1)
        try:
            return Registry(self.state.registry).head_manifest(name, tag) is not None
        except RegistryError:
            return False

    def check_arm64(self) -> None:
        out = docker.run(["run", "--rm", "--platform", "linux/arm64", "--pull", "missing",
                          f"{self.state.base_image('runtime-base')}-arm64", "uname", "-m"]).stdout.strip()
        if out.splitlines()[-1:] != ["aarch64"]:
            raise TestbedError(f"an arm64 container printed {out!r} for `uname -m`, not aarch64: binfmt/qemu "
                               f"does not work (check /proc/sys/fs/binfmt_misc/qemu-aarch64)")
        say("arm64 container: uname -m = aarch64")

    # ----------------------------------------------------------------------------------------------------
    def make_repos(self) -> None:
        """Bare repositories with deterministic commits; rebuilt only when the stand-in sources change."""
        fingerprint = tree_hash(STANDINS)
        if self.state.fingerprints.get("repos") == fingerprint and all(
                (self.git_root / path).is_dir() for path, _ in STANDIN_REPOS.values()):
            say("stand-in repositories up to date")
            return
        repos: dict[str, dict[str, str]] = {}
        for url, (path, tree) in STANDIN_REPOS.items():
            bare = self.git_root / path
            shutil.rmtree(bare, ignore_errors=True)
            refs = {}
            if tree == "vllm":
                refs["v0.19.0"] = commit_tree(bare, STANDINS / tree, "stand-in vLLM v0.19.0", tag="v0.19.0")
                change = '"""Test-bed change: the second vLLM commit (one input changed)."""\nCHANGED = True\n'
                refs["alt"] = commit_tree(bare, STANDINS / tree, "stand-in vLLM: one change after v0.19.0",
                                          extra={ALT_VLLM_FILE: change})
                self.state.vllm_alt_ref = refs["alt"]
            elif tree == "triton":
                refs["v3.6.0"] = commit_tree(bare, STANDINS / tree, "stand-in Triton v3.6.0", tag="v3.6.0")
            else:
                refs["commit"] = commit_tree(bare, STANDINS / tree, f"stand-in {tree}")
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

    def start_git_daemon(self) -> None:
        url = f"git://{HOST}:{self.state.git_port}/vllm-project/vllm.git"
        if self._running("git") and git_answers(url):
            say(f"git daemon already runs (pid {self.state.pids['git-daemon']})")
            return
        self._check_port(self.state.git_port, "git daemon")
        pid = spawn(["git", "daemon", "--reuseaddr", "--export-all", "--informative-errors",
                     f"--listen={HOST}", f"--port={self.state.git_port}", f"--base-path={self.git_root}",
                     str(self.git_root)], self.root / "git-daemon.log")
        self.state.pids["git-daemon"] = pid
        self.state.save(self.root)
        wait_until(lambda: git_answers(url), "git daemon", 20, self.root / "git-daemon.log", pid, "git")

    # ----------------------------------------------------------------------------------------------------
    def make_index(self) -> None:
        """PEP 503 layout: index/simple/<project>/{index.html, *.whl}."""
        simple = self.index_root / "simple"
        requirements = pypi_requirements()
        fingerprint = hashlib.sha256((tree_hash(STANDINS / "wheels") + json.dumps(requirements)
                                      + (REPO_ROOT / "smoke_tests" / "requirements.txt").read_text()).encode()
                                     ).hexdigest()
        if self.state.fingerprints.get("index") == fingerprint and (simple / "index.html").exists():
            say("package index up to date")
            return
        wheels = self.root / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        wheels.mkdir(parents=True)
        for name, version in STANDIN_WHEELS.items():
            write_wheel(wheels, name, version, STANDINS / "wheels" / name,
                        summary=f"STAND-IN for {name} {version} (gracectl test bed): no real {name} inside")
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
        self.state.fingerprints["index"] = fingerprint
        self.state.save(self.root)

    @property
    def index_url(self) -> str:
        return f"http://{HOST}:{self.state.index_port}/simple"

    def start_index(self) -> None:
        if self._running("index") and http_ok(self.index_url + "/"):
            say(f"package index already served (pid {self.state.pids['index']})")
            return
        self._check_port(self.state.index_port, "package index")
        pid = spawn([sys.executable, "-m", "http.server", "--bind", HOST, "--directory", str(self.index_root),
                     str(self.state.index_port)], self.root / "index.log")
        self.state.pids["index"] = pid
        self.state.save(self.root)
        wait_until(lambda: http_ok(self.index_url + "/"), "package index", 20, self.root / "index.log", pid,
                   "python")

    def _check_port(self, port: int, what: str) -> None:
        if port_in_use(port):
            raise TestbedError(f"port {port} on {HOST} is in use, so the {what} cannot start there: stop what "
                               f"listens there or pick another port (`ss -ltnp 'sport = :{port}'` shows it)")

    # ----------------------------------------------------------------------------------------------------
    def write_mirror(self) -> Path:
        """Map each upstream input of every release manifest to its stand-in."""
        st = self.state
        images, repos, refs, indexes = {}, {}, {}, {}
        for name in release_names():
            m = load_release(name)
            images[m.base.build.ref] = st.base_image("build-base")
            images[m.base.runtime.ref] = st.base_image("runtime-base")
            indexes[m.python.index_url] = self.index_url
            indexes[m.torch.index_url] = self.index_url
            for src in (m.sources.vllm, m.sources.triton, m.sources.triton_kernels, m.sources.flash_attn,
                        m.sources.flashmla):
                path, _ = STANDIN_REPOS[src.repo]
                repos[src.repo] = f"git://{HOST}:{st.git_port}/{path}"
                commit = st.repos[src.repo].get("commit")
                if commit and src.pin not in st.repos[src.repo]:
                    refs[src.pin] = commit  # pinned by an upstream commit the stand-in cannot have
        lines = ["# Written by `gracectl testbed up`: every upstream input of releases/*.toml -> the test bed.",
                 'build_network = "host"  # build steps reach the mirrors on 127.0.0.1',
                 f'python_version = "{PYTHON_VERSION}"  # the stand-in base images carry Debian\'s Python']
        for title, table in (("images", images), ("repos", repos), ("refs", refs), ("indexes", indexes)):
            lines += ["", f"[{title}]"] + [f'"{k}" = "{v}"' for k, v in sorted(table.items())]
        text = "\n".join(lines) + "\n"
        if not self.mirror_path.exists() or self.mirror_path.read_text() != text:
            self.mirror_path.write_text(text)
        st.mirror_file = str(self.mirror_path)
        return self.mirror_path

    # ----------------------------------------------------------------------------------------------------
    def status(self) -> dict:
        st = self.state
        server = self.registry_server()
        components = {
            "dockerd": {"running": docker.answers(), "pid": st.pids.get("dockerd"),
                        "started_by_testbed": bool(st.pids.get("dockerd")) and pid_alive(st.pids["dockerd"], "dockerd")},
            "registry": {"running": server.running() and server.answers(), "pid": server.pid(),
                         "address": st.registry, "data": str(server.root / "data")},
            "git-daemon": {"running": self._running("git"), "pid": st.pids.get("git-daemon"),
                           "address": f"git://{HOST}:{st.git_port}/"},
            "index": {"running": self._running("index"), "pid": st.pids.get("index"), "address": self.index_url},
            "binfmt-arm64": {"running": binfmt_enabled()},
        }
        return {"state_dir": str(self.root), "components": components,
                "images": {ref: self.registry_has(ref) for ref in st.images} if components["registry"]["running"]
                else {ref: False for ref in st.images},
                "repos": st.repos, "vllm_alt_ref": st.vllm_alt_ref,
                "mirror_file": str(self.mirror_path) if self.mirror_path.exists() else ""}

    def down(self) -> list[str]:
        """Stop what `up` started (never a dockerd or registry somebody else runs); keeps caches and data."""
        stopped = []
        st = self.state
        for name, program in (("index", "python"), ("git-daemon", "git")):
            pid = st.pids.pop(name, None)
            if pid and stop_pid(pid, program):
                stopped.append(f"{name} (pid {pid})")
        server = self.registry_server()
        if server.running():
            pid = server.pid()
            server.stop()
            stopped.append(f"registry (pid {pid})")
        st.pids.pop("registry", None)
        pid = st.pids.pop("dockerd", None)
        if pid and stop_pid(pid, "dockerd", timeout=30):
            stopped.append(f"dockerd (pid {pid})")
        st.save(self.root)
        return stopped


# --------------------------------------------------------------------------------------------------------
# helpers

def binfmt_enabled() -> bool:
    try:
        return Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").read_text().startswith("enabled")
    except OSError:
        return False


def enable_binfmt() -> None:
    if not binfmt_enabled():
        proc.run(["update-binfmts", "--enable", "qemu-aarch64"])
    if not binfmt_enabled():
        raise TestbedError("binfmt for qemu-aarch64 is not enabled after `update-binfmts --enable qemu-aarch64` "
                           "(is binfmt_misc available in this kernel/container?)")


def pypi_requirements() -> list[str]:
    """Real wheels from PyPI: the build tools at the versions vllm/Dockerfile pins, and the smoke suite's needs."""
    text = DOCKERFILE.read_text()
    pins = []
    for arg, project in (("SETUPTOOLS_VERSION", "setuptools"), ("WHEEL_VERSION", "wheel")):
        m = re.search(rf"^ARG {arg}=(\S+)", text, re.M)
        pins.append(f"{project}=={m.group(1)}" if m else project)
    return [*pins, "-r", str(REPO_ROOT / "smoke_tests" / "requirements.txt")]


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


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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
