"""Signatures verified before every tag move, and signed provenance stored with the image, against the REAL
docker-registry (the TLS + token registry: test_release_tls_token.py::test_signed_promotion_over_tls_and_tokens),
and checked by the ecosystem's own verifiers: cosign (`verify --key`, `verify-attestation --type slsaprovenance1`,
with the flags an air-gapped site runs) and containers' policy.json (a skopeo built with sigstore). Both are built
by scripts/bootstrap.sh from their Go modules (scripts/go-tools.sh); in CI a missing one fails, elsewhere it skips.

Debian bookworm's skopeo 1.9.3 (and podman 4.3) are built with sigstore disabled: a sigstoreSigned policy answers
"Debian-local change: sigstore disabled" whatever the signature (test_debian_skopeo_cannot_check_sigstore_signatures
keeps that fact honest).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from gracectl import settings
from gracectl.tags import provenance, trust
from gracectl.image import sbom
from gracectl.adapters import signing
from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import PromotionRefusedError
from gracectl.image_ref import ImageRef
from test_release_ops_integration import TAG, gracectl, isolated_env, publish, repo, smoke, tag_digest  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site_key(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site-key")
    made = subprocess.run(["gracectl", "keygen", "--out", str(folder / "keys")], input=b"pass phrase 1\n",
                          capture_output=True)
    assert made.returncode == 0, made.stderr
    (folder / "passphrase").write_bytes(b"pass phrase 1\n")
    return signing.SigningKey(folder / "keys" / "cosign.key", folder / "passphrase"), folder / "keys" / "cosign.pub"


@pytest.fixture(scope="module")
def other_key(tmp_path_factory):
    folder = tmp_path_factory.mktemp("other-key")
    key, pub = signing.generate_key(folder, b"other")
    (folder / "passphrase").write_bytes(b"other")
    return signing.SigningKey(key, folder / "passphrase"), pub


def attest(repo_name: str, digest: str, key: signing.SigningKey) -> str:
    ref = ImageRef.parse(repo_name)
    plan = {"release": "v0.19.0-tfa", "platform": "linux/arm64", "dockerfile": "vllm/Dockerfile",
            "build_args": {"BUILD_BASE_IMAGE": "base@sha256:" + "3" * 64},
            "labels": {"io.gracectl.pin.flash_attn": "https://github.com/vllm-project/flash-attention.git@" + "2" * 40},
            "stages": {"build-flash-attn": []}, "not_built": []}
    resolved = {"images": {"docker.io/library/base": "sha256:" + "3" * 64},
                "git": [{"repo": "https://github.com/vllm-project/flash-attention.git", "ref": "2" * 40,
                         "commit": "2" * 40}]}
    stmt = provenance.statement(f"{ref.registry}/{ref.repository}", digest, plan, {"resolved": resolved},
                                builder="urn:gracectl:builder:test", invocation="r1",
                                records={"smoke": "sha256:" + "4" * 64})
    dpkg = {"os": {"id": "ubuntu", "version_id": "24.04"},
            "packages": [{"name": "cuda-cudart-12-9", "version": "12.9.79-1", "arch": "arm64"}]}
    bom = sbom.bom_from_inspect({"installed": [{"metadata": {"name": "vllm", "version": "0.19.0"}}]}, repo_name, dpkg)
    return trust.attest(ref, digest, stmt, key, settings.registry_access(os.environ),
                                also=(sbom.statement(f"{ref.registry}/{ref.repository}", digest, {"bom": bom}),))


def test_signed_images_promote_and_verify_unsigned_or_foreign_ones_do_not(repo, oci_image, site_key, other_key):
    key, pub = site_key
    trust_key_env = {"GRACECTL_TRUST_KEY": str(pub)}
    a = publish(oci_image, repo, "signed-a", smoke())
    attest(repo, a, key)
    b = publish(oci_image, repo, "unsigned-b", smoke())
    c = publish(oci_image, repo, "foreign-c", smoke())
    attest(repo, c, other_key[0])

    verified = gracectl("verify", f"{repo}@{a}", "--json", env=trust_key_env)
    assert verified.returncode == 0, verified.stderr
    found = json.loads(verified.stdout)
    assert found["signature"]["valid"] and found["smoke"] == "passed"
    assert found["provenance"]["valid"] and found["provenance"]["statement"]["subject"][0]["digest"]["sha256"] == \
        a.split(":")[1]
    assert "pass phrase" not in verified.stdout + verified.stderr

    assert gracectl("promote", f"{repo}@{a}", "--to", TAG, env=trust_key_env).returncode == 0
    for image, why in ((b, "has no signature"), (c, "signed by another key")):
        refused = gracectl("promote", f"{repo}@{image}", "--to", TAG, env=trust_key_env)
        assert refused.returncode == PromotionRefusedError.exit_code, refused.stderr
        assert "signature" in refused.stderr and why in refused.stderr
        assert gracectl("verify", f"{repo}@{image}", "--key", str(pub)).returncode == PromotionRefusedError.exit_code
        assert tag_digest(repo) == a  # nothing moved
    forced = gracectl("promote", f"{repo}@{b}", "--to", TAG, "--force", "--reason", "INC-9: unsigned hotfix",
                      env=trust_key_env)
    assert forced.returncode == 0 and "FORCED" in forced.stdout
    # A plain rollback goes back to a; rolling back onto the unsigned b later is refused like a promotion.
    assert gracectl("rollback", f"{repo}:{TAG}", env=trust_key_env).returncode == 0 and tag_digest(repo) == a
    report = gracectl("report", "--provenance", f"{repo}@{a}", env=trust_key_env)
    assert report.returncode == 0 and "provenance VALID" in report.stdout and "flash_attn: gitCommit" in \
        report.stdout


def test_a_tampered_image_under_the_same_tag_is_refused_with_nothing_moved(repo, oci_image, site_key):
    key, pub = site_key
    trust_key_env = {"GRACECTL_TRUST_KEY": str(pub)}
    a = publish(oci_image, repo, "first", smoke())
    attest(repo, a, key)
    assert gracectl("promote", f"{repo}@{a}", "--to", TAG, env=trust_key_env).returncode == 0
    build_tag = "b-" + uuid.uuid4().hex[:6]
    b = publish(oci_image, repo, "good", smoke())
    attest(repo, b, key)
    registry = Registry(ImageRef.parse(repo).registry, settings.registry_access(os.environ))
    registry.tag_digest(ImageRef.parse(repo).repository, b, build_tag)
    # Someone with push rights puts another image under the same build tag (and copies the smoke record).
    tampered = publish(oci_image, repo, "evil", smoke())
    registry.tag_digest(ImageRef.parse(repo).repository, tampered, build_tag)
    refused = gracectl("promote", f"{repo}:{build_tag}", "--to", TAG, env=trust_key_env)
    assert refused.returncode == PromotionRefusedError.exit_code and "has no signature" in refused.stderr
    assert tag_digest(repo) == a


def test_the_push_stage_signs_and_attaches_provenance_when_the_site_signs(tmp_path, registry, oci_image,
                                                                          site_key):
    """`gracectl ci push` with the key as Jenkins hands it over (two files): signed, provenance names the
    smoke record it stored; the promote stage then passes the signature gate."""
    from test_pipeline_integration import ci, fake_build_and_smoke

    key, pub = site_key
    image = oci_image("pipeline-signed")
    workdir = tmp_path / "out"
    env = {"RELEASE": "v0.19.0-tfa", "REGISTRY": registry, "PUSH": "true", "PROMOTE": "true",
           "BUILD_NUMBER": str(uuid.uuid4().int % 100000), "GRACECTL_RELEASE_CHECK": "0",
           "GRACECTL_SIGNING_KEY": str(key.key), "GRACECTL_SIGNING_PASSPHRASE_FILE": str(key.passphrase_file),
           "GRACECTL_TRUST_KEY": str(pub)}
    assert ci("plan", workdir, env).returncode == 0
    fake_build_and_smoke(workdir, image)
    pushed = ci("push", workdir, env)
    assert pushed.returncode == 0, pushed.stderr
    record = json.loads((workdir / "push-record.json").read_text())
    assert record["signed"] is True and record["attestation"].startswith("sha256:")
    assert "pass phrase" not in pushed.stdout + pushed.stderr
    verified = gracectl("verify", f"{record['ref']}@{record['digest']}", "--json", env={"GRACECTL_TRUST_KEY": str(pub)})
    found = json.loads(verified.stdout)
    byproducts = found["provenance"]["statement"]["predicate"]["runDetails"]["byproducts"]
    assert {"name": "smoke-record", "digest": {"sha256": record["records"]["smoke"].split(":")[1]}} in byproducts
    promoted = ci("promote", workdir, env)
    assert promoted.returncode == 0, promoted.stderr


def test_debian_skopeo_cannot_check_sigstore_signatures(repo, oci_image, site_key, tmp_path):
    key, pub = site_key
    a = publish(oci_image, repo, "policy", smoke())
    attest(repo, a, key)
    result = policy_copy("skopeo", repo, a, pub, tmp_path / "debian")
    assert result.returncode != 0 and "sigstore disabled" in result.stderr, result.stderr


REPO = Path(__file__).resolve().parents[2]
# What a site's admission check runs (CLAWMINE.md, "Signed images", says the same; the test below holds the two
# together): no transparency log on an air-gapped site, and for the test registries (plain http on 127.0.0.1) the
# registry flags cosign has; a site registry with its own CA adds --registry-cacert instead.
COSIGN_AIRGAP = ("--insecure-ignore-tlog=true",)
COSIGN_TEST_REGISTRY = ("--allow-http-registry", "--allow-insecure-registry")


def go_tool(name: str, override: str) -> str:
    """The tool scripts/go-tools.sh built into the machine's cache (or the path in `override`); in CI a missing one
    fails the test rather than skipping it: these checks are the point of building them."""
    path = os.environ.get(override, "")
    if not path:
        found = subprocess.run(["bash", str(REPO / "scripts" / "go-tools.sh"), "--paths"], capture_output=True,
                               text=True)
        path = dict(line.split("=", 1) for line in found.stdout.split() if "=" in line).get(name, "")
    if not path or not os.access(path, os.X_OK):
        message = f"no {name} at {path or '?'}: scripts/bootstrap.sh builds it (scripts/go-tools.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def cosign_bin():
    return go_tool("cosign", "COSIGN")


@pytest.fixture(scope="module")
def sigstore_skopeo():
    return go_tool("skopeo", "SKOPEO_WITH_SIGSTORE")


def cosign(binary: str, home, *args: str, password: bytes | None = None) -> subprocess.CompletedProcess:
    """cosign with its own HOME (its TUF cache), the key's password in its environment only."""
    env = {**os.environ, "HOME": str(home)}
    if password is not None:
        env["COSIGN_PASSWORD"] = password.decode().rstrip("\n")
    return subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=180)


def swap_signature(repo_name: str, signed: str, onto: str) -> None:
    """Someone copies the signature of `signed` to the unsigned `onto` (its payload names another digest)."""
    ref = ImageRef.parse(repo_name)
    registry = Registry(ref.registry, settings.registry_access(os.environ))
    body, _ = registry.get_manifest(ref.repository, signing.signature_tag(signed))
    registry.put_manifest(ref.repository, signing.signature_tag(onto), body, signing.OCI_MANIFEST)


def signed_and_refused(repo_name: str, oci_image, site_key, other_key, label: str) -> list[tuple[str, bool]]:
    """(digest, admitted) of four images: signed (and attested) by the site key; unsigned; signed by another key;
    unsigned but carrying a copy of the signed one's signature."""
    signed = publish(oci_image, repo_name, f"{label}-signed", smoke())
    attest(repo_name, signed, site_key[0])
    unsigned = publish(oci_image, repo_name, f"{label}-unsigned", smoke())
    foreign = publish(oci_image, repo_name, f"{label}-foreign", smoke())
    attest(repo_name, foreign, other_key[0])
    swapped = publish(oci_image, repo_name, f"{label}-swapped", smoke())
    swap_signature(repo_name, signed, swapped)
    return [(signed, True), (unsigned, False), (foreign, False), (swapped, False)]


def test_cosign_verifies_the_site_signature_and_provenance_and_refuses_the_rest(repo, oci_image, site_key,
                                                                                 other_key, cosign_bin, tmp_path):
    _, pub = site_key
    cases = signed_and_refused(repo, oci_image, site_key, other_key, "cosign")
    signed, unsigned, foreign, swapped = (digest for digest, _ in cases)
    flags = (*COSIGN_AIRGAP, *COSIGN_TEST_REGISTRY)
    for digest, admitted in cases:
        verified = cosign(cosign_bin, tmp_path, "verify", "--key", str(pub), *flags, f"{repo}@{digest}")
        assert (verified.returncode == 0) is admitted, (digest, verified.stderr)
        if admitted:
            payload = json.loads(verified.stdout.strip().splitlines()[0])[0]
            assert payload["critical"]["image"]["docker-manifest-digest"] == signed
        attested = cosign(cosign_bin, tmp_path, "verify-attestation", "--type", "slsaprovenance1", "--key", str(pub),
                          *flags, f"{repo}@{digest}")
        assert (attested.returncode == 0) is admitted, (digest, attested.stderr)
        bom = cosign(cosign_bin, tmp_path, "verify-attestation", "--type", "cyclonedx", "--key", str(pub), *flags,
                     f"{repo}@{digest}")
        assert (bom.returncode == 0) is admitted, (digest, bom.stderr)
        if admitted:
            sbom_statement = json.loads(base64.b64decode(json.loads(bom.stdout.strip().splitlines()[0])["payload"]))
            assert {c["name"] for c in sbom_statement["predicate"]["components"]} == {"vllm", "cuda-cudart-12-9"}
            envelope = json.loads(attested.stdout.strip().splitlines()[0])
            assert envelope["payloadType"] == signing.IN_TOTO
            statement = json.loads(base64.b64decode(envelope["payload"]))
            assert statement["predicateType"] == provenance.PREDICATE_TYPE
            assert statement["subject"][0]["digest"]["sha256"] == signed.split(":")[1]
    # A tampered image under a tag that held the signed one: the tag now names a digest nobody signed.
    ref = ImageRef.parse(repo)
    registry = Registry(ref.registry, settings.registry_access(os.environ))
    registry.tag_digest(ref.repository, signed, "cosign-tag")
    assert cosign(cosign_bin, tmp_path, "verify", "--key", str(pub), *flags, f"{repo}:cosign-tag").returncode == 0
    tampered = publish(oci_image, repo, "cosign-tampered", smoke())
    registry.tag_digest(ref.repository, tampered, "cosign-tag")
    refused = cosign(cosign_bin, tmp_path, "verify", "--key", str(pub), *flags, f"{repo}:cosign-tag")
    assert refused.returncode != 0 and "no signatures found" in refused.stderr, refused.stderr
    # Without --insecure-ignore-tlog cosign wants a transparency-log entry: why an air-gapped site needs the flag.
    # (Offline it cannot even fetch the Rekor keys from the public TUF root; online it finds no log entry.)
    strict = cosign(cosign_bin, tmp_path, "verify", "--key", str(pub), *COSIGN_TEST_REGISTRY, f"{repo}@{signed}")
    assert strict.returncode != 0 and any(w in strict.stderr.lower() for w in ("rekor", "tlog", "transparency log")), \
        strict.stderr
    # gracectl's own gate agrees with cosign on every case.
    for digest, admitted in ((signed, True), (unsigned, False), (foreign, False), (swapped, False),
                             (tampered, False)):
        assert (gracectl("verify", f"{repo}@{digest}", "--key", str(pub)).returncode == 0) is admitted, digest


def test_gracectl_verifies_and_gates_on_what_cosign_signed(repo, oci_image, site_key, cosign_bin, tmp_path):
    """A site that signs with cosign itself (legacy attachment format: the one both tools read): gracectl's
    promote gate and `verify` accept cosign's signature and attestation made with the site key."""
    key, pub = site_key
    image = publish(oci_image, repo, "signed-by-cosign", smoke())
    flags = ("--tlog-upload=false", "--use-signing-config=false", "--new-bundle-format=false", *COSIGN_TEST_REGISTRY)
    signed = cosign(cosign_bin, tmp_path, "sign", "--yes", "--key", str(key.key), *flags, f"{repo}@{image}",
                    password=key.passphrase_file.read_bytes())
    assert signed.returncode == 0, signed.stderr
    predicate = tmp_path / "predicate.json"
    predicate.write_text(json.dumps({"buildDefinition": {"buildType": provenance.BUILD_TYPE,
                                                         "externalParameters": {"release": "by-cosign"}},
                                     "runDetails": {"builder": {"id": "https://ci.example/cosign"}}}))
    attested = cosign(cosign_bin, tmp_path, "attest", "--yes", "--key", str(key.key), "--type", "slsaprovenance1",
                      "--predicate", str(predicate), *flags, f"{repo}@{image}", password=key.passphrase_file.read_bytes())
    assert attested.returncode == 0, attested.stderr
    verified = gracectl("verify", f"{repo}@{image}", "--json", "--key", str(pub))
    assert verified.returncode == 0, verified.stderr
    found = json.loads(verified.stdout)
    assert found["signature"]["valid"] and found["provenance"]["valid"], found
    assert found["provenance"]["statement"]["predicate"]["buildDefinition"]["externalParameters"] == \
        {"release": "by-cosign"}
    promoted = gracectl("promote", f"{repo}@{image}", "--to", TAG, env={"GRACECTL_TRUST_KEY": str(pub)})
    assert promoted.returncode == 0, promoted.stderr


def test_clawmine_documents_the_admission_commands_the_tests_run():
    text = (REPO / "CLAWMINE.md").read_text()
    assert "cosign verify --key /etc/pki/gracectl/cosign.pub --insecure-ignore-tlog=true" in text
    assert "cosign verify-attestation --type slsaprovenance1 --key /etc/pki/gracectl/cosign.pub " \
           "--insecure-ignore-tlog=true" in text
    assert all(flag in text for flag in COSIGN_TEST_REGISTRY)


def test_containers_policy_accepts_the_site_signature_and_nothing_else(repo, oci_image, site_key, other_key,
                                                                         sigstore_skopeo, tmp_path):
    _, pub = site_key
    cases = signed_and_refused(repo, oci_image, site_key, other_key, "policy")
    signed = cases[0][0]
    for digest, admitted in cases:
        result = policy_copy(sigstore_skopeo, repo, digest, pub, tmp_path / digest[7:19])
        assert (result.returncode == 0) is admitted, result.stderr
        if not admitted:
            assert "signature" in result.stderr.lower(), result.stderr
    # Like cosign's, the signature names the repository only, so the policy's default identity check refuses it
    # (containers-policy.json(5)): CLAWMINE's policy says matchRepository, and this keeps that advice true.
    strict = policy_copy(sigstore_skopeo, repo, signed, pub, tmp_path / "strict", identity="matchRepoDigestOrExact")
    assert strict.returncode != 0 and "is not accepted" in strict.stderr, strict.stderr


def policy_copy(skopeo: str, repo_name: str, digest: str, pub, folder, identity: str = "matchRepository",
                source_tls: tuple[str, ...] = ("--src-tls-verify=false",)) -> subprocess.CompletedProcess:
    """`skopeo copy` of REPO@DIGEST under a policy that admits only sigstore signatures by PUB's key."""
    registry_host = ImageRef.parse(repo_name).registry
    policy = {"default": [{"type": "reject"}], "transports": {
        "docker": {registry_host: [{"type": "sigstoreSigned", "keyPath": str(pub),
                                    "signedIdentity": {"type": identity}}]},
        "oci": {"": [{"type": "insecureAcceptAnything"}]}}}
    folder.mkdir()
    (folder / "policy.json").write_text(json.dumps(policy))
    (folder / "registries.d").mkdir()
    (folder / "registries.d" / "site.yaml").write_text(
        f"docker:\n  {registry_host}:\n    use-sigstore-attachments: true\n")
    return subprocess.run([skopeo, "--policy", str(folder / "policy.json"), "--registries.d",
                           str(folder / "registries.d"), "copy", *source_tls, "--remove-signatures",
                           f"docker://{repo_name}@{digest}", f"oci:{folder / 'out'}:x"], capture_output=True, text=True)


def test_key_rotation_resigns_an_image_in_service(repo, oci_image, site_key, other_key):
    old_key, old_pub = site_key
    new_key, new_pub = other_key
    a = publish(oci_image, repo, "in-service", smoke())
    attest(repo, a, old_key)
    env = {"GRACECTL_SIGNING_KEY": str(new_key.key), "GRACECTL_SIGNING_PASSPHRASE_FILE": str(new_key.passphrase_file)}
    signed = gracectl("sign", f"{repo}@{a}", env=env)
    assert signed.returncode == 0, signed.stderr
    for pub in (old_pub, new_pub):  # both signatures are there: the switch of GRACECTL_TRUST_KEY strands nothing
        assert gracectl("verify", f"{repo}@{a}", "--key", str(pub)).returncode == 0


def test_signing_twice_adds_nothing_and_an_unreadable_layer_does_not_hide_a_valid_one(repo, oci_image, site_key):
    key, pub = site_key
    ref = ImageRef.parse(repo)
    registry = Registry(ref.registry, settings.registry_access(os.environ))
    a = publish(oci_image, repo, "twice", smoke())
    first = signing.sign(registry, ref, a, key)
    assert signing.sign(registry, ref, a, key) == first  # ECDSA differs each time: still "already signed"
    body, _ = registry.get_manifest(ref.repository, signing.signature_tag(a))
    manifest = json.loads(body)
    assert len(manifest["layers"]) == 1
    # A layer whose payload blob the registry no longer holds (deleted after the push) comes first.
    gone = registry.push_blob(ref.repository, b'{"critical": {}}', signing.SIMPLE_SIGNING)
    missing = {**gone.to_dict(), "annotations": {signing.SIGNATURE_ANNOTATION: "AAAA"}}
    for layers, valid in (([missing, *manifest["layers"]], True), ([missing], False)):
        registry.push_blob(ref.repository, b'{"critical": {}}', signing.SIMPLE_SIGNING)
        registry.put_manifest(ref.repository, signing.signature_tag(a), json.dumps({**manifest, "layers": layers})
                              .encode(), signing.OCI_MANIFEST)
        registry._request("DELETE", f"/v2/{ref.repository}/blobs/{gone.digest}", allow_404=True)
        verified = gracectl("verify", f"{repo}@{a}", "--key", str(pub))
        assert (verified.returncode == 0) is valid, verified.stderr
        assert "Traceback" not in verified.stderr
        if not valid:
            assert verified.returncode == PromotionRefusedError.exit_code
            assert "payload cannot be read" in verified.stdout + verified.stderr
