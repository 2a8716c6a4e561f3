"""What the test bed needs of the host: Debian packages, and binfmt so that arm64 binaries run under qemu."""

from __future__ import annotations

import shutil
from pathlib import Path

from gracectl.adapters import proc
from gracectl.errors import TestbedError
from gracectl.testbed.progress import say

# program -> Debian package that provides it (apt-get update once, then all missing ones in one go)
PACKAGES = {
    "/usr/bin/docker": "docker.io", "dockerd": "docker.io", "docker-registry": "docker-registry",
    "skopeo": "skopeo", "qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support",
    "debootstrap": "debootstrap", "git": "git",
}
BINFMT_ARM64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


def install_packages() -> None:
    missing = sorted({pkg for prog, pkg in PACKAGES.items() if not shutil.which(prog)})
    if not missing:
        say("all packages present")
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    proc.run(["apt-get", "update", "-q"], env=env, timeout=600)
    proc.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env, timeout=1200)


def binfmt_enabled() -> bool:
    try:
        return BINFMT_ARM64.read_text().startswith("enabled")
    except OSError:
        return False


def enable_binfmt() -> None:
    if not binfmt_enabled():
        proc.run(["update-binfmts", "--enable", "qemu-aarch64"])
    if not binfmt_enabled():
        raise TestbedError("binfmt for qemu-aarch64 is not enabled after `update-binfmts --enable qemu-aarch64` "
                           "(is binfmt_misc available in this kernel/container?)")
