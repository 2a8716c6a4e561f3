"""The mirror files (<state>/mirror.toml and mirror-real.toml, read by gracectl.releases.mirrors): every upstream input of
every release manifest mapped to its place on the test bed, for one of two stacks:

- STANDIN ("standin"): stand-in git repositories and the stand-in package index (fake torch/vLLM that claim
  CUDA, real Triton): fast, what CI's integration tests and `gracectl rehearse` build.
- REAL ("real"): the real upstream Python packages from PyPI through the test bed's caching proxy (the official
  vLLM wheel, Triton, torch), the real triton_kernels in the Triton repository; stand-ins only where this
  machine cannot reach the upstream, each named in the plan: PyPI's CPU torch for the CUDA build, the
  flashinfer-jit-cache stand-in, no FlashInfer cubin download, the GPU-only sources' stand-in repositories.
"""

from __future__ import annotations

from pathlib import Path

from gracectl.releases.manifest import load_release, release_names
from gracectl.releases.mirrors import project_name
from gracectl.testbed.base_images import PYTHON_VERSION
from gracectl.testbed.standins import REAL_TRITON_PATH, STANDIN_REPOS
from gracectl.testbed.state import State

STANDIN, REAL = "standin", "real"
STACKS = (STANDIN, REAL)
CUDA_STANDIN_REASON = ("STAND-IN test bed: GitHub, NVIDIA's redist and the stand-in index's missing projects cannot "
                       "be reached from here")
REAL_STANDIN_REASON = ("STAND-IN test bed: no FlashInfer cubin repository, NVIDIA redist or GitHub can be reached "
                       "from here")
APT_STANDIN_REASON = ("STAND-IN: the test bed's apt repository of EMPTY packages with NVIDIA's CUDA package names and "
                      "NCCL's +cudaX.Y builds; NVIDIA's CUDA repository cannot be reached from here")
TORCH_STANDIN_REASON = ("STAND-IN: PyPI's aarch64 torch of the same public version, a CPU build; the CUDA build "
                        "lives on the PyTorch index, which cannot be reached from here")
TRITON_URL = "https://github.com/triton-lang/triton.git"


def write_mirror(state: State, path: Path, stack: str = STANDIN) -> Path:
    """Write the mirror file of `stack` (only when its text changes); the stand-in one is recorded in `state`."""
    images, repos, refs, indexes, downloads, packages, versions = {}, {}, {}, {}, {}, {}, {}
    python_packages: dict[str, str] = {}
    for name in release_names():
        m = load_release(name)
        images[m.base.build.ref] = state.base_image("build-base")
        images[m.base.runtime.ref] = state.base_image("runtime-base")
        packages.update({p: p for p in m.cuda.runtime_packages})  # from the STAND-IN apt repository
        for extra in m.runtime_extras.values():  # built and downloaded by vLLM's own image: nothing here serves them
            if extra.install and extra.repo and extra.repo not in STANDIN_REPOS:
                repos[extra.repo] = ""  # DeepEP: GitHub, and a CUDA torch and nvcc to build it, are not here
            if extra.install and extra.url:
                downloads[extra.url] = ""  # gdrcopy: NVIDIA's redist is not reachable from here
            if extra.install and extra.kind == "pip" and stack == STANDIN:  # the stand-in index serves a fixed set
                python_packages[project_name(extra.install)] = ""
        for src in m.sources.pinned().values():
            if src.repo not in STANDIN_REPOS:
                # No stand-in (a later release's DeepSelect, ...): left unmapped, so the test bed builds such a
                # release only with the official vLLM wheel (VLLM_BUILD=wheel), which never fetches it.
                continue
            repos[src.repo] = state.git_url(STANDIN_REPOS[src.repo][0])
            commit = state.repos.get(src.repo, {}).get("commit")
            if commit and src.pin not in state.repos[src.repo]:
                refs[src.pin] = commit  # pinned by an upstream commit the stand-in cannot have
        jit_cache = m.flashinfer.jit_cache_index_url  # empty: the release installs no flashinfer-jit-cache
        if stack == REAL:
            indexes[m.python.index_url] = state.proxy_url
            indexes[m.torch.index_url] = state.proxy_url
            if jit_cache:
                indexes[jit_cache] = state.flashinfer_index_url
            downloads[m.flashinfer.cubins_url] = ""
            for pin in (m.torch.version, m.torch.torchvision, m.torch.torchaudio):
                if "+" in pin:  # a +cuNNN pin of the PyTorch index -> PyPI's CPU build of that public version
                    versions[pin] = pin.split("+")[0]
            repos[TRITON_URL] = state.git_url(REAL_TRITON_PATH)
        else:
            indexes[m.python.index_url] = state.index_url
            indexes[m.torch.index_url] = state.index_url
            if jit_cache:
                indexes[jit_cache] = state.index_url
            downloads[m.flashinfer.cubins_url] = state.index_url + "/"
    reason = REAL_STANDIN_REASON if stack == REAL else CUDA_STANDIN_REASON
    lines = [f"# Written by `gracectl testbed up`: every upstream input of releases/*.toml -> the test bed ({stack} "
             "stack).",
             'build_network = "host"  # build steps reach the mirrors on 127.0.0.1',
             f'python_version = "{PYTHON_VERSION}"  # the stand-in base images carry Debian\'s Python',
             f'standin_reason = "{reason}"',
             "standin_images = true  # the CUDA bases are debootstrapped stand-ins: no upstream digest to pin",
             f'apt_sources = ["{state.apt_source}"]',
             f'apt_sources_reason = "{APT_STANDIN_REASON}"']
    if versions:
        lines.append(f'versions_reason = "{TORCH_STANDIN_REASON}"')
    if stack == STANDIN:  # the stand-in index has no sdists: release checks read the real ones (PyPI, proxied)
        lines.append(f'sources_index = "{state.proxy_url}"')
        lines.append("vllm_native = false  # the stand-in vLLM source has no CUDA extensions nor Rust parts")
    for title, table in (("images", images), ("repos", repos), ("refs", refs), ("indexes", indexes),
                         ("downloads", downloads), ("packages", packages), ("python_packages", python_packages),
                         ("versions", versions)):
        if table or title not in ("versions", "python_packages"):
            lines += ["", f"[{title}]"] + [f'"{k}" = "{v}"' for k, v in sorted(table.items())]
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    if stack == STANDIN:
        state.mirror_file = str(path)
    return path
