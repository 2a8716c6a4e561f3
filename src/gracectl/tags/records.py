"""Smoke/bench/build records stored WITH the image, in the registry (not on a CI agent's disk).

Each record is an OCI artifact (see adapters.registry.push_artifact): one JSON layer of media type
`application/vnd.gracectl.<kind>.v1+json`, `artifactType` the same, and `subject` = the image manifest
it describes (the OCI 1.1 referrers model, so a registry with the referrers API lists it as a referrer).
get_records reads the referrers API where the registry offers it. Distribution 2.8 (Debian's
docker-registry) has none, so we also keep the OCI tag-schema fallback, one tag per kind: `sha256-<hex>.<kind>` points at an OCI index listing every record of that
kind for that digest, oldest first (a smoke rerun, a bench per GPU model append to it).

    put_record("127.0.0.1:5000/gh200-vllm-tfa", "sha256:...", "smoke", {...}, registry=r) -> record manifest digest
    get_records("127.0.0.1:5000/gh200-vllm-tfa", "sha256:...", "smoke", registry=r) -> [dict, ...]

Appending to the index is read-modify-write; two writers at the same instant could drop one entry, so
put_record reads the index back and retries. (Records are written by the push stage and by bench runs,
rarely at the same moment.)
"""

from __future__ import annotations

import json
import re
import sys
import time

from gracectl.adapters.registry import OCI_INDEX, DamagedArtifact, Registry, open_registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.image_ref import DIGEST_RE, ImageRef
from gracectl.errors import RegistryError, UsageError
from gracectl.record_files import utc_now

KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
APPEND_ATTEMPTS = 5
READ_BACK_DELAY_S = 0.2


def artifact_type(kind: str) -> str:
    return f"application/vnd.gracectl.{kind}.v1+json"


def record_tag(digest: str, kind: str) -> str:
    """The tag-schema fallback tag: sha256:abc... + smoke -> sha256-abc....smoke"""
    if not DIGEST_RE.match(digest):
        raise UsageError(f"a record needs an image manifest digest (sha256:<64 hex>), got {digest!r}")
    if not KIND_RE.match(kind):
        raise UsageError(f"record kind must be lower-case letters, digits and dashes, got {kind!r}")
    return digest.replace(":", "-") + "." + kind


def _repo(repo_ref: str | ImageRef) -> ImageRef:
    return repo_ref if isinstance(repo_ref, ImageRef) else ImageRef.parse(repo_ref)


def put_record(repo_ref: str | ImageRef, digest: str, kind: str, data: dict, *, registry: Registry) -> str:
    """Store `data` as a `kind` record of image `digest` in repository `repo_ref` (HOST[:PORT]/REPO).

    The stored JSON gets "kind" and "digest" filled in (a mismatch is a UsageError). Returns the record
    artifact's manifest digest.
    """
    tag = record_tag(digest, kind)
    ref = _repo(repo_ref)
    if data.get("kind", kind) != kind or data.get("digest") not in (None, "", digest):
        raise UsageError(f"record says kind={data.get('kind')!r} digest={data.get('digest')!r}, "
                         f"but is stored as {kind} of {digest}")
    subject = registry.head_manifest(ref.repository, digest)
    if subject is None:
        raise RegistryError(f"no image {ref.repo}@{digest}: push it before storing its {kind} record")
    payload = json.dumps({**data, "kind": kind, "digest": digest}, indent=2, sort_keys=True).encode()
    artifact = registry.push_artifact(
        ref.repository, "", artifact_type(kind), payload, subject=subject,
        annotations={"org.opencontainers.image.created": utc_now(), "io.gracectl.record.kind": kind},
    )
    entry = {**artifact.to_dict(), "artifactType": artifact_type(kind)}
    for _ in range(APPEND_ATTEMPTS):
        entries = _index_entries(registry, ref.repository, tag)
        if all(e["digest"] != artifact.digest for e in entries):
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries + [entry]}
            registry.put_manifest(ref.repository, tag, json.dumps(index, sort_keys=True).encode(), OCI_INDEX)
        time.sleep(READ_BACK_DELAY_S)  # let a concurrent writer's PUT land, then check ours survived
        if any(e["digest"] == artifact.digest for e in _index_entries(registry, ref.repository, tag)):
            return artifact.digest
    raise RegistryError(f"could not add the {kind} record to {ref.repo}:{tag}: the index kept changing")


def get_records(repo_ref: str | ImageRef, digest: str, kind: str, *,
                registry: Registry) -> list[dict]:
    """Every `kind` record of image `digest`, oldest first ([] when there is none)."""
    tag = record_tag(digest, kind)
    ref = _repo(repo_ref)
    entries = _index_entries(registry, ref.repository, tag)
    # Where the registry offers the referrers API, it also lists records the fallback index missed (another
    # tool's push, an index update lost to a crash): those come after the index's, oldest first.
    listed = {e["digest"] for e in entries}
    referrers = registry.referrers(ref.repository, digest, artifact_type(kind)) or []
    entries += sorted((d for d in referrers if d.get("digest") not in listed),
                      key=lambda d: (d.get("annotations") or {}).get("org.opencontainers.image.created", ""))
    records = []
    for entry in entries:
        try:
            found = registry.read_artifact(ref.repository, entry["digest"])
        except DamagedArtifact:
            found = (None, {"subject": {"digest": digest}}, b"")  # said below, like any damaged record
        if found is None:
            continue  # deleted by a registry clean-up: the index is only a list of pointers
        _, manifest, payload = found
        subject = manifest.get("subject") or {}
        if isinstance(subject, dict) and subject.get("digest") != digest:
            raise RegistryError(f"{ref.repo}:{tag} lists {entry['digest']}, a record of another image")
        try:
            record = json.loads(payload)
        except ValueError:
            record = None
        if not isinstance(subject, dict) or not isinstance(record, dict) or record.get("digest", digest) != digest:
            # A damaged record counts for nothing (a gate then sees no passing record); it is said, not fatal.
            print(f"warning: {ref.repo}@{entry['digest'][:19]} ({kind} record of {digest[:19]}) is damaged or "
                  "names another image: ignored", file=sys.stderr)
            continue
        records.append(record)
    return records


def newest_record(source: str, kind: str, access: RegistryAccess) -> dict:
    """The newest `kind` record stored with image `source` (REGISTRY/REPO:TAG or @sha256:...)."""
    ref = ImageRef.parse(source)
    registry = open_registry(ref, access)
    found = registry.head_manifest(ref.repository, ref.reference or "latest")
    if found is None:
        raise UsageError(f"{source}: no such image in the registry")
    records = get_records(ref, found.digest, kind, registry=registry)
    if not records:
        raise UsageError(f"{source} ({found.digest[:19]}) has no {kind} record: it was pushed without one")
    return records[-1]


def _index_entries(registry: Registry, repository: str, tag: str) -> list[dict]:
    """The record index's entries; a damaged index is said and read as empty (publishing a record rewrites it)."""
    found = registry.get_manifest(repository, tag)
    if found is None:
        return []
    try:
        entries = json.loads(found[0]).get("manifests") or []
    except (ValueError, AttributeError):
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and DIGEST_RE.match(str(e.get("digest")))
                                                for e in entries):
        print(f"warning: {registry.host}/{repository}:{tag} is not a record index: ignored", file=sys.stderr)
        return []
    return entries
