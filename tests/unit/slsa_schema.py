"""SLSA Provenance v1 as a JSON schema, shared by the unit and integration tests of the provenance (its one copy), and
the inputs a build of a plan resolved (a build record's "resolved") for tests that sign without building."""

from __future__ import annotations

import copy
import hashlib
import re

from gracectl.tags import provenance

# SLSA Provenance v1 (https://slsa.dev/spec/v1.0/provenance) in an in-toto Statement v1, as a JSON schema: the
# spec's required fields and types; ResourceDescriptor needs one of uri/digest/content, uri absolute, digest values
# lower-case hex; timestamps RFC 3339.
_URI = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$"}
_TIME = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"}
_DESCRIPTOR = {"type": "object", "anyOf": [{"required": ["uri"]}, {"required": ["digest"]}, {"required": ["content"]}],
               "properties": {"uri": _URI, "name": {"type": "string"}, "content": {"type": "string"},
                              "digest": {"type": "object", "minProperties": 1,
                                         "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]+$"}},
                              "downloadLocation": _URI, "mediaType": {"type": "string"},
                              "annotations": {"type": "object"}},
               "additionalProperties": False}
SLSA_V1 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "required": ["_type", "subject", "predicateType", "predicate"], "additionalProperties": False,
    "properties": {
        "_type": {"const": "https://in-toto.io/Statement/v1"},
        "subject": {"type": "array", "minItems": 1, "items": {**_DESCRIPTOR, "required": ["digest"]}},
        "predicateType": {"const": "https://slsa.dev/provenance/v1"},
        "predicate": {"type": "object", "required": ["buildDefinition", "runDetails"], "additionalProperties": False,
                      "properties": {
            "buildDefinition": {"type": "object", "required": ["buildType", "externalParameters"],
                                "additionalProperties": False, "properties": {
                "buildType": _URI, "externalParameters": {"type": "object", "minProperties": 1},
                "internalParameters": {"type": "object"},
                "resolvedDependencies": {"type": "array", "items": _DESCRIPTOR}}},
            "runDetails": {"type": "object", "required": ["builder"], "additionalProperties": False, "properties": {
                "builder": {"type": "object", "required": ["id"], "additionalProperties": False, "properties": {
                    "id": _URI, "version": {"type": "object"},
                    "builderDependencies": {"type": "array", "items": _DESCRIPTOR}}},
                "metadata": {"type": "object", "additionalProperties": False, "properties": {
                    "invocationId": {"type": "string", "minLength": 1}, "startedOn": _TIME, "finishedOn": _TIME}},
                "byproducts": {"type": "array", "items": _DESCRIPTOR}}}}},
    },
}


def _pinned(schema: dict) -> dict:
    """`schema` with gracectl's own rule on top of SLSA's: every resolved dependency has an absolute uri AND a digest
    (SLSA asks for one of uri/digest/content; issue 31: the build names each input by what it resolved)."""
    out = copy.deepcopy(schema)
    deps = out["properties"]["predicate"]["properties"]["buildDefinition"]["properties"]["resolvedDependencies"]
    deps["items"] = {**deps["items"], "required": ["uri", "digest"]}
    return out


SLSA_V1_PINNED = _pinned(SLSA_V1)


def full_commit(repo: str, ref: str) -> str:
    """The commit a fetch of `ref` checks out: a (short) commit extended to 40 hex, a tag some commit of its own."""
    made = hashlib.sha1(f"{repo}@{ref}".encode()).hexdigest()
    return ref + made[len(ref):] if re.fullmatch("[0-9a-f]{7,40}", ref) else made


def resolved_for(plan: dict) -> dict:
    """A build record's "resolved" for `plan` as gracectl.image.build_inputs records it: each base image by a digest, each
    git source a built stage fetches by a commit, the final install's wheels by sha256."""
    args = plan["build_args"]
    git = [{"repo": repo, "ref": ref,
            "commit": full_commit(repo, ref)}
           for _, repo, ref, stage in provenance._pins(plan)
           if stage in set(plan["stages"]) - set(plan["not_built"])]
    return {"images": {args[a]: "sha256:" + hashlib.sha256(a.encode()).hexdigest()
                       for a in ("BUILD_BASE_IMAGE", "RUNTIME_BASE_IMAGE")},
            "git": git, "downloads": [{"url": args["GDRCOPY_URL"], "sha256": "ef" * 32}] if args["GDRCOPY_URL"] else [],
            "python": [{"name": "torch", "version": "2.10.0+cu129", "sha256": "12" * 32, "from": "package index",
                        "uri": "https://download.pytorch.org/whl/cu129/torch-2.10.0%2Bcu129-cp312-cp312-"
                               "manylinux_2_28_aarch64.whl"}]}
