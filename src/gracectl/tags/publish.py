"""Publish: the one push path (`gracectl publish`, `gracectl build --push`, the pipeline's push stage). A local
image goes to an IMMUTABLE build tag by dockerd's own push (layers the registry has are skipped) or, where dockerd
would verify the registry differently from gracectl, by skopeo; an image a buildx builder already pushed by digest
(REGISTRY/REPO@sha256:..., untagged) is tagged in place. The records given are stored with the pushed digest.
Tag moves are tags.moves'.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field

from gracectl import interrupts
from gracectl.adapters import docker
from gracectl.adapters.registry import Registry, open_registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.registry_tls import dockerd_trust_gap
from gracectl.adapters.skopeo import TRANSPORTS, skopeo_copy, skopeo_inspect_raw, transport_ref
from gracectl.errors import (CommandFailedError, ConflictError, GraceError, Interrupted, OutcomeUnknownError,
                             UsageError)
from gracectl.image_ref import ImageRef
from gracectl.tags.records import put_record
from gracectl.tags.history import is_bookkeeping_tag, short


@dataclass(frozen=True)
class Published:
    ref: str
    digest: str
    image_id: str
    already: bool  # the tag already held this very image (a retried push): nothing was pushed
    records: dict[str, str] = field(default_factory=dict)  # kind -> the stored record's artifact digest

    def to_dict(self) -> dict:
        return asdict(self)


def publish(local_image: str, dest: str, *, access: RegistryAccess, attach: list[dict] = ()) -> Published:
    """Push `local_image` (a dockerd image name, or a skopeo transport ref such as oci:DIR:TAG) to the
    IMMUTABLE tag `dest`; refuse (ConflictError) if the tag already holds another image. Each dict in
    `attach` is stored as a record of the pushed digest (its "kind" says which)."""
    ref = ImageRef.parse(dest)
    if not ref.tag or ref.digest:
        raise UsageError(f"--to must be REGISTRY/REPO:TAG (an immutable build tag), got {dest!r}")
    if is_bookkeeping_tag(ref.tag):
        raise UsageError(f"{ref.tag!r} is one of gracectl's own bookkeeping tags")
    registry = open_registry(ref, access, bounded=False)  # moving layers takes as long as it takes
    if "@sha256:" in local_image and not local_image.startswith(TRANSPORTS):
        return _tag_pushed(registry, ref, ImageRef.parse(local_image), attach)
    source = transport_ref(local_image)
    # A dockerd image goes through dockerd's own push (it skips the layers the registry has) unless dockerd
    # would verify the registry differently from gracectl; then skopeo, which exports the whole image.
    daemon_image = source.startswith("docker-daemon:")
    trust_gap = dockerd_trust_gap(registry.tls) if daemon_image else ""
    via_dockerd = daemon_image and not trust_gap
    if trust_gap:
        print(f"pushing through skopeo (a full export of the image), not dockerd: {trust_gap}", file=sys.stderr,
              flush=True)
    if via_dockerd:
        found = docker.inspect_image(local_image)
        if found is None:
            raise CommandFailedError(f"dockerd has no image {local_image}: build it first")
        image_id = found["Id"]
    else:
        image_id = (skopeo_inspect_raw(source, access).get("config") or {}).get("digest", "")
    return _publish(registry, ref, local_image, image_id, attach, lambda: (
        docker.push(local_image, str(ref), ref.registry, registry.credentials) if via_dockerd
        else skopeo_copy(source, ref, registry)))


def _tag_pushed(registry: Registry, ref: ImageRef, source: ImageRef, attach: list[dict]) -> Published:
    """`source` is already in the registry by digest (a buildx builder pushed it, untagged): tag that very manifest
    (an OCI index stays one), nothing moves. Its image ID is the config digest of the image the index carries."""
    if (source.registry, source.repository) != (ref.registry, ref.repository) or not source.digest:
        raise UsageError(f"{source} is not in {ref.registry}/{ref.repository}: a pushed digest is tagged in its own "
                         "repository only (pull it and publish the local image, or push it there)")
    image_id = _config_digest(registry, ref.repository, source.digest)
    if not image_id:
        raise UsageError(f"{source} names no manifest of one image in {ref.registry} (missing, or an index of "
                         "several platforms): nothing was tagged")
    return _publish(registry, ref, str(source), image_id, attach,
                    lambda: registry.tag_digest(ref.repository, source.digest, ref.tag) or source.digest)


def _publish(registry: Registry, ref: ImageRef, source: str, image_id: str, attach: list[dict], push) -> Published:
    """Check the records, push (unless the tag already holds this image), store the records with the digest."""
    dest = str(ref)
    for record in attach:  # checked before anything is pushed
        if not isinstance(record, dict):
            raise UsageError(f"an attached record must be a JSON object, got {type(record).__name__}: nothing "
                             "was pushed")
        if record.get("image_id") and record["image_id"] != image_id:
            raise UsageError(f"the {record.get('kind')} record is of image {short(record['image_id'])}, but "
                             f"{source} is {short(image_id)}: attach records of this image only")
    existing = registry.head_manifest(ref.repository, ref.tag)
    if existing:
        if not _holds(registry, ref, existing.digest, image_id):
            raise ConflictError(f"{dest} already exists ({short(existing.digest)}) and holds another image: build "
                                "tags are immutable, publish under a new build number")
        digest, already = existing.digest, True
    else:
        digest = _push(registry, ref, image_id, push)
        already = False
    foreign = [r for r in attach if r.get("digest") not in (None, "", digest)]
    if foreign:  # never relabel another image's record as this one's
        raise UsageError(f"the {foreign[0].get('kind')} record names image {short(foreign[0]['digest'])}, not the "
                         f"pushed {short(digest)}: {dest} is pushed, no record was attached")
    stored = {}  # (signals are noted from the push on: the records always follow the image)
    for record in attach:
        kind = record.get("kind", "")
        stored[kind] = put_record(ref, digest, kind, {**record, "digest": digest}, registry=registry)
    return Published(str(ref), digest, image_id, already, stored)


def _holds(registry: Registry, ref: ImageRef, digest: str, image_id: str) -> bool:
    """Whether the manifest `digest` is of the image `image_id` (its config digest)."""
    return bool(image_id) and _config_digest(registry, ref.repository, digest) == image_id


def _config_digest(registry: Registry, repository: str, digest: str) -> str:
    """The config digest (dockerd's image ID) of manifest `digest`, or of the one image an OCI index carries (a
    builder's push: the index names its platform; attestation entries, platform unknown, are not images); ""
    when there is none or several."""
    found = registry.get_manifest(repository, digest)
    manifest = json.loads(found[0]) if found else {}
    if "manifests" in manifest:
        images = [m for m in manifest.get("manifests") or [] if (m.get("platform") or {}).get("os") != "unknown"]
        found = registry.get_manifest(repository, images[0]["digest"]) if len(images) == 1 else None
        manifest = json.loads(found[0]) if found else {}
    return str((manifest.get("config") or {}).get("digest") or "")


def _push(registry: Registry, ref: ImageRef, image_id: str, push) -> str:
    """Run `push`; its digest. Cut short by THE interrupt (the pushing child's whole group is killed and waited
    for first), the tag is read back until it holds still: it holds this image -> pushed (said, and the records
    follow); else nothing is tagged (the registry stores a manifest whole or not at all) -> Interrupted, saying
    so. Either way signals are only noted from here on: the outcome is decided."""
    try:
        try:
            digest = push()
            interrupts.hold()
            return digest
        except Exception:
            interrupts.hold()  # a refused or failed push: not tagged (the error says why)
            raise
    except Interrupted as exc:  # (signals are noted now: interrupts raises one)
        try:
            found = registry.settled_head(ref.repository, ref.tag)
            pushed = found and _holds(registry, ref, found.digest, image_id)
        except GraceError as e:
            raise OutcomeUnknownError(f"{exc}; could not tell whether {ref} was pushed: {e}. Publish again (a "
                                      "push that happened is found and kept)") from None
        if not pushed:
            raise Interrupted(f"{exc}; {ref} was NOT pushed (the tag does not hold it; nothing was tagged)",
                              exc.exit_code, outcome_said=True) from None
        print(f"warning: {exc}; but {ref} reads back with this image: it was pushed ({short(found.digest)}), "
              "its records follow", file=sys.stderr)
        interrupts.said()
        return found.digest
