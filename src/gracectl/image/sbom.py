"""What is in an image, as a record: the final image's installed Python distributions AND its Debian/Ubuntu
packages (the CUDA apt packages among them) as one CycloneDX SBOM.

pip's inspect report (`python -m pip inspect --local`, run in the image by the image's own pip, no network) lists
every installed distribution with its metadata, its installer and, for one installed from a file (our own
wheels: triton, DeepGEMM, triton_kernels, a self-built vLLM), its direct_url. The image's dpkg database
(`dpkg-query -W`, run in the image, with /etc/os-release for the distribution) lists every OS package: the base
image's, the runtime apt packages, the CUDA runtime packages from NVIDIA's repository. cyclonedx-python-lib, the
CycloneDX project's own library, writes it as CycloneDX 1.6 JSON: one component per distribution (purl
pkg:pypi/NAME@VERSION, gracectl:origin the wheel file, else the package index) and per OS package (purl
pkg:deb/DISTRO/NAME@VERSION?arch=ARCH&distro=DISTRO-VERSION, gracectl:origin "dpkg", gracectl:cuda for NVIDIA's).

The build stage writes the SBOM record (kind "sbom": the image, its id and the BOM), the push stage stores it
with the pushed digest beside the smoke record (records.py) and, where the site signs, attaches it as a signed
CycloneDX attestation where cosign looks (`cosign verify-attestation --type cyclonedx`); `gracectl report
--packages A B` diffs the package sets of two images (OS packages as deb:NAME): what a rollback from A to B
changes, before running it.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL
from packaging.utils import canonicalize_name as normalize  # PEP 503 names

from gracectl.adapters import docker, proc
from gracectl.adapters.signing import in_toto_statement
from gracectl.errors import CommandFailedError, UsageError
from gracectl.record_files import utc_now

KIND = "sbom"
FORMAT = "CycloneDX 1.6 JSON"
ORIGIN = "gracectl:origin"
INDEX_ORIGIN = "package index"
DPKG_ORIGIN = "dpkg"
PREDICATE_TYPE = "https://cyclonedx.org/bom"  # cosign's --type cyclonedx
# NVIDIA's CUDA repository packages (the runtime base image's and CUDA_RUNTIME_PACKAGES), by name
CUDA_PACKAGE = re.compile(r"^(cuda-|libcu|libnccl|libnv|libnpp|libcudnn|nvidia-|libgdrapi)")
_DPKG_FORMAT = r"${Package}\t${Version}\t${Architecture}\t${db:Status-Abbrev}\n"



def inspect_image(image: str, timeout: float = 900) -> dict:
    """pip's inspect report of the image's Python environment (the image's python, entrypoint overridden)."""
    result = docker.run(["run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "python", image,
                         "-m", "pip", "inspect", "--local"], check=False, echo=False, timeout=timeout)
    if result.returncode != 0:
        raise CommandFailedError(f"pip inspect in {image} failed (exit {result.returncode}): "
                                 f"{proc.last_line(result.stdout) or 'no output'}",
                                 returncode=result.returncode, output=result.stdout)
    try:
        return json.loads(result.stdout[result.stdout.index("{"):])
    except ValueError:
        raise CommandFailedError(f"pip inspect in {image} printed no JSON report") from None


def os_packages(image: str, timeout: float = 300) -> dict:
    """The image's OS packages from its dpkg database: {"os": {"id", "version_id"}, "packages": [{"name",
    "version", "arch"}]}, installed ones only; an image without dpkg has none ({"os": {...}, "packages": []})."""
    script = (f"cat /etc/os-release 2>/dev/null; echo @@dpkg@@; command -v dpkg-query >/dev/null || exit 0; "
              f"dpkg-query -W -f={shlex.quote(_DPKG_FORMAT)}")
    result = docker.run(["run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "sh", image,
                         "-c", script], check=False, echo=False, timeout=timeout)
    if result.returncode != 0 or "@@dpkg@@" not in result.stdout:
        raise CommandFailedError(f"dpkg-query in {image} failed (exit {result.returncode}): "
                                 f"{proc.last_line(result.stdout) or 'no output'}",
                                 returncode=result.returncode, output=result.stdout)
    release, _, listing = result.stdout.partition("@@dpkg@@")
    fields = dict(line.split("=", 1) for line in release.splitlines() if "=" in line)
    found = []
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[3].strip().startswith("ii"):  # installed, not half-removed or config-only
            found.append({"name": parts[0], "version": parts[1], "arch": parts[2]})
    return {"os": {k: fields.get(k.upper(), "").strip('"') for k in ("id", "version_id")}, "packages": found}


def bom_from_inspect(report: dict, image: str, dpkg: dict | None = None) -> dict:
    """The CycloneDX JSON (a dict) of the distributions in pip's inspect report and the OS packages of `dpkg`
    (os_packages' answer)."""
    bom = Bom()
    root = bom.metadata.component = Component(name=image, type=ComponentType.CONTAINER, bom_ref="image")
    for dist in sorted(report.get("installed", []), key=lambda d: normalize(d["metadata"]["name"])):
        meta = dist["metadata"]
        name, version = meta["name"], meta["version"]
        url = (dist.get("direct_url") or {}).get("url", "")
        props = [Property(name=ORIGIN, value=url or INDEX_ORIGIN)]
        if dist.get("installer"):
            props.append(Property(name="gracectl:installer", value=dist["installer"]))
        bom.components.add(Component(name=name, version=version, type=ComponentType.LIBRARY,
                                     purl=PackageURL("pypi", None, normalize(name), version),
                                     bom_ref=f"pypi:{normalize(name)}@{version}", properties=props))
    distro = (dpkg or {}).get("os") or {}
    qualifiers = {"distro": f"{distro.get('id', '')}-{distro.get('version_id', '')}".strip("-")}
    for pkg in sorted((dpkg or {}).get("packages", []), key=lambda p: p["name"]):
        props = [Property(name=ORIGIN, value=DPKG_ORIGIN)]
        if CUDA_PACKAGE.match(pkg["name"]):
            props.append(Property(name="gracectl:cuda", value="true"))
        bom.components.add(Component(
            name=pkg["name"], version=pkg["version"], type=ComponentType.LIBRARY, properties=props,
            purl=PackageURL("deb", distro.get("id") or None, pkg["name"], pkg["version"],
                            {"arch": pkg["arch"], **qualifiers}),
            bom_ref=f"deb:{pkg['name']}@{pkg['version']}:{pkg['arch']}"))
    bom.register_dependency(root, bom.components)  # the image holds every package (no finer graph)
    return json.loads(JsonV1Dot6(bom).output_as_string())


def sbom_record(image: str, image_id: str, created: str | None = None) -> dict:
    """The SBOM record of a local image: what the push stage stores with its digest."""
    dpkg = os_packages(image)
    bom = bom_from_inspect(inspect_image(image), image, dpkg)
    return {"kind": KIND, "schema": 1, "image": image, "image_id": image_id, "created": created or utc_now(),
            "format": FORMAT, "packages": len(bom.get("components", [])), "os_packages": len(dpkg["packages"]),
            "bom": bom}


def statement(repository: str, digest: str, record: dict) -> dict:
    """The SBOM record's BOM as an in-toto statement about image `digest` (what cosign attests with --type
    cyclonedx)."""
    return in_toto_statement(repository, digest, PREDICATE_TYPE, record["bom"])


def packages(bom: dict) -> dict[str, dict[str, str]]:
    """name -> {"version", "origin"} of a CycloneDX BOM's components: a Python distribution by its normalized
    name, an OS package as deb:NAME."""
    out = {}
    for c in bom.get("components", []):
        props = {p["name"]: p["value"] for p in c.get("properties", [])}
        name = f"deb:{c['name']}" if str(c.get("purl", "")).startswith("pkg:deb/") else normalize(c["name"])
        out[name] = {"version": c.get("version", ""), "origin": props.get(ORIGIN, "")}
    return out


def diff(a: dict, b: dict) -> dict:
    """What changes going from BOM `a` to BOM `b`: added, removed, and changed (version or origin) packages."""
    pa, pb = packages(a), packages(b)
    return {
        "added": {n: pb[n]["version"] for n in sorted(pb.keys() - pa.keys())},
        "removed": {n: pa[n]["version"] for n in sorted(pa.keys() - pb.keys())},
        "changed": {n: {"from": pa[n], "to": pb[n]} for n in sorted(pa.keys() & pb.keys()) if pa[n] != pb[n]},
        "same": sum(1 for n in pa.keys() & pb.keys() if pa[n] == pb[n]),
    }


def read_record(path: Path) -> dict:
    """The SBOM record in a local record file (sbom-record.json); one stored in a registry is
    tags.records.newest_record's."""
    record = json.loads(path.read_text())
    if record.get("kind") != KIND or "bom" not in record:
        raise UsageError(f"{path} is not an SBOM record (kind {record.get('kind')!r})")
    return record
