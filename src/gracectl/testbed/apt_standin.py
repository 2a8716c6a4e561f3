"""STAND-IN for NVIDIA's CUDA apt repository, which cannot be reached from here: a flat apt repository of EMPTY
packages with the names the release manifests install (cuda.runtime_packages) and NCCL's version layout
(libnccl2/libnccl-dev in one build per CUDA, `2.28.9-1+cuda13.0`), served by the test bed's package index. With it
the base stage's CUDA package install and its NCCL pin run their own code on the test bed, instead of being left out.

Each package installs one file, /usr/share/doc/<name>/STAND-IN, saying what it is. A newer NCCL build for a CUDA no
release uses is there too, as NVIDIA's repository has them: a pin that took "the newest" instead of this CUDA's
build would install it.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from gracectl.adapters import proc

# The NCCL builds each CUDA gets (two, so "the newest of this CUDA" is a choice), and the decoy: newer, for a CUDA
# no manifest names.
NCCL_VERSIONS = ("2.27.7-1", "2.28.9-1")
DECOY_NCCL = "2.29.1-1+cuda99.9"
NCCL_PACKAGES = ("libnccl2", "libnccl-dev")


def standin_packages(runtime_packages: set[str], nccl_suffixes: set[str]) -> dict[str, list[str]]:
    """Package name -> the versions the stand-in repository carries."""
    found = {name: ["0.0.0-1~gracectl.standin"] for name in runtime_packages if not name.startswith("libnccl")}
    nccl = [f"{v}{s}" for s in sorted(nccl_suffixes) for v in NCCL_VERSIONS] + [DECOY_NCCL]
    found.update({name: nccl for name in NCCL_PACKAGES})
    return dict(sorted(found.items()))


def make_apt_repo(root: Path, packages: dict[str, list[str]]) -> Path:
    """The flat repository in `root` (Packages, Release, the .debs); rebuilt only when `packages` changes.
    Its sources line: `deb [trusted=yes] URL-OF-ROOT ./` (unsigned: a stand-in; a site's mirror is signed)."""
    fingerprint = hashlib.sha256(json.dumps(packages, sort_keys=True).encode()).hexdigest()
    stamp = root / ".fingerprint"
    if stamp.is_file() and stamp.read_text() == fingerprint and (root / "Release").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    stanzas = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, versions in packages.items():
            for version in versions:
                deb = root / f"{name}_{version.replace('+', '_').replace('~', '_')}_all.deb"
                tree = Path(tmp) / f"{name}-{version}"
                (tree / "DEBIAN").mkdir(parents=True)
                doc = tree / "usr" / "share" / "doc" / name / "STAND-IN"
                doc.parent.mkdir(parents=True)
                doc.write_text(f"{name} {version}: an empty STAND-IN package of the gracectl test bed, in place of "
                               "NVIDIA's CUDA apt repository\n")
                control = {"Package": name, "Version": version, "Architecture": "all",
                           "Maintainer": "gracectl test bed <testbed@gracectl.invalid>", "Installed-Size": "1",
                           "Description": f"STAND-IN for NVIDIA's {name} (empty)"}
                (tree / "DEBIAN" / "control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
                proc.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], echo=False)
                data = deb.read_bytes()
                stanzas.append({**control, "Filename": f"./{deb.name}", "Size": str(len(data)),
                                "SHA256": hashlib.sha256(data).hexdigest()})
    index = "\n".join("".join(f"{k}: {v}\n" for k, v in s.items()) for s in stanzas)
    (root / "Packages").write_text(index)
    digest = hashlib.sha256(index.encode()).hexdigest()
    (root / "Release").write_text(f"Origin: gracectl test bed\nLabel: STAND-IN NVIDIA CUDA apt repository\n"
                                  f"Date: {email.utils.formatdate(usegmt=True)}\n"
                                  f"SHA256:\n {digest} {len(index.encode())} Packages\n")
    stamp.write_text(fingerprint)
    return root
