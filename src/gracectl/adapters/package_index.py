"""The site's Python package index (PEP 691 JSON simple API, PEP 658 metadata) and uv's resolver.

`gracectl release new/check` read a release's truth from here: the vLLM sdist (its requirements, docker/ and
cmake/ files and Python source), and the metadata of the wheels it pins (which Triton a torch brings, whether an
aarch64 torch is the CUDA build). Whole files are checked against the sha256 the index publishes (a file without
one is refused); a wheel's METADATA and files read out of it by HTTP range requests (no PEP 658 file) cannot be,
and are read over the index's TLS only. All is kept in a cache folder, so `release check --offline` needs no
network. Credentials in an index URL go in a Basic header and are never printed or part of a cache path. uv (a gracectl dependency) resolves a
requirement set for linux/aarch64 without installing anything.
"""

from __future__ import annotations

import base64
import email.parser
import hashlib
import html.parser
import http.client
import io
import json
import re
import shutil
import tarfile
import tempfile
import zipfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from packaging.utils import canonicalize_name as normalize  # PEP 503 names
from packaging.version import InvalidVersion, Version

from gracectl.adapters import proc
from gracectl.errors import CommandFailedError, IndexUnreachableError, UpstreamError

JSON_SIMPLE = "application/vnd.pypi.simple.v1+json"
# What `release new/check` read of an sdist: the build files, and vLLM's Python source (the triton_kernels
# contract is read from it). Tests, docs, csrc (~70% of the archive) are not kept.
SDIST_KEEP = ("CMakeLists.txt", "cmake/", "setup.py", "use_existing_torch.py", "requirements/", "docker/",
              "pyproject.toml", "tools/ep_kernels/install_python_libraries.sh", "tools/install_gdrcopy.sh",
              "rust-toolchain.toml", "tools/install_protoc.sh")
# Every path of the sdist (kept or not), one per line: which files a release has (gracectl.releases.upstream_build).
SDIST_MEMBERS = ".members"
AARCH64 = "aarch64-unknown-linux-gnu"


def without_userinfo(url: str) -> str:
    """The URL as it may be printed or used as a cache key: no user or password (a site's index may carry them)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _request(url: str, headers: dict[str, str]) -> urllib.request.Request:
    """A request whose credentials (https://user:pass@host/...) go in a Basic header, not the URL urllib sees."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:
        token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                                 f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
        headers = {**headers, "Authorization": f"Basic {token}"}
        url = without_userinfo(url)
    return urllib.request.Request(url, headers=headers)


def cache_key(url: str) -> str:
    """A URL as one folder name of the cache (its credentials left out)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", without_userinfo(url))


def default_cache() -> Path:
    """Where sdists, metadata and triton_kernels trees are kept unless told (GRACECTL_UPSTREAM_CACHE at the edges)."""
    return Path.home() / ".cache" / "gracectl" / "upstream"



@dataclass(frozen=True)
class PackageIndex:
    url: str  # e.g. https://pypi.org/simple (a site's mirror in production)
    cache: Path  # folder for index pages, sdists and metadata (outside the clone)
    offline: bool = False  # only the cache: never the network

    def _get(self, url: str, accept: str = "", timeout: float = 300) -> bytes:
        if self.offline:
            raise UpstreamError(f"offline: {without_userinfo(url)} is not in the cache {self.cache} (run once without --offline)")
        req = _request(url, {"Accept": accept} if accept else {})
        shown = without_userinfo(url)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read()
        except urllib.error.HTTPError as exc:
            raise UpstreamError(f"{shown}: HTTP {exc.code} {exc.reason}") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise IndexUnreachableError(f"{shown} cannot be reached ({getattr(exc, 'reason', exc)}): check --index-url, or "
                                "use --offline with a filled cache") from None

    def _cached(self, key: str, fetch, valid=lambda data: True, fresh: bool = False) -> bytes:
        path = self.cache / "index" / key
        if path.is_file() and (self.offline or not key.endswith(".json")):
            return path.read_bytes()
        try:
            data = fetch()
            if not valid(data):  # never cache what cannot be read (an HTML error page for a JSON one)
                raise UpstreamError(f"{without_userinfo(self.url)}: {key.rsplit('/', 1)[-1]} is not what was asked for")
        except UpstreamError:
            if path.is_file() and not fresh:  # an index page: the cached one beats none when the index is down
                return path.read_bytes()
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(data)
        tmp.replace(path)
        return data

    def project(self, name: str, fresh: bool = False) -> dict:
        """The index's JSON page of a project: {"files": [...], "versions": [...]}; `fresh`: never the cached page
        instead (what the index serves now, or an error)."""
        key = f"{self._host()}/{normalize(name)}.json"
        data = self._cached(key, lambda: self._get(f"{self.url.rstrip('/')}/{normalize(name)}/", JSON_SIMPLE, 60),
                            valid=lambda data: _page(data) is not None, fresh=fresh and not self.offline)
        page = _page(data)
        if page is None:
            raise UpstreamError(f"{without_userinfo(self.url)}: the page of {name} is not PEP 691 JSON (an index "
                                "that serves only HTML pages? the site's mirror must speak PEP 691)")
        return page

    def versions(self, name: str, fresh: bool = False) -> list[str]:
        """Every version the index lists, oldest first as versions compare (0.9.2 before 0.10.0), never as
        strings; a name that is no version (an odd upload) is left out."""
        page = self.project(name, fresh)
        if page.get("versions"):
            found = set(page["versions"])
        else:  # an index without PEP 700's list: the versions of its sdists
            prefix = f"{name}-"
            found = {f["filename"][len(prefix):-len(".tar.gz")] for f in page["files"]
                     if f["filename"].startswith(prefix) and f["filename"].endswith(".tar.gz")}
        return sorted((v for v in found if _version(v)), key=_version)

    def _host(self) -> str:
        return cache_key(without_userinfo(self.url).split("://", 1)[-1]).strip("_")

    def _file(self, name: str, filename: str) -> dict:
        for f in self.project(name)["files"]:
            if f["filename"] == filename:
                return f
        known = ", ".join(self.versions(name)[-8:]) or "none"
        raise UpstreamError(f"{without_userinfo(self.url)} has no {filename} (its newest {name} versions: {known})")

    def _download(self, name: str, filename: str, url_suffix: str = "", hash_key: str = "") -> bytes:
        f = self._file(name, filename)
        url = urllib.parse.urljoin(f"{self.url.rstrip('/')}/{normalize(name)}/", f["url"]) + url_suffix
        data = self._cached(f"{self._host()}/files/{filename}{url_suffix}", lambda: self._get(url))
        want = (f.get(hash_key) or {}).get("sha256") if hash_key else (f.get("hashes") or {}).get("sha256")
        if not want:
            raise UpstreamError(f"{without_userinfo(self.url)} publishes no sha256 for {filename}{url_suffix}: "
                                "nothing is used unchecked")
        if hashlib.sha256(data).hexdigest() != want:
            (self.cache / "index" / self._host() / "files" / f"{filename}{url_suffix}").unlink(missing_ok=True)
            raise UpstreamError(f"{filename}{url_suffix} does not match the sha256 {without_userinfo(self.url)} publishes for it")
        return data

    def sdist(self, name: str, version: str) -> Path:
        """The extracted build files and Python source of <name>-<version>.tar.gz, fetched once."""
        dest = self.cache / "sdist" / f"{normalize(name)}-{version}"
        marker = dest / ".complete"
        # An extraction made with another SDIST_KEEP is re-made (online): it may lack files read now.
        if marker.is_file() and (self.offline or marker.read_text().splitlines()[1:] == [" ".join(SDIST_KEEP)]):
            return dest
        filename = f"{name}-{version}.tar.gz"
        data = self._download(name, filename)
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                members = []
                every = [m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile() and "/" in m.name]
                for m in tar.getmembers():
                    rel = m.name.split("/", 1)[1] if "/" in m.name else ""
                    if m.isfile() and (rel.startswith(SDIST_KEEP)
                                       or (rel.startswith(f"{name}/") and rel.endswith(".py"))):
                        m.name = rel
                        members.append(m)
                tar.extractall(partial, members=members, filter="data")
                (partial / SDIST_MEMBERS).write_text("".join(f"{rel}\n" for rel in every))
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise UpstreamError(f"{filename} cannot be unpacked ({exc})") from None
        (partial / ".complete").write_text(filename + "\n" + " ".join(SDIST_KEEP) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)
        return dest

    def _wheel(self, name: str, version: str, platform: str, python: str) -> dict:
        """The wheel pip would take on `platform` ("manylinux_aarch64"; "any": a pure-Python wheel)."""
        arch = platform.rsplit("_", 1)[-1]
        cp = "cp" + python.replace(".", "")
        prefix = f"{normalize(name).replace('-', '_')}-{version}-"
        on_platform = (lambda n: n.endswith("-py3-none-any.whl")) if platform == "any" else \
            (lambda n: n.endswith(f"_{arch}.whl") and "linux" in n
             and (f"-{cp}-" in n or "-abi3-" in n or "-py3-none-" in n))
        wheels = [f for f in self.project(name)["files"] if f["filename"].lower().startswith(prefix.lower())
                  and on_platform(f["filename"])]
        if not wheels:
            raise UpstreamError(f"{without_userinfo(self.url)} has no {name} {version} wheel for linux {arch} / Python {python}")
        return sorted(wheels, key=lambda f: f["filename"])[-1]

    def wheel_files(self, name: str, version: str, prefix: str, platform: str = "manylinux_aarch64",
                    python: str = "3.12") -> tuple[str, dict[str, bytes]]:
        """(wheel file name, {path: content}) of the files under `prefix` in the wheel, read with HTTP range
        requests (e.g. the 41 files of vllm/third_party/triton_kernels/ out of a 385 MB vLLM wheel)."""
        f = self._wheel(name, version, platform, python)
        if self.offline:
            raise UpstreamError(f"offline: reading {f['filename']} needs the index")
        url = urllib.parse.urljoin(f"{self.url.rstrip('/')}/{normalize(name)}/", f["url"])
        try:
            with zipfile.ZipFile(_HttpRangeFile(url)) as wheel:
                return f["filename"], {n: wheel.read(n) for n in wheel.namelist() if n.startswith(prefix)}
        except (OSError, zipfile.BadZipFile, http.client.HTTPException) as exc:
            raise UpstreamError(f"cannot read {f['filename']} from {without_userinfo(url)} ({exc})") from None

    def wheel_names(self, name: str, version: str, platform: str = "manylinux_aarch64",
                    python: str = "3.12") -> tuple[str, list[str]]:
        """(wheel file name, every member's path) of the wheel, from its central directory alone (HTTP ranges;
        cached: a released wheel never changes)."""
        f = self._wheel(name, version, platform, python)
        url = urllib.parse.urljoin(f"{self.url.rstrip('/')}/{normalize(name)}/", f["url"])

        def fetch() -> bytes:
            if self.offline:
                raise UpstreamError(f"offline: the file list of {f['filename']} is not in the cache {self.cache}")
            try:
                with zipfile.ZipFile(_HttpRangeFile(url)) as wheel:
                    return "\n".join(wheel.namelist()).encode()
            except (OSError, zipfile.BadZipFile, http.client.HTTPException) as exc:
                raise UpstreamError(f"cannot read {f['filename']} from {without_userinfo(url)} ({exc})") from None

        data = self._cached(f"{self._host()}/files/{f['filename']}.names", fetch)
        return f["filename"], data.decode().splitlines()

    def wheel_metadata(self, name: str, version: str, platform: str, python: str = "3.12") -> tuple[str, Message]:
        """(wheel file name, its METADATA) for the wheel of name==version that pip would take on `platform`
        (a wheel tag fragment such as "manylinux_2_28_aarch64" -> any manylinux aarch64 wheel), read through
        PEP 658 without downloading the wheel."""
        f = self._wheel(name, version, platform, python)
        key = "core-metadata" if f.get("core-metadata") else "data-dist-info-metadata"
        if f.get(key):
            data = self._download(name, f["filename"], ".metadata", key)
        else:  # no PEP 658 file (older uploads): METADATA read out of the wheel with HTTP range requests
            url = urllib.parse.urljoin(f"{self.url.rstrip('/')}/{normalize(name)}/", f["url"])
            data = self._cached(f"{self._host()}/files/{f['filename']}.metadata",
                                lambda: self._ranged_metadata(url, f["filename"]))
        return f["filename"], email.parser.BytesParser().parsebytes(data)

    def _ranged_metadata(self, url: str, filename: str) -> bytes:
        if self.offline:
            raise UpstreamError(f"offline: the metadata of {filename} is not in the cache {self.cache}")
        try:
            with zipfile.ZipFile(_HttpRangeFile(url)) as wheel:
                member = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
                return wheel.read(member)
        except (OSError, zipfile.BadZipFile, StopIteration, http.client.HTTPException) as exc:
            raise UpstreamError(f"cannot read the METADATA of {filename} from {without_userinfo(url)} ({exc})") from None


class _HttpRangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file through HTTP range requests: zipfile reads a wheel's central
    directory and one member (a few hundred KB) instead of the whole wheel (torch: 400+ MB)."""

    def __init__(self, url: str):
        self.url, self.pos = url, 0
        self.request = _request(url, {})
        head = _request(url, {})
        head.method = "HEAD"
        with urllib.request.urlopen(head, timeout=60) as r:
            if not r.headers.get("Content-Length", "").isdigit():
                raise OSError(f"{without_userinfo(url)} gives no Content-Length: ranges cannot be read")
            self.size = int(r.headers["Content-Length"])

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        req = urllib.request.Request(self.request.full_url, headers={**self.request.headers,
                                                                        "Range": f"bytes={self.pos}-{end - 1}"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                data = r.read()
                if r.status != 206:  # a server without ranges sent the whole file: keep only what was asked
                    data = data[self.pos:end]
        except http.client.HTTPException as exc:  # a cut answer (IncompleteRead) is not an OSError
            raise OSError(f"range {self.pos}-{end - 1} cut short ({exc})") from None
        self.pos += len(data)
        return data


class _Anchors(html.parser.HTMLParser):
    """The links of a PEP 503 simple page: (href, text)."""

    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self.links.append((self._href, ""))

    def handle_data(self, data):
        if self._href is not None and self.links:
            self.links[-1] = (self.links[-1][0], self.links[-1][1] + data)

    def handle_endtag(self, tag):
        if tag == "a":
            self._href = None


def published_files(index_url: str, name: str, timeout: float = 60) -> list[dict]:
    """Every file the index lists for project `name`: {"filename", "url" (absolute, no credentials), "sha256"
    ("" where the index publishes none)}, read from its PEP 691 JSON page or its PEP 503 HTML page (a plain mirror's
    #sha256= fragments). A project the index does not have: []."""
    page_url = f"{index_url.rstrip('/')}/{normalize(name)}/"
    req = _request(page_url, {"Accept": f"{JSON_SIMPLE}, text/html;q=0.1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data, base = r.read(), r.geturl()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise UpstreamError(f"{without_userinfo(page_url)}: HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise IndexUnreachableError(f"{without_userinfo(page_url)} cannot be reached "
                                    f"({getattr(exc, 'reason', exc)})") from None
    base = without_userinfo(base)
    if (page := _page(data)) is not None:
        links = [(f.get("url", ""), f.get("filename", ""), (f.get("hashes") or {}).get("sha256", ""))
                 for f in page["files"]]
    else:
        anchors = _Anchors()
        anchors.feed(data.decode("utf-8", "replace"))
        links = []
        for href, text in anchors.links:
            url, _, fragment = href.partition("#")
            digest = fragment.split("=", 1)[1] if fragment.startswith("sha256=") else ""
            links.append((url, text.strip() or urllib.parse.unquote(url.rsplit("/", 1)[-1]), digest))
    return [{"filename": filename, "url": without_userinfo(urllib.parse.urljoin(base, url.partition("#")[0])),
             "sha256": digest.lower()} for url, filename, digest in links if url and filename]


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _page(data: bytes) -> dict | None:
    try:
        page = json.loads(data)
    except ValueError:
        return None
    return page if isinstance(page, dict) and isinstance(page.get("files"), list) else None


def resolve(requirements: list[str], *, index_url: str, extra_index_urls: list[str] = (), python: str = "3.12",
            platform: str = AARCH64, overrides: list[str] = (), cache: Path | None = None) -> list[str]:
    """The pinned set uv resolves for `requirements` on `platform` (nothing installed, nothing built).
    An unresolvable set is an UpstreamError with uv's own explanation (which package, which versions exist)."""
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.in"
        req.write_text("\n".join(requirements) + "\n")
        args = [_uv(), "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--python-platform", platform,
                "--python-version", python, "--index-url", index_url, "--index-strategy", "unsafe-best-match",
                "--no-config", "--no-build", str(req)]
        for url in extra_index_urls:
            args += ["--extra-index-url", url]
        if overrides:
            over = Path(tmp) / "overrides.txt"
            over.write_text("\n".join(overrides) + "\n")
            args += ["--override", str(over)]
        # Never a Python download (uv's default reaches for GitHub); its cache beside the index cache.
        env = {"UV_PYTHON_DOWNLOADS": "never", **({"UV_CACHE_DIR": str(cache)} if cache else {})}
        try:
            out = proc.run(args, timeout=900, echo=False, env=env,
                           secrets=[urllib.parse.urlsplit(u).password or "" for u in (index_url, *extra_index_urls)])
        except CommandFailedError as exc:
            raise UpstreamError(f"the requirements do not resolve for {platform} / Python {python} on "
                                f"{without_userinfo(index_url)}: "
                                f"{_uv_reason(exc.output)}") from None
    return [line.strip() for line in out.stdout.splitlines() if line.strip() and not line.startswith("#")]


def _uv() -> str:
    """uv's binary as its own package locates it (beside gracectl's Python even when that venv is not on PATH)."""
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return "uv"  # proc.which then says how to install it


def _uv_reason(output: str) -> str:
    """uv's explanation in one line (its 'Because ... we can conclude ...' paragraph)."""
    text = " ".join(line.strip() for line in output.splitlines() if line.strip() and not line.startswith("+"))
    text = re.sub(r"^(error|×)\s*:?\s*", "", text.replace("╰─▶", "").strip())
    return re.sub(r"\s+", " ", text)[:600]
