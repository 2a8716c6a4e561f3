"""SLSA Provenance v1 as a JSON schema, shared by the unit and integration tests of the provenance (its one copy)."""

from __future__ import annotations

import copy

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
