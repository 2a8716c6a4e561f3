"""The site key, signatures and signed provenance, without a registry (tests/integration/test_signing.py has the
registry side): key files in cosign's encrypted format, DSSE statements, the provenance built from a plan."""

from __future__ import annotations

import base64
import json
import stat

import pytest

from gracectl import provenance
from gracectl.adapters import signing
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import UsageError
from gracectl.plan import plan_for

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


def test_provenance_names_every_pinned_input_the_dockerfile_and_the_gate():
    plan = plan_for("v0.19.0-tfa", None, "", "", 7, "127.0.0.1:5000", "").to_dict()
    stmt = provenance.statement("127.0.0.1:5000/gh200-vllm-tfa", DIGEST, plan, {"started": "s", "finished": "f"},
                                builder="https://ci/job/1/", run_id="run-1",
                                records={"smoke": "sha256:" + "cd" * 32})
    assert stmt["_type"] == provenance.STATEMENT_TYPE and stmt["predicateType"] == provenance.PREDICATE_TYPE
    assert stmt["subject"] == [{"name": "127.0.0.1:5000/gh200-vllm-tfa", "digest": {"sha256": "ab" * 32}}]
    definition = stmt["predicate"]["buildDefinition"]
    assert len(definition["externalParameters"]["dockerfile_sha256"]) == 64
    names = {d.get("name") for d in definition["resolvedDependencies"]}
    assert set(plan["build_args"]) <= names
    commits = [d for d in definition["resolvedDependencies"] if "gitCommit" in d.get("digest", {})]
    assert {"FLASH_ATTN_REF", "FLASHMLA_REF"} <= {d.get("name") for d in commits}  # pinned by commit, said so
    assert stmt["predicate"]["runDetails"]["byproducts"] == [{"name": "smoke-record", "digest": {"sha256": "cd" * 32}}]
    assert "built by https://ci/job/1/ run run-1" in provenance.summary(stmt)


def test_the_trust_key_is_checked_at_the_edge(tmp_path, keys):
    _, pub = keys
    assert RegistryAccess.from_environment({"GRACECTL_TRUST_KEY": str(pub)}).trust_key == pub
    with pytest.raises(UsageError, match="GRACECTL_TRUST_KEY"):
        RegistryAccess.from_environment({"GRACECTL_TRUST_KEY": str(tmp_path / "missing.pub")})


def test_signing_settings_come_in_pairs(monkeypatch, keys):
    key, _ = keys
    monkeypatch.setenv("GRACECTL_SIGNING_KEY", str(key.key))
    monkeypatch.delenv("GRACECTL_SIGNING_PASSPHRASE_FILE", raising=False)
    with pytest.raises(UsageError, match="both"):
        signing.SigningKey.from_environment()
    monkeypatch.setenv("GRACECTL_SIGNING_PASSPHRASE_FILE", str(key.passphrase_file))
    assert signing.SigningKey.from_environment() == key
    assert key.passphrase() == b"correct horse"
