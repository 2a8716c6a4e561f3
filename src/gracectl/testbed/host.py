"""What the test bed needs of the host: Debian packages, and binfmt so that arm64 binaries run under qemu."""

from __future__ import annotations

import shutil
from pathlib import Path

from gracectl.adapters import proc, tools
from gracectl.errors import TestbedError
from gracectl.testbed.progress import say

# program -> Debian packages that provide it, from the one table (adapters.tools); apt-get update once, then
# all missing ones in one go. Debian's docker client by its path: gracectl never takes `docker` from PATH.
PACKAGES = {("/usr/bin/docker" if prog == "docker" else prog): pkgs
            for prog, pkgs in tools.testbed_packages().items()}
BINFMT_ARM64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


def install_packages() -> None:
    missing = sorted({pkg for prog, pkgs in PACKAGES.items() if not shutil.which(prog) for pkg in pkgs})
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
