"""The site key, signatures and signed provenance, without a registry (tests/integration/test_signing.py has the
registry side): key files in cosign's encrypted format, DSSE statements, the provenance built from a plan."""

from __future__ import annotations

import os
import base64
import hashlib
import json
import stat

import pytest

from gracectl import settings
from gracectl.tags import provenance
from gracectl.adapters import signing
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import GraceError, UsageError
from gracectl.image.plan import plan_for
from slsa_schema import SLSA_V1, SLSA_V1_PINNED, resolved_for

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


def test_provenance_is_slsa_v1_and_names_every_input_with_an_absolute_uri_and_a_digest():
    import jsonschema

    plan = plan_for("v0.19.0-tfa", None, "", "", 7, "127.0.0.1:5000", "source").to_dict()
    resolved = resolved_for(plan)
    stmt = provenance.statement("127.0.0.1:5000/gh200-vllm-tfa", DIGEST, plan,
                                {"started": "2026-12-07T10:00:00Z", "finished": "2026-12-07T11:00:00Z",
                                 "resolved": resolved},
                                builder="https://ci.example/job/gh200-vllm/", invocation="https://ci.example/job/gh200-vllm/1/",
                                records={"smoke": "sha256:" + "cd" * 32})
    jsonschema.Draft202012Validator.check_schema(SLSA_V1)
    jsonschema.Draft202012Validator(SLSA_V1_PINNED).validate(stmt)
    assert stmt["subject"] == [{"name": "127.0.0.1:5000/gh200-vllm-tfa", "digest": {"sha256": "ab" * 32}}]
    definition = stmt["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["buildArgs"] == dict(sorted(plan["build_args"].items()))
    deps = {d["name"]: d for d in definition["resolvedDependencies"]}
    commit = {(g["repo"], g["ref"]): g["commit"] for g in resolved["git"]}
    args = plan["build_args"]
    assert deps["flash_attn"]["digest"] == {"gitCommit": args["FLASH_ATTN_REF"]}
    assert deps["flash_attn"]["uri"] == "git+https://github.com/vllm-project/flash-attention.git@" + \
        args["FLASH_ATTN_REF"]
    # a tag is named as the plan pins it, with the commit the build checked out
    assert deps["vllm"] == {"name": "vllm", "uri": "git+https://github.com/vllm-project/vllm.git@v0.19.0",
                            "digest": {"gitCommit": commit["https://github.com/vllm-project/vllm.git", "v0.19.0"]}}
    assert deps["triton_kernels"]["digest"]["gitCommit"] == commit[args["TRITON_KERNELS_REPO"],
                                                                   args["TRITON_KERNELS_REF"]]
    assert deps["build_base_image"] == {"name": "build_base_image", "uri": "docker://" + args["BUILD_BASE_IMAGE"],
                                        "digest": {"sha256": hashlib.sha256(b"BUILD_BASE_IMAGE").hexdigest()}}
    assert deps["gdrcopy"]["digest"] == {"sha256": "ef" * 32}
    assert deps["pypi:torch"]["digest"] == {"sha256": "12" * 32}
    assert len(deps["dockerfile"]["digest"]["sha256"]) == 64
    assert {"vllm", "triton_kernels", "deepgemm", "flashmla", "deepep", "build_base_image",
            "runtime_base_image", "cmake:qutlass", "cmake:cutlass", "gdrcopy", "pypi:torch"} <= set(deps)
    assert "triton" not in deps  # the official wheel (TRITON_BUILD=wheel): an installed wheel, pinned by its sha256
    # Every input: an absolute uri and a digest, nothing annotated as pinned by tag only.
    for d in deps.values():
        assert d.get("uri") and d.get("digest") and "pinned" not in d.get("annotations", {}), d
    run = stmt["predicate"]["runDetails"]
    assert run["builder"] == {"id": "https://ci.example/job/gh200-vllm/"}
    assert run["metadata"]["invocationId"] == "https://ci.example/job/gh200-vllm/1/"
    assert run["byproducts"] == [{"name": "smoke-record", "digest": {"sha256": "cd" * 32}}]
    assert "built by https://ci.example/job/gh200-vllm/ run https://ci.example/job/gh200-vllm/1/" in \
        provenance.summary(stmt)
    # A run without recorded times says nothing rather than an empty (invalid) timestamp.
    bare = provenance.statement("r/x", DIGEST, plan, {"resolved": resolved}, builder="urn:gracectl:builder:h",
                                invocation="run-1", records={})
    jsonschema.Draft202012Validator(SLSA_V1).validate(bare)
    assert bare["predicate"]["runDetails"]["metadata"] == {"invocationId": "run-1"}
    # SLSA itself takes a dependency named by uri alone; the pinned schema does not
    bare["predicate"]["buildDefinition"]["resolvedDependencies"].append({"uri": "git+https://x/y.git@v1"})
    jsonschema.Draft202012Validator(SLSA_V1).validate(bare)
    with pytest.raises(jsonschema.ValidationError, match="'digest' is a required property"):
        jsonschema.Draft202012Validator(SLSA_V1_PINNED).validate(bare)


def test_provenance_refuses_an_input_the_build_did_not_pin():
    plan = plan_for("v0.19.0-tfa", None, "", "", 7, "127.0.0.1:5000", "source").to_dict()
    resolved = resolved_for(plan)
    statement = lambda r: provenance.statement("r/x", DIGEST, plan, {"resolved": r}, builder="urn:x:b",  # noqa: E731
                                                invocation="run-1", records={})
    with pytest.raises(GraceError, match="no resolved inputs"):
        statement({})
    no_image = {**resolved, "images": {plan["build_args"]["BUILD_BASE_IMAGE"]: "sha256:" + "1" * 64}}
    with pytest.raises(GraceError, match="RUNTIME_BASE_IMAGE .*no digest"):
        statement(no_image)
    no_flashmla = {**resolved, "git": [g for g in resolved["git"] if "FlashMLA" not in g["repo"]]}
    with pytest.raises(GraceError, match="flashmla .*build-flashmla recorded no commit"):
        statement(no_flashmla)
    with pytest.raises(GraceError, match="gdrcopy"):
        statement({**resolved, "downloads": []})
    # DeepEP's short commit pin: the full commit the build checked out must extend it
    deepep = {**resolved, "git": [{**g, "commit": "f" * 40} if "DeepEP" in g["repo"] else g for g in resolved["git"]]}
    with pytest.raises(GraceError, match="deepep .*the build checked out ffff"):
        statement(deepep)
    # a stage renamed in the Dockerfile but not in _PIN_STAGE: refused, never silently left out
    renamed = {**plan, "stages": {("flashmla-src" if k == "build-flashmla" else k): v
                                  for k, v in plan["stages"].items()}}
    with pytest.raises(GraceError, match="flashmla .*no stage build-flashmla"):
        provenance.statement("r/x", DIGEST, renamed, {"resolved": resolved}, builder="urn:x:b", invocation="r",
                             records={})
    # wheel mode: the stages that fetch vLLM's own sources do not run, so theirs are no inputs of this image
    wheel = plan_for("v0.19.0-tfa", None, "", "", 7, "127.0.0.1:5000", "wheel").to_dict()
    names = {d["name"] for d in provenance.statement("r/x", DIGEST, wheel, {"resolved": resolved_for(wheel)},
                                                     builder="urn:x:b", invocation="run-1", records={})
             ["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert not names & {"vllm", "flash_attn", "flashmla", "cmake:cutlass"} and "triton_kernels" in names


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
