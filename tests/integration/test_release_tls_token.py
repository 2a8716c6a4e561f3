"""Release operations against a registry as sites run them: the REAL docker-registry serving https with a
certificate of a site CA made here (trustme), `auth: token` with the token issuer of token_issuer.py
(per-repository grants), and credentials that come from a REAL credential helper program (written here,
speaking docker's helper protocol) named by the docker config's credHelpers. gracectl trusts the site CA
only because it is where docker looks for it (certs.d/HOST:PORT/ca.crt; GRACECTL_CERTS_D points the
lookup at a folder of this test instead of /etc).

Publish, promote (smoke and bench gates), rollback and history pass; and the faults: registry killed
mid-operation, two promotions at once, wrong credentials, a pull-only user, a token expiring mid-run,
an unknown CA, a certificate for another name, an expired certificate.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import trustme

from gracectl import release_ops
from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_auth import credentials_for
from gracectl.errors import ConflictError, PromotionRefusedError, RegistryError
from gracectl.image_ref import ImageRef
from gracectl.records import get_records
from gracectl.registry_server import RegistryServer
from test_release_ops_integration import RACE, TAG, bench, gracectl, killed_during, smoke
from token_issuer import TokenIssuer

pytestmark = pytest.mark.integration

HELPER = "gracectl-test"
WRITER, READER = "robot$writer", "reader"

HELPER_PROGRAM = """#!{python}
# docker-credential-{name}: docker's credential helper protocol (get / store / erase / list), over a JSON file.
import json, sys
STORE = {store!r}
action = sys.argv[1]
entries = json.load(open(STORE))
if action == "get":
    server = sys.stdin.read().strip()
    with open(STORE + ".calls", "a") as log:
        log.write(server + "\\n")
    if server not in entries:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({{"ServerURL": server, "Username": entries[server][0], "Secret": entries[server][1]}}))
elif action == "list":
    print(json.dumps({{k: v[0] for k, v in entries.items()}}))
else:
    sys.exit("unsupported: " + action)
"""


class Site:
    """A TLS + token registry, its issuer, the site CA, and the client side (certs.d, helper, config)."""

    def __init__(self, root: Path):
        self.root = root
        self.ca = trustme.CA()
        self.issuer = TokenIssuer(self.ca, root).start()
        self.passwords = {WRITER: "w-" + uuid.uuid4().hex, READER: "r-" + uuid.uuid4().hex}
        self.issuer.grant(WRITER, self.passwords[WRITER], {"": "pull,push,delete"})
        self.issuer.grant(READER, self.passwords[READER], {"": "pull"})
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_and_cert_chain_pem.write_to_path(str(root / "registry.pem"))
        cert.private_key_pem.write_to_path(str(root / "registry.key"))
        self.server = RegistryServer(root / "registry", tls=(root / "registry.pem", root / "registry.key"),
                                     token=self.issuer.registry_config()).start()
        self.address = self.server.address
        self.certs_d = root / "certs.d"
        self.trust(self.address)
        self.bin = root / "bin"
        self.bin.mkdir()
        self.store = root / "helper-store.json"
        self.use(WRITER)
        program = self.bin / f"docker-credential-{HELPER}"
        program.write_text(HELPER_PROGRAM.format(python=sys.executable, name=HELPER, store=str(self.store)))
        program.chmod(program.stat().st_mode | stat.S_IXUSR)

    def trust(self, host: str, ca: trustme.CA | None = None) -> None:
        """Put the CA where docker looks for it: certs.d/HOST:PORT/ca.crt."""
        (self.certs_d / host).mkdir(parents=True, exist_ok=True)
        (ca or self.ca).cert_pem.write_to_path(str(self.certs_d / host / "ca.crt"))

    def use(self, user: str, password: str | None = None) -> None:
        """What the credential helper holds for the registry."""
        self.store.write_text(json.dumps({self.address: [user, password or self.passwords[user]]}))

    def helper_calls(self) -> int:
        path = Path(f"{self.store}.calls")
        return len(path.read_text().splitlines()) if path.exists() else 0

    def close(self) -> None:
        self.server.stop()
        self.issuer.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = Site(tmp_path_factory.mktemp("tls-token-site"))
    yield site
    site.close()


@pytest.fixture(autouse=True)
def site_client(site, tmp_path, monkeypatch):
    """This test's client side: the site CA in certs.d, the helper on PATH and in the docker config."""
    site.use(WRITER)
    site.issuer.registry_lifetime, site.issuer.claimed_expires_in, site.issuer.anonymous = 300, None, {}
    config = tmp_path / "docker-config"
    config.mkdir(exist_ok=True)
    (config / "config.json").write_text(json.dumps({"credHelpers": {site.address: HELPER}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("GRACECTL_CERTS_D", str(site.certs_d))
    monkeypatch.setenv("PATH", f"{site.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GRACECTL_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("GRACECTL_LOCK_SETTLE_S", "0.3")
    for name in ("GRACECTL_REGISTRY", "GRACECTL_CERT_DIR", "GRACECTL_REGISTRY_CA", "GRACECTL_INSECURE_REGISTRY"):
        monkeypatch.delenv(name, raising=False)
    if not site.server.running():  # a fault test killed it
        site.server.start()


@pytest.fixture
def repo(site):
    return f"{site.address}/site/{uuid.uuid4().hex[:8]}"


def registry_of(site) -> Registry:
    return Registry(site.address, credentials_for(site.address))


def tag_digest(repo: str, tag: str = TAG) -> str | None:
    ref = ImageRef.parse(repo)
    found = Registry(ref.registry, credentials_for(ref.registry)).head_manifest(ref.repository, tag)
    return found.digest if found else None


def publish(oci_image, repo: str, content: str, *records: dict) -> str:
    return release_ops.publish(oci_image(content), f"{repo}:b-{uuid.uuid4().hex[:6]}", attach=list(records)).digest


# -- the site as it should work -----------------------------------------------------------------------------
def test_publish_promote_rollback_history_over_tls_and_tokens(site, repo, oci_image):
    calls = site.helper_calls()
    a = publish(oci_image, repo, "site-a", smoke(), bench("NVIDIA GH200 480GB", 10.0))
    b = publish(oci_image, repo, "site-b", smoke(), bench("NVIDIA GH200 480GB", 10.2))
    slow = publish(oci_image, repo, "site-slow", smoke(), bench("NVIDIA GH200 480GB", 20.0))
    untested = publish(oci_image, repo, "site-untested")
    assert site.helper_calls() > calls  # the credentials came from the helper
    assert get_records(ImageRef.parse(repo), a, "smoke")[0]["passed"] is True

    # The CLI, as an operator runs it: no credentials or TLS flags, both found where docker finds them.
    first = gracectl("promote", f"{repo}@{a}", "--to", TAG)
    assert first.returncode == 0, first.stderr
    assert gracectl("promote", f"{repo}@{b}", "--to", TAG).returncode == 0
    assert tag_digest(repo) == b
    # The gates hold over TLS + tokens too.
    refused = gracectl("promote", f"{repo}@{slow}", "--to", TAG)
    assert refused.returncode == PromotionRefusedError.exit_code and "slower" in refused.stderr
    assert gracectl("promote", f"{repo}@{untested}", "--to", TAG).returncode == PromotionRefusedError.exit_code
    assert tag_digest(repo) == b

    back = gracectl("rollback", f"{repo}:{TAG}", "--reason", "incident")
    assert back.returncode == 0, back.stderr
    assert tag_digest(repo) == a
    history = gracectl("history", f"{repo}:{TAG}", "--json")
    assert history.returncode == 0, history.stderr
    assert [(e["action"], e["to"], e["status"]) for e in json.loads(history.stdout)] == [
        ("promote", a, "done"), ("promote", b, "done"), ("rollback", a, "done")]
    # Tokens were asked per repository scope, with the writer's credentials, and only of the realm.
    scopes = {s for user, asked, _ in site.issuer.requests if user == WRITER for s in asked}
    path = ImageRef.parse(repo).repository
    assert {f"repository:{path}:pull", f"repository:{path}:pull,push"} <= scopes
    for output in (first, back, history):
        assert site.passwords[WRITER] not in output.stdout + output.stderr
