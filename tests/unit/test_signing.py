"""The site key, signatures and signed provenance, without a registry (tests/integration/test_signing.py has the
registry side): key files in cosign's encrypted format, DSSE statements, the provenance built from a plan."""

from __future__ import annotations

import os
import base64
import json
import stat

import pytest

from gracectl import settings
from gracectl.tags import provenance
from gracectl.adapters import signing
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import UsageError
from gracectl.image.plan import plan_for

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    key, pub = signing.generate_key(folder / "site", b"correct horse")
    (folder / "pass").write_bytes(b"correct horse\n")
    return signing.SigningKey(key, folder / "pass"), pub


def test_the_private_key_is_cosigns_encrypted_pem_and_never_written_twice(keys, tmp_path):
    key, pub = keys
    text = key.key.read_text()
    assert text.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    document = json.loads(base64.b64decode(text.split("-----")[2]))
    assert document["kdf"]["name"] == "scrypt" and document["cipher"]["name"] == "nacl/secretbox"
    assert stat.S_IMODE(key.key.stat().st_mode) == 0o600
    assert signing.load_private_key(key.key, b"correct horse").public_key().public_numbers() == \
        signing.load_public_key(pub).public_numbers()
    with pytest.raises(UsageError, match="wrong passphrase"):
        signing.load_private_key(key.key, b"wrong horse")
    with pytest.raises(UsageError, match="exists"):
        signing.generate_key(key.key.parent, b"x")
    with pytest.raises(UsageError, match="needs a passphrase"):
        signing.generate_key(tmp_path / "k", b"")


def test_a_signed_statement_opens_only_with_the_site_key_and_untouched(keys, tmp_path):
    key, pub = keys
    envelope = signing.sign_statement({"_type": "x", "subject": [{"digest": {"sha256": "ab" * 32}}]}, key)
    assert signing.open_statement(envelope, signing.load_public_key(pub))["_type"] == "x"
    tampered = {**envelope, "payload": base64.b64encode(b'{"_type": "y"}').decode()}
    with pytest.raises(ValueError, match="not signed by"):
        signing.open_statement(tampered, signing.load_public_key(pub))
    _, other = signing.generate_key(tmp_path / "other", b"other")
    with pytest.raises(ValueError, match="not signed by"):
        signing.open_statement(envelope, signing.load_public_key(other))
    with pytest.raises(ValueError, match="not a DSSE envelope"):
        signing.open_statement({"payload": 3}, signing.load_public_key(pub))


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


def test_provenance_is_slsa_v1_and_names_every_input_with_an_absolute_uri():
    import jsonschema

    plan = plan_for("v0.19.0-tfa", None, "", "", 7, "127.0.0.1:5000", "").to_dict()
    stmt = provenance.statement("127.0.0.1:5000/gh200-vllm-tfa", DIGEST, plan,
                                {"started": "2026-12-07T10:00:00Z", "finished": "2026-12-07T11:00:00Z"},
                                builder="https://ci.example/job/gh200-vllm/", invocation="https://ci.example/job/gh200-vllm/1/",
                                records={"smoke": "sha256:" + "cd" * 32})
    jsonschema.Draft202012Validator.check_schema(SLSA_V1)
    jsonschema.Draft202012Validator(SLSA_V1).validate(stmt)
    assert stmt["subject"] == [{"name": "127.0.0.1:5000/gh200-vllm-tfa", "digest": {"sha256": "ab" * 32}}]
    definition = stmt["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["buildArgs"] == dict(sorted(plan["build_args"].items()))
    deps = {d["name"]: d for d in definition["resolvedDependencies"]}
    assert all("uri" in d for d in deps.values())
    assert deps["flash_attn"]["digest"] == {"gitCommit": plan["build_args"]["FLASH_ATTN_REF"]}
    assert deps["flash_attn"]["uri"] == "git+https://github.com/vllm-project/flash-attention.git@" + \
        plan["build_args"]["FLASH_ATTN_REF"]
    assert len(deps["dockerfile"]["digest"]["sha256"]) == 64
    assert {"vllm", "triton", "triton_kernels", "deepgemm", "flashmla", "deepep", "build_base_image",
            "runtime_base_image", "cmake:qutlass", "cmake:cutlass"} <= set(deps)
    # What the plan names by tag only is said so, never passed off as pinned.
    for d in deps.values():
        assert ("digest" in d) != ("pinned" in d.get("annotations", {})), d
    run = stmt["predicate"]["runDetails"]
    assert run["builder"] == {"id": "https://ci.example/job/gh200-vllm/"}
    assert run["metadata"]["invocationId"] == "https://ci.example/job/gh200-vllm/1/"
    assert run["byproducts"] == [{"name": "smoke-record", "digest": {"sha256": "cd" * 32}}]
    assert "built by https://ci.example/job/gh200-vllm/ run https://ci.example/job/gh200-vllm/1/" in \
        provenance.summary(stmt)
    # A run without recorded times says nothing rather than an empty (invalid) timestamp.
    bare = provenance.statement("r/x", DIGEST, plan, {}, builder="urn:gracectl:builder:h", invocation="run-1",
                                records={})
    jsonschema.Draft202012Validator(SLSA_V1).validate(bare)
    assert bare["predicate"]["runDetails"]["metadata"] == {"invocationId": "run-1"}


def test_the_trust_key_is_checked_at_the_edge(tmp_path, keys):
    _, pub = keys
    assert settings.registry_access({"GRACECTL_TRUST_KEY": str(pub)}).trust_key == pub
    with pytest.raises(UsageError, match="GRACECTL_TRUST_KEY"):
        settings.registry_access({"GRACECTL_TRUST_KEY": str(tmp_path / "missing.pub")})


def test_signing_settings_come_in_pairs(monkeypatch, keys):
    key, _ = keys
    monkeypatch.setenv("GRACECTL_SIGNING_KEY", str(key.key))
    monkeypatch.delenv("GRACECTL_SIGNING_PASSPHRASE_FILE", raising=False)
    with pytest.raises(UsageError, match="both"):
        settings.signing_key(os.environ)
    monkeypatch.setenv("GRACECTL_SIGNING_PASSPHRASE_FILE", str(key.passphrase_file))
    assert settings.signing_key(os.environ) == key
    assert key.passphrase() == b"correct horse"
