"""What is in an image, as a record: the final image's installed Python distributions as a CycloneDX SBOM.

pip's inspect report (`python -m pip inspect --local`, run in the image by the image's own pip, no network) lists
every installed distribution with its metadata, its installer and, for one installed from a file (our own
wheels: triton, DeepGEMM, triton_kernels, a self-built vLLM), its direct_url. cyclonedx-python-lib, the CycloneDX
project's own library, writes it as CycloneDX 1.6 JSON: one component per distribution (name, version,
purl pkg:pypi/NAME@VERSION) with where it came from (gracectl:origin: the wheel file, else the package index).

The build stage writes the SBOM record (kind "sbom": the image, its id and the BOM), the push stage stores it
with the pushed digest beside the smoke record (records.py), and `gracectl report --packages A B` diffs the
package sets of two images: what a rollback from A to B changes, before running it.
"""

from __future__ import annotations

import json
from pathlib import Path

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL
from packaging.utils import canonicalize_name as normalize  # PEP 503 names

from gracectl.adapters import docker, proc
from gracectl.adapters.registry import open_registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.image_ref import ImageRef
from gracectl.errors import CommandFailedError, UsageError
from gracectl.records import get_records, utc_now

KIND = "sbom"
FORMAT = "CycloneDX 1.6 JSON"
ORIGIN = "gracectl:origin"
INDEX_ORIGIN = "package index"



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


def bom_from_inspect(report: dict, image: str) -> dict:
    """The CycloneDX JSON (a dict) of the distributions in pip's inspect report."""
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
    bom.register_dependency(root, bom.components)  # the image holds every distribution (no finer graph)
    return json.loads(JsonV1Dot6(bom).output_as_string())


def sbom_record(image: str, image_id: str, created: str | None = None) -> dict:
    """The SBOM record of a local image: what the push stage stores with its digest."""
    bom = bom_from_inspect(inspect_image(image), image)
    return {"kind": KIND, "schema": 1, "image": image, "image_id": image_id, "created": created or utc_now(),
            "format": FORMAT, "packages": len(bom.get("components", [])), "bom": bom}


def packages(bom: dict) -> dict[str, dict[str, str]]:
    """normalized name -> {"version", "origin"} of a CycloneDX BOM's components."""
    out = {}
    for c in bom.get("components", []):
        props = {p["name"]: p["value"] for p in c.get("properties", [])}
        out[normalize(c["name"])] = {"version": c.get("version", ""), "origin": props.get(ORIGIN, "")}
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


def load(source: str, access: RegistryAccess | None = None) -> dict:
    """The SBOM record of `source`: a record file (sbom-record.json), or an image in a registry
    (REGISTRY/REPO:TAG or @sha256:...), whose newest stored SBOM record is read."""
    path = Path(source)
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("kind") != KIND or "bom" not in record:
            raise UsageError(f"{source} is not an SBOM record (kind {record.get('kind')!r})")
        return record
    ref = ImageRef.parse(source)
    registry = open_registry(ref, access)
    found = registry.head_manifest(ref.repository, ref.reference or "latest")
    if found is None:
        raise UsageError(f"{source}: no such image in the registry")
    records = get_records(ref, found.digest, KIND, registry=registry)
    if not records:
        raise UsageError(f"{source} ({found.digest[:19]}) has no SBOM record: it was pushed without one")
    return records[-1]
