"""Debian base images for linux/arm64 and linux/amd64, pushed to the test bed's registry as multi-arch indexes
(BuildKit resolves a foreign-platform base only from a registry).

Each rootfs is made with debootstrap and cached as a tarball in <state>/rootfs/ under a key of the debootstrap
arguments (cold: about 7 minutes on 2 cores, arm64 under qemu; warm: nothing to do).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gracectl.adapters import docker, proc
from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import CommandFailedError, RegistryError, TestbedError
from gracectl.testbed.processes import log_tail
from gracectl.testbed.progress import now_and_then, say, step
from gracectl.testbed.state import SUITE, State

ARCHES = ("arm64", "amd64")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Both bases carry what the Dockerfile's apt-ensure would otherwise install under qemu on every cold build cache
# (minutes, every time). Runtime base: the final image's runtime prerequisites (Python + headers, a C compiler
# for Triton's launcher stub, libibverbs for NCCL over InfiniBand, media libraries) as vllm/Dockerfile's base
# stage lists them. Build base: Python, headers, git and the toolchain.
BASE_INCLUDES = {
    "runtime-base": "python3,python3-venv,python3.11-dev,git,ca-certificates,gcc,g++,libc6-dev,libibverbs1,"
                    "ibverbs-providers,ffmpeg,libsm6,libxext6,libgl1",
    "build-base": "python3,python3-venv,python3-dev,git,ca-certificates,build-essential,ccache",
}
PYTHON_VERSION = "3.11"  # Debian bookworm's python3


class BaseImages:
    def __init__(self, root: Path, state: State):
        self.root, self.state = root, state

    def build(self) -> None:
        """Every flavour for every arch, and its index; what is cached and in the registry is not redone."""
        for flavour in BASE_INCLUDES:
            # arm64 (qemu: CPU) and amd64 (mostly download) debootstrap side by side; one job per arch at a
            # time, so that each arch's .deb cache has one writer
            with ThreadPoolExecutor(len(ARCHES)) as pool:
                list(pool.map(lambda arch: self.rootfs(flavour, arch), ARCHES))  # noqa: B023
            for arch in ARCHES:
                self.image(flavour, arch)
            self.push_index(flavour)

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
                self._debootstrap([args[0], f"--cache-dir={cache}", *args[1:], str(target), DEBIAN_MIRROR],
                                  target, f"debootstrap {flavour} {arch}")
                # Nothing of the build host's apt state: smaller image, same bytes every time.
                for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                    for p in (target / junk).glob("*"):
                        if p.is_file():
                            p.unlink()
                partial = Path(tmp) / "rootfs.tar"
                proc.run(["tar", "--numeric-owner", "-C", str(target), "-cf", str(partial), "."])
                partial.rename(tarball)
        return tarball

    @staticmethod
    def _debootstrap(cmd: list[str], target: Path, what: str) -> None:
        """debootstrap, retried once: a mirror mid-sync or a dropped download fails a 10-minute cold set-up.
        Its real reason is in the target's debootstrap.log (its stdout ends with the last step it began)."""
        for attempt in (1, 2):
            try:
                proc.run(cmd, timeout=3600, on_line=now_and_then(what))
                return
            except CommandFailedError as exc:
                log = target / "debootstrap" / "debootstrap.log"
                reason = log_tail(log, lines=3) if log.is_file() else ""
                if attempt == 2:
                    raise TestbedError(f"{what} failed twice: {reason or exc}") from None
                say(f"{what} failed ({reason or exc}); retrying once from a clean target")
                shutil.rmtree(target, ignore_errors=True)

    def image(self, flavour: str, arch: str) -> str:
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
            # the test bed's own loopback registry (plain http): no site's credentials or CAs apply
            return Registry(self.state.registry, RegistryAccess()).head_manifest(name, tag) is not None
        except RegistryError:
            return False

    def check_arm64(self) -> None:
        out = docker.run(["run", "--rm", "--platform", "linux/arm64", "--pull", "missing",
                          f"{self.state.base_image('runtime-base')}-arm64", "uname", "-m"]).stdout.strip()
        if out.splitlines()[-1:] != ["aarch64"]:
            raise TestbedError(f"an arm64 container printed {out!r} for `uname -m`, not aarch64: binfmt/qemu "
                               f"does not work (check /proc/sys/fs/binfmt_misc/qemu-aarch64)")
        say("arm64 container: uname -m = aarch64")
