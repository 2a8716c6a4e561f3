"""Trust in an image before a tag moves to it, and what a site checks afterwards: its signature by the site key
(adapters.signing), its signed provenance (gracectl.tags.provenance), its smoke record. tags.moves' promote and
rollback ask `signature_findings`; `gracectl verify` and `report --provenance` read `verify_image`; the push
stage calls `attest`.
"""

from __future__ import annotations

from gracectl.tags import provenance
from gracectl.adapters import signing
from gracectl.adapters.registry import Registry, open_registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import NotFoundError, UsageError
from gracectl.image_ref import ImageRef
from gracectl.tags.records import get_records


def resolve(registry: Registry, ref: ImageRef) -> str:
    """The manifest digest `ref` names (checked to exist)."""
    if not ref.reference:
        raise UsageError(f"{ref} names neither a tag nor a digest")
    found = registry.head_manifest(ref.repository, ref.reference)
    if found is None:
        raise NotFoundError(f"{ref} does not exist in {ref.registry}")
    return found.digest


def signature_findings(registry: Registry, ref: ImageRef, digest: str) -> list[str]:
    """[] when the site verifies no signatures (no GRACECTL_TRUST_KEY) or `digest` carries a valid one."""
    if registry.access.trust_key is None:
        return []
    verdict = signing.verify(registry, ref, digest, signing.load_public_key(registry.access.trust_key))
    return [] if verdict.valid else [f"signature: {verdict.why}"]


def verify_image(source: str, *, access: RegistryAccess) -> dict:
    """For `gracectl verify`: the image's digest, its signature verdict by the site key, its smoke records'
    outcome and its provenance (verified, summarised). Needs the site's public key (GRACECTL_TRUST_KEY)."""
    ref = ImageRef.parse(source)
    registry = open_registry(ref, access)
    if registry.access.trust_key is None:
        raise UsageError("verify needs the site's public key: --key cosign.pub or GRACECTL_TRUST_KEY")
    digest = resolve(registry, ref)
    public_key = signing.load_public_key(registry.access.trust_key)
    verdict = signing.verify(registry, ref, digest, public_key)
    smoke = get_records(ref, digest, "smoke", registry=registry)
    found = {"image": f"{ref.repo}@{digest}", "signature": verdict.to_dict(),
             "smoke": "passed" if smoke and smoke[-1].get("passed") is True else ("failed" if smoke else "none"),
             "provenance": None}
    statements = signing.read_statements(registry, ref, digest, provenance.PREDICATE_TYPE, public_key)
    for stmt, why in reversed(statements):  # the newest valid one; else what the newest one is
        if stmt is not None:
            found["provenance"] = {"valid": True, "why": "signed, names this digest",
                                   "summary": provenance.summary(stmt), "statement": stmt}
            break
        found["provenance"] = found["provenance"] or {"valid": False, "why": why}
    return found


def attest(ref: ImageRef, digest: str, statement: dict, signing_key: signing.SigningKey,
           access: RegistryAccess, *, also: tuple[dict, ...] = ()) -> str:
    """Sign `digest` and attach its signed provenance `statement` (and the statements `also`: its SBOM) as cosign
    attaches attestations (so `cosign verify-attestation --type slsaprovenance1 --key` finds it); returns the
    attestation attachment's digest."""
    registry = open_registry(ref, access, bounded=False)
    signing.sign(registry, ref, digest, signing_key)
    return signing.attach_statements(registry, ref, digest, [statement, *also], signing_key)
