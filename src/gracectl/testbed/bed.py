"""The test bed facade: `gracectl testbed up | status | down`.

`up` makes a Debian machine with no GPU and no internet (only Debian's apt mirror and PyPI) able to run the
whole pipeline for real: the packages it needs (host.py), dockerd when none answers, a docker-registry on
127.0.0.1:<registry_port> (registry_server.py), binfmt for arm64, Debian base images for linux/arm64 and
linux/amd64 (base_images.py), STAND-IN git repositories served by `git daemon` and a package index
(standins.py), a caching PyPI proxy (proxpi) on 127.0.0.1:<proxy_port> for the real-stack builds, and the mirror
files that map every upstream input of the manifests there (mirror_file.py): mirror.toml (the stand-in stack)
and mirror-real.toml (the real upstream packages from PyPI through the proxy; stand-ins only where this machine
cannot reach the upstream: CUDA torch, flashinfer-jit-cache, the GPU-only sources).
Every daemon is started, waited for and stopped by processes.py.

State lives in `$GRACECTL_STATE_DIR`, else one folder per machine (state.default_state_dir); state.json (state.py) records
what `up` started, so that `down` stops exactly that and a second `up` changes nothing (warm: under a second).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from gracectl.adapters import docker
from gracectl.errors import TestbedError
from gracectl.testbed import host
from gracectl.testbed.base_images import BaseImages
from gracectl.releases.manifest import load_release, release_names
from gracectl.testbed.mirror_file import REAL, STANDIN, write_mirror
from gracectl.testbed.upstream import vendored_triton_kernels, vllm_sdist
from gracectl.testbed.processes import HOST, http_ok, pid_alive, start_daemon, stop_pid
from gracectl.testbed.progress import say, step
from gracectl.testbed.registry_server import RegistryServer
from gracectl.testbed.standins import StandIns, git_answers
from gracectl.testbed.state import State, state_dir

# The daemons the test bed starts itself: pid name in state.json -> the program /proc shows for it
# (the registry server keeps its own pid file).
DAEMONS = {"dockerd": "dockerd", "git-daemon": "git", "index": "python", "proxy": "python"}
PORTS = {"registry_port": "registry", "git_port": "git-daemon", "index_port": "index", "proxy_port": "proxy"}
# proxpi (from PyPI, a test dependency): a small caching PyPI proxy, one process, files kept on disk across
# restarts; chosen over devpi-server, which needs an initialised server directory and mirrors PyPI's whole
# project list. Its own fetches use requests, so the host's CA bundle (REQUESTS_CA_BUNDLE) applies there and
# never reaches an image. DOWNLOAD_TIMEOUT: wait for a file instead of redirecting the client to PyPI (a build
# step trusts no CA of this host).
PROXY_ENV = {"PROXPI_INDEX_URL": "https://pypi.org/simple/", "PROXPI_CACHE_SIZE": str(40 * 10**9),
             "PROXPI_DOWNLOAD_TIMEOUT": "3600", "PROXPI_INDEX_TTL": "86400"}


class Testbed:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, root: Path | None = None):
        self.root = Path(root or state_dir())
        self.state = State.load(self.root)
        self.base_images = BaseImages(self.root, self.state)
        self.standins = StandIns(self.root, self.state)

    @property
    def mirror_path(self) -> Path:
        return self.root / "mirror.toml"

    @property
    def real_mirror_path(self) -> Path:
        """The real stack's mirror file: PyPI through the proxy, stand-ins only for what cannot be had here."""
        return self.root / "mirror-real.toml"

    def mirror_for(self, stack: str) -> Path:
        return self.real_mirror_path if stack == REAL else self.mirror_path

    def registry_server(self) -> RegistryServer:
        return RegistryServer(root=self.root / "registry", port=self.state.registry_port)

    def up(self, registry_port: int | None = None, git_port: int | None = None, index_port: int | None = None,
           proxy_port: int | None = None) -> State:
        st = self.state
        for name, port in (("registry_port", registry_port), ("git_port", git_port), ("index_port", index_port),
                           ("proxy_port", proxy_port)):
            if port is not None and port != getattr(st, name):
                if self.running(PORTS[name]):
                    raise TestbedError(f"the test bed runs with {name}={getattr(st, name)}: "
                                       f"`gracectl testbed down` first to change it")
                setattr(st, name, port)
        start = time.monotonic()
        with step("packages"):
            host.install_packages()
        with step("dockerd"):
            self.start_dockerd()
        with step(f"registry on {st.registry}"):
            self.start_registry()
        st.save(self.root)
        with step("binfmt for arm64"):
            host.enable_binfmt()
        self.base_images.build()
        with step("arm64 runs under qemu"):
            self.base_images.check_arm64()
        with step("stand-in git repositories"):
            self.make_repos()
            self.start_git_daemon()
        with step("package index"):
            self.make_index()
            self.standins.make_apt()
            self.start_index()
        with step(f"caching PyPI proxy on {st.proxy_url}"):
            self.start_proxy()
        manifests = [load_release(n) for n in release_names()]
        versions = sorted({m.sources.vllm.ref.removeprefix("v") for m in manifests})
        with step("upstream vLLM source releases"):
            for version in versions:
                vllm_sdist(self.root, version)
        with step("real stack: the triton_kernels each release's official vLLM wheel vendors"):
            # tag (the release's cmake pin) -> the tree; a tfa pin no wheel vendors (v3.8.0) is not here.
            trees = {m.sources.cmake["triton_kernels"].ref: vendored_triton_kernels(self.root, version)
                     for m in manifests if "triton_kernels" in m.sources.cmake
                     for version in [m.sources.vllm.ref.removeprefix("v")]}
            self.standins.make_real_triton(trees)
        self.write_mirror()
        st.save(self.root)
        say(f"test bed up in {time.monotonic() - start:.1f}s; mirror file {self.mirror_path}")
        return st

    # ----------------------------------------------------------------------------------------------------
    # the daemons
    def running(self, name: str) -> bool:
        if name == "registry":
            return self.registry_server().running()
        pid = self.state.pids.get(name)
        return bool(pid) and pid_alive(pid, DAEMONS[name])

    def _start(self, name: str, args: list[str], ready, what: str, *, timeout: float = 20.0, port: int = 0,
               env: dict[str, str] | None = None) -> None:
        def record(pid: int) -> None:  # before waiting: `down` stops a daemon that hangs at start
            self.state.pids[name] = pid
            self.state.save(self.root)

        start_daemon(args, what=what, program=DAEMONS[name], log=self.root / f"{name}.log", ready=ready,
                     timeout=timeout, port=port, record=record, env=env)

    def start_dockerd(self) -> None:
        if docker.answers():
            say("dockerd answers")
            return
        if os.geteuid() != 0:
            raise TestbedError("no dockerd answers and starting one needs root: run `gracectl testbed up` as root")
        self._start("dockerd", ["dockerd"], docker.answers, "dockerd", timeout=60)

    def start_registry(self) -> None:
        server = self.registry_server()
        if server.running() and server.answers():
            say(f"registry already runs (pid {server.pid()})")
        else:
            server.start()  # TestbedError when the port is taken by something else

    def start_git_daemon(self) -> None:
        url = self.state.git_url("vllm-project/vllm.git")
        if self.running("git-daemon") and git_answers(url):
            say(f"git daemon already runs (pid {self.state.pids['git-daemon']})")
            return
        git_root = self.standins.git_root
        self._start("git-daemon", ["git", "daemon", "--reuseaddr", "--export-all", "--informative-errors",
                                   f"--listen={HOST}", f"--port={self.state.git_port}", f"--base-path={git_root}",
                                   str(git_root)], lambda: git_answers(url), "git daemon", port=self.state.git_port)

    def start_proxy(self) -> None:
        url = f"http://{HOST}:{self.state.proxy_port}/health"
        if self.running("proxy") and http_ok(url):
            say(f"PyPI proxy already runs (pid {self.state.pids['proxy']})")
            return
        cache = self.root / "pypi-proxy-cache"  # kept across `down`/`up`: a warm CI downloads nothing
        cache.mkdir(parents=True, exist_ok=True)
        self._start("proxy", [sys.executable, "-m", "flask", "--app", "proxpi.server", "run", "--host", HOST,
                              "--port", str(self.state.proxy_port)],
                    lambda: http_ok(url), "PyPI proxy (proxpi)", port=self.state.proxy_port,
                    env={**PROXY_ENV, "PROXPI_CACHE_DIR": str(cache)})

    def start_index(self) -> None:
        url = self.state.index_url + "/"
        if self.running("index") and http_ok(url):
            say(f"package index already served (pid {self.state.pids['index']})")
            return
        self._start("index", [sys.executable, "-m", "http.server", "--bind", HOST, "--directory",
                              str(self.standins.index_root), str(self.state.index_port)],
                    lambda: http_ok(url), "package index", port=self.state.index_port)

    # ----------------------------------------------------------------------------------------------------
    # the stand-ins and the mirror file
    def make_repos(self) -> None:
        self.standins.make_repos()

    def add_vllm_commit(self, note: str) -> str:
        return self.standins.add_vllm_commit(note)

    def make_index(self) -> None:
        self.standins.make_index()

    def write_mirror(self) -> Path:
        write_mirror(self.state, self.real_mirror_path, REAL)
        return write_mirror(self.state, self.mirror_path, STANDIN)

    # ----------------------------------------------------------------------------------------------------
    def status(self) -> dict:
        st = self.state
        server = self.registry_server()
        dockerd = st.pids.get("dockerd")
        components = {
            "dockerd": {"running": docker.answers(), "pid": dockerd,
                        "started_by_testbed": bool(dockerd) and pid_alive(dockerd, "dockerd")},
            "registry": {"running": server.running() and server.answers(), "pid": server.pid(),
                         "address": st.registry, "data": str(server.root / "data")},
            "git-daemon": {"running": self.running("git-daemon"), "pid": st.pids.get("git-daemon"),
                           "address": st.git_url()},
            "index": {"running": self.running("index"), "pid": st.pids.get("index"), "address": st.index_url},
            "proxy": {"running": self.running("proxy"), "pid": st.pids.get("proxy"), "address": st.proxy_url},
            "binfmt-arm64": {"running": host.binfmt_enabled()},
        }
        registry_up = components["registry"]["running"]
        return {"state_dir": str(self.root), "components": components,
                "images": {ref: registry_up and self.base_images.registry_has(ref) for ref in st.images},
                "repos": st.repos, "vllm_alt_ref": st.vllm_alt_ref,
                "mirror_file": str(self.mirror_path) if self.mirror_path.exists() else "",
                "real_mirror_file": str(self.real_mirror_path) if self.real_mirror_path.exists() else ""}

    def down(self) -> list[str]:
        """Stop what `up` started (never a dockerd or registry somebody else runs); keeps caches and data."""
        stopped = []
        st = self.state
        for name in ("proxy", "index", "git-daemon"):
            pid = st.pids.pop(name, None)
            if pid and stop_pid(pid, DAEMONS[name]):
                stopped.append(f"{name} (pid {pid})")
        server = self.registry_server()
        if server.running():
            pid = server.pid()
            server.stop()
            stopped.append(f"registry (pid {pid})")
        pid = st.pids.pop("dockerd", None)
        if pid and stop_pid(pid, "dockerd", timeout=30):
            stopped.append(f"dockerd (pid {pid})")
        st.save(self.root)
        return stopped
