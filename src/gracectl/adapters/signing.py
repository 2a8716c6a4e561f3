"""Image signatures and signed statements a site can verify: cosign-format sigstore signatures and attestations,
key based.

Format, and why: the signature is stored as cosign stores it (a sigstore "attachment"): tag `sha256-<hex>.sig`
holds an OCI manifest with one simple-signing payload layer per signature (`critical.image.docker-manifest-digest`
= the image's digest, `critical.identity.docker-reference` = its repository), the ECDSA P-256 / SHA-256 signature of
that payload base64 in the layer's `dev.cosignproject.cosign/signature` annotation. That layout is what `cosign
verify --key cosign.pub` (and so Kubernetes admission policies) and containers' policy.json (`sigstoreSigned` +
`keyPath`, with `use-sigstore-attachments: true` in registries.d) check, with no Rekor or Fulcio needed on an
air-gapped site. Statements (the build provenance, the SBOM) are DSSE envelopes signed with the same key and
attached as cosign attaches them: tag `sha256-<hex>.att`, one layer per envelope (media type
application/vnd.dsse.envelope.v1+json, annotated with its predicateType), what `cosign verify-attestation --key`
finds.

Made here, in Python, with `cryptography` (keys, ECDSA) and `pynacl` (the key file's secretbox), not by running
cosign: the agents install gracectl with pip and have no cosign, and one signing path is one format to test
(CLAWMINE.md, "Signed images", says why in full). CI checks the interop both ways with cosign and a sigstore-enabled
skopeo built from their Go modules (scripts/go-tools.sh; Debian's skopeo and podman have sigstore disabled).
Keys are cosign's encrypted PEM (scrypt N=32768 r=8 p=1, nacl/secretbox), which cosign and upstream skopeo read.
Verification (promote/rollback's gate, `gracectl verify`) checks what policy.json's sigstoreSigned checks: the
signature over the payload by the site's public key, the payload's digest equal to the image's, its
docker-reference naming this repository.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gracectl.adapters.registry import OCI_MANIFEST, Registry, sha256_digest
from gracectl.errors import RegistryError, UsageError
from gracectl.image_ref import DIGEST_RE, ImageRef

PRIVATE_PEM = "ENCRYPTED SIGSTORE PRIVATE KEY"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SCRYPT = {"N": 32768, "r": 8, "p": 1}


def signature_tag(digest: str) -> str:
    """Where cosign and containers/image keep a digest's sigstore signatures."""
    return digest.replace(":", "-") + ".sig"


# -- keys -----------------------------------------------------------------------------------------------------
def _scrypt(passphrase: bytes, salt: bytes, params: dict) -> bytes:
    return hashlib.scrypt(passphrase, salt=salt, n=params["N"], r=params["r"], p=params["p"], dklen=32,
                          maxmem=256 * params["r"] * params["N"] + (1 << 20))


def generate_key(folder: Path, passphrase: bytes) -> tuple[Path, Path]:
    """A new pair in `folder`: cosign.key (encrypted, 0600) and cosign.pub. Refuses to overwrite either."""
    import nacl.secret
    import nacl.utils

    if not passphrase:
        raise UsageError("a signing key needs a passphrase (on stdin): an unencrypted key is refused")
    key_path, pub_path = folder / "cosign.key", folder / "cosign.pub"
    if key_path.exists() or pub_path.exists():
        raise UsageError(f"{key_path} or {pub_path} exists: rotating keys is a new folder, never an overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    salt = os.urandom(32)
    box = nacl.secret.SecretBox(_scrypt(passphrase, salt, SCRYPT))
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    sealed = box.encrypt(der, nonce).ciphertext
    document = {"kdf": {"name": "scrypt", "params": SCRYPT, "salt": base64.b64encode(salt).decode()},
                "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
                "ciphertext": base64.b64encode(sealed).decode()}
    body = base64.encodebytes(json.dumps(document).encode()).decode()
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"-----BEGIN {PRIVATE_PEM}-----\n{body}-----END {PRIVATE_PEM}-----\n")
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def load_private_key(path: Path, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    """The site key from its encrypted PEM; a wrong passphrase or a damaged file is one UsageError."""
    import nacl.exceptions
    import nacl.secret

    try:
        text = path.read_text()
        body = text.split("-----", 2)[2].rsplit("-----END", 1)[0]
        document = json.loads(base64.b64decode(body))
        params, salt = document["kdf"]["params"], base64.b64decode(document["kdf"]["salt"])
        box = nacl.secret.SecretBox(_scrypt(passphrase, salt, params))
        der = box.decrypt(base64.b64decode(document["ciphertext"]), base64.b64decode(document["cipher"]["nonce"]))
        key = serialization.load_der_private_key(der, None)
    except nacl.exceptions.CryptoError:
        raise UsageError(f"signing key {path}: wrong passphrase") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise UsageError(f"signing key {path} is not a sigstore/cosign encrypted private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"signing key {path} is not an ECDSA key")
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise UsageError(f"public key {path} is not a PEM public key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UsageError(f"public key {path} is not an ECDSA key")
    return key


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """sha256 of the key's DER: names the key in records and messages (never the key itself)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


# -- signing (skopeo) -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SigningKey:
    """The site key as the pipeline holds it: two files (Jenkins file credentials), read only when used."""

    key: Path
    passphrase_file: Path

    def passphrase(self) -> bytes:
        try:
            return self.passphrase_file.read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise UsageError(f"signing passphrase file {self.passphrase_file}: {e.strerror}") from None

    @functools.cached_property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """Decrypted once per SigningKey (scrypt costs ~0.1 s and 32 MiB): a push signs the image and its
        provenance with it."""
        return load_private_key(self.key, self.passphrase())


def _simple_signing_payload(ref: ImageRef, digest: str) -> bytes:
    return json.dumps({"critical": {"identity": {"docker-reference": f"{ref.registry}/{ref.repository}"},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"},
                       "optional": {"creator": "gracectl"}}, separators=(",", ":")).encode()


def sign(registry: Registry, ref: ImageRef, digest: str, signing: SigningKey) -> str:
    """Sign `digest` of `ref`'s repository with the site key; the signature is added to the image's sigstore
    attachment (kept alongside earlier ones). Returns the attachment's manifest digest."""
    key = signing.private_key
    payload = _simple_signing_payload(ref, digest)
    # kept: the well-formed signature layers already there (another key's, an older key's)
    layers, existing = _attachment_layers(registry, ref, signature_tag(digest), SIMPLE_SIGNING)
    # ECDSA signatures differ each time: "already signed" is a layer of this payload that this key signed.
    for x in layers:
        with contextlib.suppress(KeyError, ValueError, TypeError):
            if x["digest"] == sha256_digest(payload) and _signs(key.public_key(), x, payload):
                return existing
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    layer = registry.push_blob(ref.repository, payload, SIMPLE_SIGNING)
    layers.append({**layer.to_dict(), "annotations": {SIGNATURE_ANNOTATION: signature}})
    return _put_attachment(registry, ref, signature_tag(digest), layers)


def _put_attachment(registry: Registry, ref: ImageRef, tag: str, layers: list[dict]) -> str:
    """Write a sigstore attachment (`.sig` or `.att`) as cosign writes one: an OCI manifest of the layers, its
    config an image config whose diff_ids are the layers' digests. Returns the manifest's digest."""
    config = {"architecture": "", "os": "", "config": {}, "created": "0001-01-01T00:00:00Z",
              "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]}}
    config_desc = registry.push_blob(ref.repository, json.dumps(config).encode(),
                                     "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc.to_dict(), "layers": layers}
    return registry.put_manifest(ref.repository, tag, json.dumps(manifest).encode(), OCI_MANIFEST)


def _attachment_layers(registry: Registry, ref: ImageRef, tag: str, media_type: str) -> tuple[list[dict], str]:
    """The well-formed layers of `media_type` in the attachment under `tag`, and the attachment's digest ("" when
    there is none); a damaged attachment reads as empty."""
    found = registry.get_manifest(ref.repository, tag)
    if found is None:
        return [], ""
    try:
        layers = json.loads(found[0]).get("layers") or []
    except (ValueError, AttributeError):
        layers = []
    return [x for x in layers if isinstance(x, dict) and x.get("mediaType") == media_type
            and DIGEST_RE.match(str(x.get("digest")))] if isinstance(layers, list) else [], found[1].digest


# -- DSSE (signed statements) and their attachment -------------------------------------------------------------
IN_TOTO = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v1"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"  # a bare DSSE envelope: what cosign stores in `.att`
PREDICATE_ANNOTATION = "predicateType"


def in_toto_statement(repository: str, digest: str, predicate_type: str, predicate: dict) -> dict:
    """An in-toto Statement v1 about image `digest` of `repository` (REGISTRY/REPO)."""
    return {"_type": IN_TOTO_STATEMENT,
            "subject": [{"name": repository, "digest": {"sha256": digest.split(":", 1)[1]}}],
            "predicateType": predicate_type, "predicate": predicate}


def attestation_tag(digest: str) -> str:
    """Where cosign keeps a digest's attestations (`cosign attest`, found by `cosign verify-attestation`)."""
    return digest.replace(":", "-") + ".att"


def attach_statements(registry: Registry, ref: ImageRef, digest: str, statements: list[dict],
                      signing: SigningKey) -> str:
    """Sign each of `statements` (in-toto Statements about `digest`) as a DSSE envelope and add them to the image's
    attestations as cosign stores them: tag `sha256-<hex>.att`, one layer per attestation, the layer the bare
    envelope (DSSE_ENVELOPE), annotated with its predicateType, kept beside earlier ones. Returns the attachment's
    manifest digest."""
    layers, _ = _attachment_layers(registry, ref, attestation_tag(digest), DSSE_ENVELOPE)
    for statement in statements:
        envelope = json.dumps(sign_statement(statement, signing), separators=(",", ":")).encode()
        layer = registry.push_blob(ref.repository, envelope, DSSE_ENVELOPE)
        layers.append({**layer.to_dict(), "annotations": {SIGNATURE_ANNOTATION: "",
                                                          PREDICATE_ANNOTATION: statement.get("predicateType", "")}})
    return _put_attachment(registry, ref, attestation_tag(digest), layers)


def read_statements(registry: Registry, ref: ImageRef, digest: str, predicate_type: str,
                    public_key: ec.EllipticCurvePublicKey) -> list[tuple[dict | None, str]]:
    """The image's attested statements of `predicate_type`, oldest first: (statement, "") for each signed by
    `public_key` and naming `digest` as its subject, (None, why) for each that does not."""
    layers, _ = _attachment_layers(registry, ref, attestation_tag(digest), DSSE_ENVELOPE)
    found: list[tuple[dict | None, str]] = []
    for layer in layers:
        if (layer.get("annotations") or {}).get(PREDICATE_ANNOTATION, predicate_type) != predicate_type:
            continue
        try:
            stmt = open_statement(json.loads(registry.get_blob(ref.repository, layer["digest"])), public_key)
        except (RegistryError, ValueError) as e:
            found.append((None, str(e)[:160]))
            continue
        if not isinstance(stmt, dict) or stmt.get("predicateType") != predicate_type:
            found.append((None, "a statement of another predicate type"))
        elif not any(isinstance(s, dict) and (s.get("digest") or {}).get("sha256") == digest.split(":", 1)[1]
                     for s in stmt.get("subject") or []):
            found.append((None, "signed, but for another digest"))
        else:
            found.append((stmt, ""))
    return found


def _pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(body), body)


def sign_statement(statement: dict, signing: SigningKey) -> dict:
    key = signing.private_key
    body = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    signature = key.sign(_pae(IN_TOTO, body), ec.ECDSA(hashes.SHA256()))
    return {"payloadType": IN_TOTO, "payload": base64.b64encode(body).decode(),
            # keyid empty, as cosign writes it: a verifier matches a non-empty keyid against its own fingerprint
            # scheme (go-securesystemslib: SSH SHA256) and skips the signature when they differ.
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}]}


def open_statement(envelope: dict, public_key: ec.EllipticCurvePublicKey) -> dict:
    """The statement of a DSSE envelope signed by `public_key`; ValueError when it is not."""
    try:
        body = base64.b64decode(envelope["payload"])
        payload_type = envelope["payloadType"]
        signatures = [base64.b64decode(s["sig"]) for s in envelope["signatures"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a DSSE envelope ({e})") from None
    for signature in signatures:
        with contextlib.suppress(InvalidSignature):
            public_key.verify(signature, _pae(payload_type, body), ec.ECDSA(hashes.SHA256()))
            return json.loads(body)
    raise ValueError(f"not signed by {key_id(public_key)[:19]}")


# -- verification ---------------------------------------------------------------------------------------------
def _signs(public_key: ec.EllipticCurvePublicKey, layer: dict, payload: bytes) -> bool:
    """Does the layer's signature annotation sign `payload` with `public_key`? (KeyError/ValueError: damaged)"""
    signature = base64.b64decode((layer.get("annotations") or {})[SIGNATURE_ANNOTATION])
    try:
        public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Verdict:
    valid: bool
    why: str  # one line: what was found
    signatures: int = 0

    def to_dict(self) -> dict:
        return {"valid": self.valid, "why": self.why, "signatures": self.signatures}


def verify(registry: Registry, ref: ImageRef, digest: str, public_key: ec.EllipticCurvePublicKey) -> Verdict:
    """Is `digest` of `ref`'s repository signed by `public_key` (as policy.json's sigstoreSigned checks)?"""
    found = registry.get_manifest(ref.repository, signature_tag(digest))
    if found is None:
        return Verdict(False, f"{ref.repo}@{digest[:19]} has no signature ({signature_tag(digest)[:24]}...)")
    try:
        layers = json.loads(found[0]).get("layers") or []
    except (ValueError, AttributeError):
        layers = []
    seen, reasons = 0, []
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        seen += 1
        if not DIGEST_RE.match(str(layer.get("digest"))):
            reasons.append("a damaged signature")
            continue
        try:  # a payload that cannot be read is no signature; the next layer may still be one
            payload = registry.get_blob(ref.repository, layer["digest"])
        except RegistryError as e:
            reasons.append(f"a signature whose payload cannot be read ({str(e)[:120]})")
            continue
        try:
            if not _signs(public_key, layer, payload):
                reasons.append("signed by another key")
                continue
            critical = json.loads(payload)["critical"]
        except (KeyError, ValueError, TypeError):
            reasons.append("a damaged signature")
            continue
        if critical.get("image", {}).get("docker-manifest-digest") != digest:
            reasons.append("a signature of another digest")
            continue
        named = str(critical.get("identity", {}).get("docker-reference", ""))
        if named.split("@")[0].rsplit(":", 1)[0] != f"{ref.registry}/{ref.repository}" and \
                named.split("@")[0] != f"{ref.registry}/{ref.repository}":
            reasons.append(f"a signature for {named[:80]}")
            continue
        return Verdict(True, f"signed by {key_id(public_key)[:19]} (docker-reference {named})", seen)
    why = ", ".join(sorted(set(reasons))) or "no sigstore signature layer"
    return Verdict(False, f"{ref.repo}@{digest[:19]}: no valid signature by {key_id(public_key)[:19]} "
                          f"({seen} found: {why})", seen)
