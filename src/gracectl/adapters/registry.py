"""The registry adapter: a small registry HTTP API v2 client (urllib) plus skopeo for image copies.

Everything addresses manifests BY DIGEST: retagging is "GET the manifest bytes, PUT the same bytes under
the new tag", which moves a tag without pulling a single layer and keeps the digest (multi-arch indexes
included). Small JSON records and locks are pushed as OCI artifacts (an OCI image manifest with
`artifactType`, the empty config and one JSON layer; optional `subject`), the form registries without
OCI 1.1 support (distribution 2.8, Debian's docker-registry) still accept and store byte for byte.

Transport: plain http for loopback registries (127.0.0.1, localhost: the test bed), https elsewhere.
Auth: HTTP basic (htpasswd registries); token (Bearer) auth is not supported and says so.
Credentials come from `--username` + `--password-stdin` or from the docker config's `auths`
($DOCKER_CONFIG/config.json or ~/.docker/config.json, as `docker login` writes it). They never go on a
command line or into a log: skopeo gets a temporary 0600 authfile that is deleted afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gracectl.adapters import proc
from gracectl.errors import RegistryError, UsageError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
# OCI 1.1's empty config blob `{}` for artifacts that have no config.
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
REPO_RE = re.compile(r"^[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ImageRef:
    """REGISTRY/REPOSITORY[:TAG][@DIGEST], the registry always explicit (or from $GRACECTL_REGISTRY)."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        rest, _, digest = text.strip().partition("@")
        tag = ""
        name = rest
        if ":" in rest.rsplit("/", 1)[-1]:
            name, tag = rest.rsplit(":", 1)
        first, _, remainder = name.partition("/")
        if remainder and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, remainder
        else:
            default = os.environ.get("GRACECTL_REGISTRY", "").strip("/")
            if not default:
                raise UsageError(f"{text!r} names no registry: write HOST[:PORT]/REPOSITORY[:TAG] "
                                 "(or set GRACECTL_REGISTRY=HOST[:PORT][/NAMESPACE])")
            registry, _, namespace = default.partition("/")
            repository = f"{namespace}/{name}" if namespace else name
        if not REPO_RE.match(repository):
            raise UsageError(f"{text!r}: {repository!r} is not a valid repository name")
        if tag and not TAG_RE.match(tag):
            raise UsageError(f"{text!r}: {tag!r} is not a valid tag")
        if digest and not DIGEST_RE.match(digest):
            raise UsageError(f"{text!r}: the digest must be sha256:<64 hex>")
        return cls(registry, repository, tag, digest)

    @property
    def repo(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the API addresses: the digest when known, else the tag."""
        return self.digest or self.tag

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, tag)

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, "", digest)

    def __str__(self) -> str:
        return self.repo + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_dict(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    @classmethod
    def of(cls, data: bytes, media_type: str) -> Descriptor:
        return cls(media_type, sha256_digest(data), len(data))


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password, even in a traceback
        return f"Credentials(username={self.username!r}, password='***')"


def docker_config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"


def credentials_for(registry: str, username: str = "", password: str = "") -> Credentials | None:
    """Explicit credentials (from --password-stdin) win; else the docker config's `auths` entry, if any."""
    if username or password:
        if not (username and password):
            raise UsageError("give both --username and a password on stdin (--password-stdin)")
        return Credentials(username, password)
    try:
        config = json.loads(docker_config_path().read_text())
    except (OSError, ValueError):
        return None
    for key, entry in (config.get("auths") or {}).items():
        host = re.sub(r"^https?://", "", key).split("/", 1)[0]
        if host != registry:
            continue
        if entry.get("auth"):
            user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            return Credentials(user, pw)
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"])
    return None


def login_hint(registry: str) -> str:
    return f"log in with `docker login {registry}` or pass --username USER --password-stdin"


class Registry:
    """One registry host. Methods take the repository path (e.g. "gh200-vllm-tfa") and a tag or digest."""

    def __init__(self, host: str, credentials: Credentials | None = None, timeout: float = 15.0):
        self.host = host
        self.credentials = credentials
        self.timeout = timeout
        self.scheme = "http" if host.rsplit(":", 1)[0] in LOOPBACK_HOSTS or host in LOOPBACK_HOSTS else "https"

    @classmethod
    def for_ref(cls, ref: ImageRef, username: str = "", password: str = "") -> Registry:
        return cls(ref.registry, credentials_for(ref.registry, username, password))

    # -- HTTP -----------------------------------------------------------------------------------------
    def _request(self, method: str, path_or_url: str, *, data: bytes | None = None,
                 headers: dict[str, str] | None = None, allow_404: bool = False):
        url = path_or_url if "://" in path_or_url else f"{self.scheme}://{self.host}{path_or_url}"
        request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
        if self.credentials:
            token = base64.b64encode(f"{self.credentials.username}:{self.credentials.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            if e.code == 404 and allow_404:
                return 404, e.headers, b""
            raise self._http_error(method, url, e) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RegistryError(f"registry {self.host} is not reachable: {reason} "
                                "(is it running? `gracectl testbed status`)") from None

    def _http_error(self, method: str, url: str, e: urllib.error.HTTPError) -> RegistryError:
        if e.code == 401:
            challenge = e.headers.get("WWW-Authenticate", "")
            if challenge.lower().startswith("bearer"):
                return RegistryError(f"registry {self.host} uses token (Bearer) auth, which gracectl does not "
                                     "support: use a registry with htpasswd (basic) auth")
            if self.credentials:
                return RegistryError(f"registry {self.host} refused the credentials of user "
                                     f"{self.credentials.username!r}: {login_hint(self.host)}")
            return RegistryError(f"registry {self.host} requires credentials: {login_hint(self.host)}")
        try:
            errors = json.loads(e.read() or b"{}").get("errors") or []
            detail = "; ".join(f"{x.get('code')}: {x.get('message')}" for x in errors)
        except (ValueError, AttributeError):
            detail = ""
        path = urllib.parse.urlsplit(url).path
        return RegistryError(f"registry {self.host}: {method} {path} answered {e.code} {e.reason}"
                             + (f" ({detail})" if detail else ""))

    # -- API ------------------------------------------------------------------------------------------
    def ping(self) -> None:
        """Raise RegistryError unless the registry answers /v2/ and accepts our credentials."""
        self._request("GET", "/v2/")

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None:
        """The manifest a tag (or digest) points at now, or None when there is none."""
        status, headers, _ = self._request("HEAD", f"/v2/{repo}/manifests/{reference}",
                                           headers={"Accept": ", ".join(MANIFEST_TYPES)}, allow_404=True)
        if status == 404:
            return None
        digest = headers.get("Docker-Content-Digest", "")
        if not DIGEST_RE.match(digest):
            raise RegistryError(f"registry {self.host} gave no Docker-Content-Digest for {repo}:{reference}")
        return Descriptor(headers.get("Content-Type", ""), digest, int(headers.get("Content-Length") or 0))

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, Descriptor] | None:
        status, headers, body = self._request("GET", f"/v2/{repo}/manifests/{reference}",
                                              headers={"Accept": ", ".join(MANIFEST_TYPES)}, allow_404=True)
        if status == 404:
            return None
        descriptor = Descriptor.of(body, headers.get("Content-Type", ""))
        if DIGEST_RE.match(reference) and descriptor.digest != reference:
            raise RegistryError(f"registry {self.host} returned a manifest for {reference} whose digest is "
                                f"{descriptor.digest}")
        return body, descriptor

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        _, headers, _ = self._request("PUT", f"/v2/{repo}/manifests/{reference}", data=body,
                                      headers={"Content-Type": media_type})
        digest = headers.get("Docker-Content-Digest") or sha256_digest(body)
        if digest != sha256_digest(body):
            raise RegistryError(f"registry {self.host} stored {repo}:{reference} as {digest}, "
                                f"not {sha256_digest(body)}")
        return digest

    def tag_digest(self, repo: str, digest: str, tag: str) -> None:
        """Point `tag` at the manifest `digest` (same bytes, so the same digest): no layer moves."""
        found = self.get_manifest(repo, digest)
        if found is None:
            raise RegistryError(f"no manifest {digest} in {self.host}/{repo}")
        body, descriptor = found
        self.put_manifest(repo, tag, body, descriptor.media_type)

    def delete_manifest(self, repo: str, digest: str) -> None:
        self._request("DELETE", f"/v2/{repo}/manifests/{digest}", allow_404=True)

    def tags(self, repo: str) -> list[str]:
        found: list[str] = []
        path = f"/v2/{repo}/tags/list"
        while path:
            status, headers, body = self._request("GET", path, allow_404=True)
            if status == 404:
                return found
            found += json.loads(body).get("tags") or []
            # Pagination: Link: </v2/...?last=x&n=y>; rel="next"
            match = re.match(r"<([^>]+)>", headers.get("Link", ""))
            path = match.group(1) if match else ""
        return found

    def push_blob(self, repo: str, data: bytes, media_type: str) -> Descriptor:
        descriptor = Descriptor.of(data, media_type)
        status, _, _ = self._request("HEAD", f"/v2/{repo}/blobs/{descriptor.digest}", allow_404=True)
        if status == 404:
            _, headers, _ = self._request("POST", f"/v2/{repo}/blobs/uploads/")
            location = headers["Location"]
            separator = "&" if "?" in location else "?"
            self._request("PUT", f"{location}{separator}digest={descriptor.digest}", data=data,
                          headers={"Content-Type": "application/octet-stream"})
        return descriptor

    def get_blob(self, repo: str, digest: str) -> bytes:
        _, _, body = self._request("GET", f"/v2/{repo}/blobs/{digest}")
        if sha256_digest(body) != digest:
            raise RegistryError(f"registry {self.host} returned a blob for {digest} that does not match it")
        return body

    def push_artifact(self, repo: str, reference: str, artifact_type: str, payload: bytes, *,
                      subject: Descriptor | None = None, annotations: dict[str, str] | None = None) -> Descriptor:
        """Push `payload` (one JSON layer) as an OCI artifact under a tag, or untagged when `reference`
        is empty (then only its digest addresses it). Returns the artifact manifest's descriptor."""
        config = self.push_blob(repo, EMPTY_CONFIG, EMPTY_CONFIG_TYPE)
        layer = self.push_blob(repo, payload, artifact_type)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": config.to_dict(),
            "layers": [layer.to_dict()],
        }
        if subject:
            manifest["subject"] = subject.to_dict()
        if annotations:
            manifest["annotations"] = annotations
        body = json.dumps(manifest, sort_keys=True).encode()
        digest = self.put_manifest(repo, reference or sha256_digest(body), body, OCI_MANIFEST)
        return Descriptor(OCI_MANIFEST, digest, len(body))

    def read_artifact(self, repo: str, reference: str) -> tuple[Descriptor, dict, bytes] | None:
        """(manifest descriptor, manifest, payload) of an artifact pushed by push_artifact, or None."""
        found = self.get_manifest(repo, reference)
        if found is None:
            return None
        body, descriptor = found
        manifest = json.loads(body)
        layers = manifest.get("layers") or []
        if len(layers) != 1:
            raise RegistryError(f"{self.host}/{repo}:{reference} is not a gracectl artifact (one JSON layer)")
        return descriptor, manifest, self.get_blob(repo, layers[0]["digest"])


# -- skopeo -------------------------------------------------------------------------------------------
TRANSPORTS = ("docker://", "docker-daemon:", "oci:", "oci-archive:", "docker-archive:", "dir:",
              "containers-storage:")


def transport_ref(image: str) -> str:
    """A skopeo source: as given when it names a transport, else a local dockerd image."""
    return image if image.startswith(TRANSPORTS) else f"docker-daemon:{image}"


def _tls_flags(option: str, ref: str) -> list[str]:
    if ref.startswith("docker://"):
        host = ref[len("docker://"):].split("/", 1)[0]
        if host.rsplit(":", 1)[0] in LOOPBACK_HOSTS:
            return [f"--{option}=false"]
    return []


@contextlib.contextmanager
def authfile(registry: str, credentials: Credentials | None):
    """A temporary 0600 docker-config-style authfile for skopeo (never --creds: it shows in `ps`)."""
    if credentials is None:
        yield []
        return
    fd, path = tempfile.mkstemp(prefix="gracectl-auth-", suffix=".json")
    try:
        os.fchmod(fd, 0o600)
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": {registry: {"auth": token}}}, f)
        yield ["--authfile", path]
    finally:
        os.unlink(path)


def skopeo_copy(source: str, dest: ImageRef, credentials: Credentials | None = None) -> str:
    """Copy `source` (a skopeo transport ref, see transport_ref) to `dest`; returns the pushed manifest digest."""
    target = f"docker://{dest}"
    with tempfile.TemporaryDirectory(prefix="gracectl-copy-") as tmp, authfile(dest.registry, credentials) as auth:
        digest_file = Path(tmp) / "digest"
        secrets = [credentials.password] if credentials else []
        proc.run(["skopeo", "copy", *auth, *_tls_flags("src-tls-verify", source),
                  *_tls_flags("dest-tls-verify", target), "--digestfile", str(digest_file), source, target],
                 secrets=secrets)
        return digest_file.read_text().strip()


def skopeo_inspect_raw(source: str, credentials: Credentials | None = None, registry: str = "") -> dict:
    """The manifest of `source` as skopeo sees it (for a local image: the manifest it would push)."""
    with authfile(registry, credentials) as auth:
        out = proc.run(["skopeo", "inspect", "--raw", *auth, *_tls_flags("tls-verify", source), source],
                       secrets=[credentials.password] if credentials else [], echo=False).stdout
    return json.loads(out)
