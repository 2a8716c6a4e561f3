"""Package indexes on 127.0.0.1 for the release tests: a folder served as a PEP 503 index (a STAND-IN for an extra
index a release adds, FlashInfer's wheel site, unreachable here), and the site's index as `release watch` sees it
(`VllmIndex`): a PEP 691 JSON index that lists the vllm versions a test chooses, their REAL sdists copied from
the test bed's upstream cache (PyPI's own file otherwise), and every other project's page as PyPI serves it."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
import urllib.request
from contextlib import contextmanager
from functools import partial
from pathlib import Path

JSON_SIMPLE = "application/vnd.pypi.simple.v1+json"
PYPI = "https://pypi.org/simple"


def standin_index(root: Path, project: str, version: str) -> Path:
    """A PEP 503 index folder with one metadata-only wheel: a STAND-IN for an extra index the release adds
    (FlashInfer's wheel site is not reachable here), served by `serve`."""
    import base64
    import zipfile

    dist = f"{project.replace('-', '_')}-{version}"
    files = {f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
             "Summary: STAND-IN (gracectl test): no real package inside\n".encode(),
             f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: gracectl-test\nRoot-Is-Purelib: true\n"
                                        b"Tag: py3-none-any\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
                     f"{len(d)}\n" for p, d in files.items()) + f"{dist}.dist-info/RECORD,,\n"
    files[f"{dist}.dist-info/RECORD"] = record.encode()
    (root / project).mkdir(parents=True)
    wheel = root / project / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (root / project / "index.html").write_text(f'<a href="{wheel.name}#sha256={digest}">{wheel.name}</a>\n')
    return root


@contextmanager
def serve(root: Path):
    """`root` as static files on 127.0.0.1: yields its URL (http://127.0.0.1:PORT/)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # uv asks an extra index for every project: 404s, not news
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


class VllmIndex:
    """The site's index: vllm lists `versions` only (a test adds one, as upstream publishes it), its sdists served
    from `sdists` (real files: the test bed's upstream cache) where there, PyPI's own URL otherwise; any other
    project's page (torch's metadata, ...) is PyPI's, fetched when asked."""

    def __init__(self, versions: list[str], sdists: Path, root: Path):
        self.versions, self.sdists, self.root = list(versions), sdists, root
        self.pages: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []

    def _pypi(self, project: str, accept: str) -> tuple[bytes, str]:
        if (project, accept) not in self.pages:
            req = urllib.request.Request(f"{PYPI}/{project}/", headers={"Accept": accept})
            with urllib.request.urlopen(req, timeout=60) as r:
                self.pages[(project, accept)] = (r.read(), r.headers.get("Content-Type", JSON_SIMPLE))
        return self.pages[(project, accept)]

    def vllm_page(self) -> bytes:
        page = json.loads(self._pypi("vllm", JSON_SIMPLE)[0])
        files = []
        for f in page["files"]:
            version = next((v for v in self.versions if f["filename"].startswith(f"vllm-{v}") and
                            f["filename"][len(f"vllm-{v}")] in ".-"), None)
            if version is None:
                continue
            local = self.sdists / f["filename"]
            if f["filename"].endswith(".tar.gz") and local.is_file():
                copy = self.root / "files" / f["filename"]
                if not copy.is_file():
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(local, copy)
                digest = hashlib.sha256(copy.read_bytes()).hexdigest()
                assert digest == f["hashes"]["sha256"], f"{local} is not PyPI's {f['filename']}"
                f = {**f, "url": f"/files/{f['filename']}"}
            files.append(f)
        return json.dumps({"meta": {"api-version": "1.1"}, "name": "vllm", "files": files,
                           "versions": list(self.versions)}).encode()

    @contextmanager
    def serve(self):
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                index.requests.append(self.path)
                if self.path.startswith("/files/"):
                    data, kind = (index.root / self.path.lstrip("/")).read_bytes(), "application/octet-stream"
                else:
                    project = self.path.strip("/").split("/")[-1]
                    accept = self.headers.get("Accept", JSON_SIMPLE)
                    data, kind = (index.vllm_page(), JSON_SIMPLE) if project == "vllm" else \
                        index._pypi(project, accept)
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/simple"
        finally:
            server.shutdown()
