"""The mirror file (<state>/mirror.toml, read by gracectl.mirrors): every upstream input of every release
manifest mapped to its place on the test bed."""

from __future__ import annotations

from pathlib import Path

from gracectl.manifest import load_release, release_names
from gracectl.testbed.base_images import PYTHON_VERSION
from gracectl.testbed.standins import STANDIN_REPOS
from gracectl.testbed.state import State

CUDA_STANDIN_REASON = ("STAND-IN test bed: its Debian bases have no NVIDIA CUDA apt repository, "
                       "so the CUDA runtime packages are left out")


def write_mirror(state: State, path: Path) -> Path:
    """Write the mirror file (only when its text changes) and record it in `state`."""
    images, repos, refs, indexes, downloads, packages = {}, {}, {}, {}, {}, {}
    for name in release_names():
        m = load_release(name)
        images[m.base.build.ref] = state.base_image("build-base")
        images[m.base.runtime.ref] = state.base_image("runtime-base")
        indexes[m.python.index_url] = state.index_url
        indexes[m.torch.index_url] = state.index_url
        indexes[m.flashinfer.jit_cache_index_url] = state.index_url
        downloads[m.flashinfer.cubins_url] = state.index_url + "/"
        packages.update({p: "" for p in m.cuda.runtime_packages})
        for src in m.sources.pinned().values():
            repos[src.repo] = state.git_url(STANDIN_REPOS[src.repo][0])
            commit = state.repos[src.repo].get("commit")
            if commit and src.pin not in state.repos[src.repo]:
                refs[src.pin] = commit  # pinned by an upstream commit the stand-in cannot have
    lines = ["# Written by `gracectl testbed up`: every upstream input of releases/*.toml -> the test bed.",
             'build_network = "host"  # build steps reach the mirrors on 127.0.0.1',
             f'python_version = "{PYTHON_VERSION}"  # the stand-in base images carry Debian\'s Python',
             f'standin_reason = "{CUDA_STANDIN_REASON}"']
    for title, table in (("images", images), ("repos", repos), ("refs", refs), ("indexes", indexes),
                         ("downloads", downloads), ("packages", packages)):
        lines += ["", f"[{title}]"] + [f'"{k}" = "{v}"' for k, v in sorted(table.items())]
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    state.mirror_file = str(path)
    return path
