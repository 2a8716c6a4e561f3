"""The registry HTTP API v2 client (http.client): manifests, blobs, tags and small OCI artifacts.

Everything addresses manifests BY DIGEST: retagging is "GET the manifest bytes, PUT the same bytes under
the new tag", which moves a tag without pulling a single layer and keeps the digest (multi-arch indexes
included). Small JSON records and locks are pushed as OCI artifacts (an OCI image manifest with
`artifactType`, the empty config and one JSON layer; optional `subject`), the form registries without
OCI 1.1 support (distribution 2.8, Debian's docker-registry) still accept and store byte for byte.

Every request is bounded whole (`timeout`), and by the operation's overall deadline when one is set.

Every setting (credentials, TLS, timeout, deadline) comes from the operation's RegistryAccess
(adapters.registry_access). Transport (adapters.registry_tls): https verified against the system store plus
the site CA, plain http only for the loopback test bed, no verification only for insecure hosts. Auth
(adapters.registry_token): whatever the registry's 401 challenge asks, HTTP basic or distribution tokens.
Image copies (layers) go through adapters.skopeo.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass

from gracectl import interrupts
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.registry_tls import tls_error
from gracectl.adapters.registry_token import Authorizer
from gracectl.errors import DeadlineError, ReadOnlyRegistryError, RegistryError
from gracectl.image_ref import DIGEST_RE, ImageRef

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
# OCI 1.1's empty config blob `{}` for artifacts that have no config.
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
MAX_REDIRECTS = 5
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)  # a busy or restarting registry: the same request may go through
READ_BACK_ERRORS = 3  # settled_head gives up after this many failed reads with no answer yet
READ_BACK_S = 15.0  # settled_head's time, past the operation's deadline (it decides what to report)
MIN_SETTLE_S = 0.2  # a read-back holds still this long at least, even with GRACECTL_LOCK_SETTLE_S=0
MAX_ANSWER_BYTES = 32 << 20  # manifests, records and SBOMs are far smaller: a larger answer is refused, not read


def says_read_only(output: str) -> bool:
    """A Go registry client's words (skopeo's, dockerd's) for a write refused with 405: the registry is read-only
    (skopeo: "StatusCode: 405, Method not allowed"; dockerd: "unsupported: ..." or "HTTP 405")."""
    low = output.lower()
    return "method not allowed" in low or low.startswith("unsupported:") or (
        "405" in low and ("unsupported" in low or "status" in low))


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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


class DamagedArtifact(RegistryError):
    """What a bookkeeping tag holds is not the artifact gracectl wrote there (damaged, or pushed by hand)."""

    def __init__(self, message: str, descriptor: Descriptor):
        super().__init__(message)
        self.descriptor = descriptor


def _cut(connection: http.client.HTTPConnection, cut_off: threading.Event) -> None:
    cut_off.set()
    with contextlib.suppress(OSError, AttributeError):
        connection.sock.shutdown(socket.SHUT_RDWR)


class Registry:
    """One registry host. Methods take the repository path (e.g. "gh200-vllm-tfa") and a tag or digest.

    `access`: the operation's settings (credentials, TLS, the per-request timeout: the most one request may
    take, whole, so a registry that drips its answer a byte at a time is cut off too). `deadline`: a
    time.monotonic() instant after which no request starts and running ones are cut off (the operation's
    overall deadline); None for none.
    """

    def __init__(self, host: str, access: RegistryAccess, *, deadline: float | None = None):
        self.host = host
        self.access = access
        self.credentials = self.access.credentials_for(host)
        self.timeout = self.access.request_timeout_s
        self.deadline = deadline
        self.deadline_s = 0.0 if deadline is None else max(0.0, deadline - time.monotonic())
        self.tls = self.access.tls(host)
        self.scheme = self.tls.scheme
        self._ssl = self.tls.context() if self.scheme == "https" else None
        self.auth = Authorizer(host, self.credentials, insecure=host in self.access.insecure_hosts)

    def extend_deadline(self, seconds: float) -> None:
        """Give clean-up work (the lock release, reading a tag back) `seconds` more, past the deadline."""
        if self.deadline is not None:
            self.deadline = max(self.deadline, time.monotonic() + seconds)

    # -- HTTP -----------------------------------------------------------------------------------------
    def _budget(self, method: str, path: str) -> float:
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineError(f"{method} {path} on registry {self.host} not sent: the operation ran past its "
                                f"deadline of {self.deadline_s:.0f}s (--deadline / GRACECTL_DEADLINE_S)")
        return min(self.timeout, left)

    def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]):
        """One bounded request: (status, headers, body) or a one-line RegistryError."""
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        budget = self._budget(method, parts.path)
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(parts.netloc, timeout=budget, context=self._ssl)
        else:
            connection = http.client.HTTPConnection(parts.netloc, timeout=budget)
        # http.client's timeout bounds each socket read, not the answer: a watchdog bounds the whole request.
        cut_off = threading.Event()
        watchdog = threading.Timer(budget, _cut, (connection, cut_off))
        watchdog.daemon = True
        interrupts.start_thread(watchdog)
        connected = False
        try:
            connection.connect()
            connected = True
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            body = response.read(MAX_ANSWER_BYTES + 1)
            if cut_off.is_set():  # cut mid-answer: what was read is not the whole answer
                raise TimeoutError
            if len(body) > MAX_ANSWER_BYTES:
                raise RegistryError(f"registry {self.host} answered {method} {parts.path} with more than "
                                    f"{MAX_ANSWER_BYTES >> 20} MiB: not a manifest or record gracectl reads")
        except ssl.SSLError as e:
            if not connected and not self.tls.verify and getattr(e, "reason", "") == "WRONG_VERSION_NUMBER" \
                    and parts.netloc == self.host:
                self.scheme = "http"  # an --insecure-registry host that speaks plain http
                return self._send(method, url.replace("https://", "http://", 1), data, headers)
            error = tls_error(parts.netloc, e)
            error.sent = connected
            raise error from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            if cut_off.is_set() or isinstance(e, TimeoutError):
                limit = "the operation's deadline" if budget < self.timeout else "the request timeout"
                raise RegistryError(f"registry {self.host} did not answer {method} {parts.path} within "
                                    f"{budget:.0f}s ({limit}; answer lost or too slow)") from None
            if connected:
                error = RegistryError(f"registry {self.host} dropped {method} {parts.path} without an answer: "
                                      f"{e or type(e).__name__}")
                error.transient = True
            else:
                error = RegistryError(f"registry {self.host} is not reachable: {e or type(e).__name__} "
                                      "(is it running? `gracectl testbed status`)")
            error.sent = connected  # no connection: the request certainly never arrived
            raise error from None
        finally:
            watchdog.cancel()
            connection.close()
        return response.status, response.headers, body, response.reason

    def _send_plain(self, method: str, url: str, headers: dict[str, str]):
        """For the token server: a bounded GET, no registry authorization."""
        return self._send(method, url, None, headers)[:3]

    def _request(self, method: str, path_or_url: str, *, data: bytes | None = None,
                 headers: dict[str, str] | None = None, allow_404: bool = False, retried: bool = False,
                 redirects: int = 0):
        url = path_or_url if "://" in path_or_url else f"{self.scheme}://{self.host}{path_or_url}"
        parts = urllib.parse.urlsplit(url)
        sent_headers = dict(headers or {})
        if parts.netloc == self.host:  # credentials and tokens only to the registry itself, never a redirect
            sent_headers.update(self.auth.header(method, parts.path, self._send_plain))
        status, response_headers, body, reason = self._send(method, url, data, sent_headers)
        if status == 401 and parts.netloc == self.host:
            challenge = response_headers.get("WWW-Authenticate", "")
            if self.auth.challenged(method, parts.path, challenge, self._send_plain, first=not retried):
                return self._request(method, path_or_url, data=data, headers=headers, allow_404=allow_404,
                                     retried=True)
        if status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD") and response_headers.get("Location"):
            if redirects >= MAX_REDIRECTS:
                raise RegistryError(f"registry {self.host} redirected {method} {parts.path} more than "
                                    f"{MAX_REDIRECTS} times (a redirect loop?)")
            location = urllib.parse.urljoin(url, response_headers.get("Location"))
            return self._request(method, location, headers=headers, allow_404=allow_404, redirects=redirects + 1)
        if status >= 400:
            if status == 404 and allow_404:
                return 404, response_headers, b""
            raise self._http_error(method, parts.path, status, reason, body)
        return status, response_headers, body

    def _http_error(self, method: str, path: str, status: int, reason: str, body: bytes) -> RegistryError:
        try:
            errors = json.loads(body or b"{}").get("errors") or []
            detail = "; ".join(f"{x.get('code')}: {x.get('message')}" for x in errors)
        except (ValueError, AttributeError):
            detail = ""
        if status == 400 and b"HTTP request to an HTTPS server" in body:
            return RegistryError(f"registry {self.host} speaks https, not plain http: put its CA in "
                                 f"/etc/docker/certs.d/{self.host}/ca.crt (or pass --cert-dir DIR)")
        if status == 405 and method in ("PUT", "POST", "PATCH"):
            return ReadOnlyRegistryError(f"registry {self.host} is read-only (it answered {method} {path} with 405 "
                                         f"{reason}): nothing can be written there until it is writable again")
        if status == 403:
            who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
            return RegistryError(f"registry {self.host} denied {method} {path} to {who} (403 {reason}"
                                 + (f": {detail}" if detail else "") + "): ask for these rights")
        error = RegistryError(f"registry {self.host}: {method} {path} answered {status} {reason}"
                              + (f" ({detail})" if detail else ""))
        error.transient = status in TRANSIENT_STATUSES
        return error

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

    def settled_head(self, repo: str, reference: str) -> Descriptor | None:
        """What `reference` points at once the answer has held still for the settle time (access.lock_settle_s:
        how long a write in flight takes to land; a write the registry received but had not applied yet - its
        sender cut off, its answer lost - lands meanwhile), read every third of it for at most READ_BACK_S
        (clean-up: past the deadline too). RegistryError when it cannot be read (three errors before any answer)
        or never holds still."""
        settle_s, within_s = max(self.access.lock_settle_s, MIN_SETTLE_S), READ_BACK_S
        self.extend_deadline(within_s)
        give_up = time.monotonic() + within_s
        seen: list[Descriptor | None] = []  # the answers since it last changed
        errors: list[RegistryError] = []
        while time.monotonic() < give_up:
            try:
                found = self.head_manifest(repo, reference)
            except RegistryError as e:
                errors.append(e)
                if len(errors) >= READ_BACK_ERRORS and not seen:
                    raise
                time.sleep(0.5)
                continue
            digest = found.digest if found else None
            if not seen or (seen[-1].digest if seen[-1] else None) != digest:
                seen, since = [found], time.monotonic()
            elif time.monotonic() - since >= settle_s:
                return found
            time.sleep(settle_s / 3)
        raise RegistryError(f"registry {self.host}: {repo}:{reference} did not hold still for {settle_s:g}s within "
                            f"{within_s:g}s" + (f" ({errors[-1]})" if errors else ""))

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

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """Delete a superseded, untagged manifest (a replaced lock or history artifact); False when the
        registry does not allow deletes. Never a tagged one: distribution untags every tag pointing at it."""
        try:
            self._request("DELETE", f"/v2/{repo}/manifests/{digest}", allow_404=True)
            return True
        except RegistryError:
            return False

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

    def referrers(self, repo: str, digest: str, artifact_type: str) -> list[dict] | None:
        """The OCI 1.1 referrers API: descriptors of the manifests whose `subject` is `digest`, filtered by
        `artifact_type`; None when the registry does not offer the API (distribution 2.8 answers 404)."""
        query = urllib.parse.urlencode({"artifactType": artifact_type})
        status, headers, body = self._request("GET", f"/v2/{repo}/referrers/{digest}?{query}", allow_404=True,
                                              headers={"Accept": OCI_INDEX})
        if status == 404 or not headers.get("Content-Type", "").startswith(OCI_INDEX):
            return None
        try:
            found = json.loads(body).get("manifests") or []
        except (ValueError, AttributeError):
            return None
        # A registry that ignores the filter says so by not echoing it in OCI-Filters-Applied.
        return [d for d in found if isinstance(d, dict) and d.get("artifactType") == artifact_type]

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
        try:
            manifest = json.loads(body)
            layers = manifest.get("layers") or []
            ok = len(layers) == 1 and isinstance(layers[0], dict) and DIGEST_RE.match(str(layers[0].get("digest")))
        except (ValueError, AttributeError, TypeError):
            ok = False
        if not ok:
            raise DamagedArtifact(f"{self.host}/{repo}:{reference} is not a gracectl artifact (one JSON layer)",
                                  descriptor)
        return descriptor, manifest, self.get_blob(repo, layers[0]["digest"])


def open_registry(ref: ImageRef, access: RegistryAccess, *, ping: bool = True, bounded: bool = True) -> Registry:
    """The one way to open the registry `ref` names, with `access` (the operation's settings, built at the edge);
    pinged first (unless ping=False) so that an unreachable registry or refused login fails at once; `bounded`:
    the operation has access.deadline_s from now."""
    deadline = time.monotonic() + access.deadline_s if bounded else None
    registry = Registry(ref.registry, access, deadline=deadline)
    if ping:
        registry.ping()
    return registry
