"""What a build installs of the manifest's [runtime_extras] (what vLLM's own final image installs beyond vLLM),
through the site's mirror: the build args the Dockerfile's apt, pip, DeepEP and gdrcopy steps take, the record of
what went in (image.json, io.gracectl.runtime-extras), and one line per upstream install for `gracectl plan`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gracectl.errors import UsageError
from gracectl.releases.manifest import Manifest
from gracectl.releases.mirrors import Mirror


@dataclass(frozen=True)
class ExtrasPlan:
    """What this build installs of the manifest's [runtime_extras], through the mirror."""

    apt: list[str]  # apt packages (the mirror's names)
    pip: list[str]  # pip requirements, added to the final install
    deepep_repo: str
    deepep_ref: str  # empty: DeepEP is not built
    nvshmem: str  # the NVSHMEM wheel DeepEP is built against
    gdrcopy_url: str  # empty: gdrcopy is not installed
    record: list[str]  # "KIND:KEY" of everything installed: image.json / io.gracectl.runtime-extras
    lines: list[str]  # one per upstream install, for `gracectl plan`
    standins: list[str]


def extras_plan(m: Manifest, mirror: Mirror) -> ExtrasPlan:
    apt, record, lines, standins = [], [], [], []
    deepep_repo = deepep_ref = nvshmem = gdrcopy_url = ""
    for key, e in sorted(m.runtime_extras.items()):
        how = (f"installed: {e.install}" if e.install else f"covered by {e.covered}" if e.covered
               else f"EXCLUDED: {e.excluded}")
        dropped = ""
        if e.install and e.kind == "apt":
            name = mirror.package(e.install)
            if name:
                apt.append(name)
            else:
                dropped = f"not installed: {mirror.standin_reason}"
        elif e.install and e.kind == "pip":
            if not mirror.python_package(e.install):
                dropped = f"not installed: the mirror's index has no {e.install} ({mirror.standin_reason})"
        elif e.install and key == "deepep":
            repo = mirror.repo(e.repo)
            if repo:
                deepep_repo, deepep_ref = repo, mirror.ref(e.ref)
                nvshmem = f"nvidia-nvshmem-cu{m.cuda.version.split('.')[0]}=={e.nvshmem}"
                how += f" (DeepEP {e.ref} built for {m.build.cuda_arch_list} against the image's torch, NVSHMEM " \
                       f"{e.nvshmem} from the index)"
            else:
                dropped = f"not built: the mirror serves no {e.repo} ({mirror.standin_reason})"
        elif e.install and key == "gdrcopy":
            gdrcopy_url = mirror.download(e.url)
            if not gdrcopy_url:
                dropped = f"not installed: the mirror serves no {e.url} ({mirror.standin_reason})"
        elif e.install and e.kind != "pip":
            raise UsageError(f"runtime_extras.{key}: this Dockerfile has no stage that installs a {e.kind} "
                             f"{e.install!r}: exclude it with a reason, or add the stage")
        if e.install and not dropped:
            record.append(f"{e.kind}:{key}")
        if dropped:
            standins.append(f"runtime_extras.{key}: {e.upstream} ({dropped})")
            how += f" - STAND-IN here, {dropped}"
        lines.append(f"{key} ({e.kind}): {e.upstream} -> {how}")
    pip = [mirror.python_package(r) for r in m.runtime_pip_requirements()
           if deepep_ref or not r.startswith("nvidia-nvshmem-")]
    pip = [r for r in pip if r]
    return ExtrasPlan(apt, pip, deepep_repo, deepep_ref, nvshmem, gdrcopy_url, record, lines, standins)
