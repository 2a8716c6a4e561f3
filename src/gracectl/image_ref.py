"""Image references and the naming rules of image tags, repositories and digests (the ground floor:
imports nothing of gracectl but errors and environment, so manifests, records, the registry client and the CLI share it).

    ImageRef.parse("127.0.0.1:5000/gh200-vllm-tfa:v0.19.0-tfa")   # registry, repository, tag, digest
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gracectl.errors import UsageError

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
# A tag as the distribution spec defines it (also the rule for release names, see manifest.py).
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"  # for schemas (pydantic's regex: "$" is the very end)
TAG_RE = re.compile(TAG_PATTERN[:-1] + r"\Z")  # Python's "$" would let "tag\n" through
# HOST[:PORT]: a DNS name or IPv4 address, or [IPv6]; the port numeric.
HOST_RE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*"
                     r"|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?\Z")
REPO_RE = re.compile(r"^[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*\Z")


def control_free(text: str, what: str) -> str:
    """`text` unless it holds a control character (a newline forging a history line, an escape sequence
    repainting a terminal): then a one-line UsageError naming `what`."""
    if any(ord(c) < 32 and c != "\t" or 0x7F <= ord(c) < 0xA0 for c in text):
        raise UsageError(f"{what} holds a control character ({text[:60]!r}): write it on one line, plain text")
    return text


def printable(text: str) -> str:
    """`text` with control characters shown escaped: what another host wrote into the registry (a holder's
    name, a reason) never drives this terminal."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


def valid_host(host: str) -> bool:
    match = HOST_RE.match(host)
    return bool(match) and int((match.group(5) or ":0")[1:]) <= 65535


@dataclass(frozen=True)
class ImageRef:
    """REGISTRY/REPOSITORY[:TAG][@DIGEST], the registry always explicit (or from $GRACECTL_REGISTRY)."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @staticmethod
    def _split(text: str) -> tuple[str, str, str, str]:
        """text -> (first path part, the rest of the name, tag, digest)."""
        rest, _, digest = text.strip().partition("@")
        tag = ""
        name = rest
        if ":" in rest.rsplit("/", 1)[-1]:
            name, tag = rest.rsplit(":", 1)
        first, _, remainder = name.partition("/")
        return first, remainder, tag, digest

    @classmethod
    def names_registry(cls, text: str) -> bool:
        first, remainder, _, _ = cls._split(text)
        return bool(remainder) and ("." in first or ":" in first or first == "localhost")

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """A reference that names its registry (the edge puts GRACECTL_REGISTRY in front of one that does not:
        gracectl.settings.image_reference)."""
        if not cls.names_registry(text):
            raise UsageError(f"{text[:200]!r} names no registry: write HOST[:PORT]/REPOSITORY[:TAG] "
                             "(or set GRACECTL_REGISTRY=HOST[:PORT][/NAMESPACE])")
        registry, repository, tag, digest = cls._split(text)
        if not valid_host(registry):
            raise UsageError(f"{text[:200]!r}: {registry[:100]!r} is not a registry HOST[:PORT]")
        if not REPO_RE.match(repository) or len(repository) > 255:
            raise UsageError(f"{text[:200]!r}: {repository[:100]!r} is not a valid repository name")
        if tag and not TAG_RE.match(tag):
            raise UsageError(f"{text[:200]!r}: {tag[:100]!r} is not a valid tag")
        if digest and not DIGEST_RE.match(digest):
            raise UsageError(f"{text[:200]!r}: the digest must be sha256:<64 hex>")
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


def normalized_image(ref: str) -> str:
    """`ref` as BuildKit prints it: Docker Hub's names in full (debian:12 -> docker.io/library/debian:12), no digest."""
    name = ref.split("@", 1)[0]
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name if '/' in name else 'library/' + name}"
    return name
