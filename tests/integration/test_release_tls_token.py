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

from gracectl import settings
from gracectl.tags import moves, trust
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.registry import Registry
from gracectl.errors import ConflictError, PromotionRefusedError, RegistryError
from gracectl.image_ref import ImageRef
from gracectl.tags.records import get_records
from gracectl.testbed.registry_server import RegistryServer
from test_release_ops_integration import RACE, TAG, bench, gracectl, killed_during, smoke
from test_signing import COSIGN_AIRGAP, cosign, go_tool, policy_copy
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


def env_access() -> RegistryAccess:
    """What the CLI would build from this test's environment (the edge: gracectl.settings)."""
    return settings.registry_access(os.environ)


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
    return Registry(site.address, env_access())


def tag_digest(repo: str, tag: str = TAG) -> str | None:
    ref = ImageRef.parse(repo)
    found = Registry(ref.registry, env_access()).head_manifest(ref.repository, tag)
    return found.digest if found else None


def publish(oci_image, repo: str, content: str, *records: dict) -> str:
    return moves.publish(oci_image(content), f"{repo}:b-{uuid.uuid4().hex[:6]}", attach=list(records),
                               access=env_access()).digest


# -- the site as it should work -----------------------------------------------------------------------------
def test_publish_promote_rollback_history_over_tls_and_tokens(site, repo, oci_image):
    calls = site.helper_calls()
    a = publish(oci_image, repo, "site-a", smoke(), bench("NVIDIA GH200 480GB", 10.0))
    b = publish(oci_image, repo, "site-b", smoke(), bench("NVIDIA GH200 480GB", 10.2))
    slow = publish(oci_image, repo, "site-slow", smoke(), bench("NVIDIA GH200 480GB", 20.0))
    untested = publish(oci_image, repo, "site-untested")
    assert site.helper_calls() > calls  # the credentials came from the helper
    assert get_records(ImageRef.parse(repo), a, "smoke", registry=registry_of(site))[0]["passed"] is True

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


def test_cert_dir_option_and_site_ca_variable_reach_the_client_and_skopeo(site, repo, oci_image, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("GRACECTL_CERTS_D", str(tmp_path / "nothing-here"))  # docker's default place is empty
    cert_dir = tmp_path / "cert-dir"
    cert_dir.mkdir()
    site.ca.cert_pem.write_to_path(str(cert_dir / "site.crt"))
    image = oci_image("cert-dir")
    published = gracectl("publish", image, "--to", f"{repo}:b1", "--cert-dir", str(cert_dir), "--json")
    assert published.returncode == 0, published.stderr
    assert "--dest-cert-dir" in published.stderr  # skopeo verified against the same CA
    # GRACECTL_REGISTRY_CA: one more CA file for every registry (here beside an empty cert folder).
    empty = tmp_path / "empty-cert-dir"
    empty.mkdir()
    site.ca.cert_pem.write_to_path(str(tmp_path / "site-ca.pem"))
    env = {"GRACECTL_CERT_DIR": str(empty), "GRACECTL_REGISTRY_CA": str(tmp_path / "site-ca.pem")}
    again = gracectl("publish", image, "--to", f"{repo}:b2", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["digest"] == json.loads(published.stdout)["digest"]


def test_a_dockerd_image_goes_through_skopeo_when_dockerd_cannot_see_the_ca(site, repo, local_image):
    # The site CA sits where gracectl looks (GRACECTL_CERTS_D) but not in /etc/docker/certs.d: dockerd would
    # refuse the registry's certificate, so the push goes through skopeo, given the same CA, and says why.
    published = gracectl("publish", local_image, "--to", f"{repo}:b1", "--json")
    assert published.returncode == 0, published.stderr
    assert "pushing through skopeo" in published.stderr and "GRACECTL_CERTS_D" in published.stderr
    assert "+ dockerd push" not in published.stderr and "skopeo copy" in published.stderr
    assert json.loads(published.stdout)["digest"] == tag_digest(repo, "b1")


# -- TLS failures: one line, the host, what failed, where the CA goes ------------------------------------------
def test_unknown_ca_is_one_line_naming_the_host_and_where_the_ca_goes(site, repo, oci_image, tmp_path,
                                                                      monkeypatch):
    other = trustme.CA()
    elsewhere = tmp_path / "certs.d"
    (elsewhere / site.address).mkdir(parents=True)
    other.cert_pem.write_to_path(str(elsewhere / site.address / "ca.crt"))  # the wrong CA
    monkeypatch.setenv("GRACECTL_CERTS_D", str(elsewhere))
    for args in (("history", f"{repo}:{TAG}"), ("publish", oci_image("x"), "--to", f"{repo}:b1")):
        result = gracectl(*args)
        assert result.returncode == RegistryError.exit_code
        [line] = result.stderr.strip().splitlines()[-1:]
        assert line == (f"error: TLS to registry {site.address} failed: its certificate is signed by an unknown "
                        f"CA: put the site CA in /etc/docker/certs.d/{site.address}/ca.crt (or pass --cert-dir "
                        f"DIR, or set GRACECTL_REGISTRY_CA=FILE); --insecure-registry {site.address} only for a "
                        "registry without a valid certificate")
    # Only by name, never implied: --insecure-registry HOST reaches it without verification.
    insecure = gracectl("history", f"{repo}:{TAG}", "--insecure-registry", site.address)
    assert insecure.returncode == 0, insecure.stderr


@pytest.mark.parametrize("fault", ["name mismatch", "expired"])
def test_bad_certificate_of_a_trusted_ca(site, tmp_path, fault):
    """A real TLS server (Python's ssl) with a certificate of the trusted site CA that is wrong."""
    import socket
    import ssl
    import threading

    if fault == "name mismatch":
        cert = site.ca.issue_cert("registry.other.example")
        expected = "its certificate does not name this host (name mismatch): use the name the certificate"
    else:
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)
        cert = site.ca.issue_cert("127.0.0.1", not_before=past - datetime.timedelta(days=30), not_after=past)
        expected = "its certificate has expired: the registry's certificate must be renewed"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    site.trust(host)

    def serve():
        with listener:
            connection, _ = listener.accept()
            try:
                context.wrap_socket(connection, server_side=True).close()
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    result = gracectl("history", f"{host}/x:{TAG}")
    assert result.returncode == RegistryError.exit_code
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: TLS to registry {host} failed: {expected}"), line


# -- token auth faults -----------------------------------------------------------------------------------------
def test_wrong_credentials_are_refused_by_the_token_server_and_never_printed(site, repo, oci_image):
    a = publish(oci_image, repo, "wrong-a", smoke())
    moves.promote(f"{repo}@{a}", TAG, access=env_access())
    b = publish(oci_image, repo, "wrong-b", smoke())
    wrong = "wrong-" + uuid.uuid4().hex
    site.use(WRITER, wrong)
    result = gracectl("promote", f"{repo}@{b}", "--to", TAG)
    assert result.returncode == RegistryError.exit_code
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: the token server of registry {site.address} refused the credentials of user '{WRITER}': "
        f"log in with `docker login {site.address}` or pass --username USER --password-stdin")
    assert wrong not in result.stderr + result.stdout
    # The same with --password-stdin (which wins over the helper).
    stdin = gracectl("history", f"{repo}:{TAG}", "--username", WRITER, "--password-stdin", input=wrong)
    assert stdin.returncode == RegistryError.exit_code and wrong not in stdin.stderr + stdin.stdout
    site.use(WRITER)
    assert tag_digest(repo) == a


def test_pull_only_user_reads_but_gets_a_clean_refusal_and_no_tag_moves(site, repo, oci_image):
    a = publish(oci_image, repo, "ro-a", smoke())
    b = publish(oci_image, repo, "ro-b", smoke())
    moves.promote(f"{repo}@{a}", TAG, access=env_access())
    site.use(READER)
    assert gracectl("history", f"{repo}:{TAG}").returncode == 0
    for args in (("promote", f"{repo}@{b}", "--to", TAG), ("rollback", f"{repo}:{TAG}", "--to", b)):
        result = gracectl(*args)
        assert result.returncode == RegistryError.exit_code, result.stderr
        line = result.stderr.strip().splitlines()[-1]
        path = ImageRef.parse(repo).repository
        assert f"refused" in line and f"repository:{path}:pull,push for user '{READER}'" in line, line
        assert "Traceback" not in result.stderr
    site.use(WRITER)
    assert tag_digest(repo) == a
    assert [(e.action, e.to) for e in moves.history(f"{repo}:{TAG}", access=env_access())] == [("promote", a)]
    # The reader's tokens held pull only: the issuer granted a subset of what was asked.
    for user, asked, access in site.issuer.requests:
        if user == READER:
            assert all(entry["actions"] == ["pull"] for entry in access)


def test_anonymous_token_for_public_pulls(site, repo, oci_image, tmp_path, monkeypatch):
    a = publish(oci_image, repo, "anon-a", smoke())
    moves.promote(f"{repo}@{a}", TAG, access=env_access())
    (tmp_path / "empty-config").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty-config"))  # no credentials at all
    site.issuer.anonymous = {"site/": "pull"}
    shown = gracectl("history", f"{repo}:{TAG}", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["to"] == a
    assert any(user is None and access for user, _, access in site.issuer.requests)
    refused = gracectl("rollback", f"{repo}:{TAG}", "--to", a, "--force", "--reason", "x")
    assert refused.returncode == RegistryError.exit_code
    assert "for anonymous access" in refused.stderr or "allows no anonymous access" in refused.stderr


def test_token_expiring_mid_run_is_fetched_again(site, repo, oci_image):
    """The issuer says a token lasts 300 s but the registry stops taking it after 2 s; the promotion waits
    3 s (lock settle) between reads and writes: its tokens die mid-run and must be fetched again."""
    a = publish(oci_image, repo, "exp-a", smoke())
    b = publish(oci_image, repo, "exp-b", smoke())
    moves.promote(f"{repo}@{a}", TAG, access=env_access())
    site.issuer.registry_lifetime, site.issuer.claimed_expires_in = 2, 300
    before = len(site.issuer.requests)
    result = gracectl("promote", f"{repo}@{b}", "--to", TAG, env={"GRACECTL_LOCK_SETTLE_S": "3"})
    assert result.returncode == 0, result.stderr
    site.issuer.registry_lifetime = 300
    assert tag_digest(repo) == b
    asked = [tuple(scopes) for user, scopes, _ in site.issuer.requests[before:]]
    assert len(asked) > len(set(asked)), asked  # the same scope asked again: a refresh
    assert [(e.to, e.status) for e in moves.history(f"{repo}:{TAG}", access=env_access())] == [(a, "done"), (b, "done")]


# -- the same faults as on the plain registry --------------------------------------------------------------------
def test_registry_killed_mid_promotion_leaves_nothing_half_moved(site, repo, oci_image):
    a = publish(oci_image, repo, "kill-a", smoke())
    b = publish(oci_image, repo, "kill-b", smoke())
    moves.promote(f"{repo}@{a}", TAG, access=env_access())
    with killed_during(site.server, Registry, "tag_digest", lambda args: args[3] == TAG):
        with pytest.raises(RegistryError, match="not reachable"):
            moves.promote(f"{repo}@{b}", TAG, access=env_access())
    site.server.start()
    assert tag_digest(repo) == a
    assert [(e.to, e.status) for e in moves.history(f"{repo}:{TAG}", access=env_access())] == [(a, "done"), (b, "failed")]
    assert moves.promote(f"{repo}@{b}", TAG, access=env_access()).status == "done"
    assert moves.rollback(f"{repo}:{TAG}", access=env_access()).to == a


def test_two_promotions_at_once_exactly_one_wins(site, repo, oci_image, tmp_path):
    a = publish(oci_image, repo, "race-a", smoke())
    b = publish(oci_image, repo, "race-b", smoke())
    go = tmp_path / "go"
    procs = []
    for i, digest in enumerate((a, b)):  # two hosts: separate lock dirs, the registry lock decides
        env = {**os.environ, "GRACECTL_LOCK_SETTLE_S": "1.0", "GRACECTL_LOCK_DIR": str(tmp_path / f"host-{i}")}
        procs.append(subprocess.Popen([sys.executable, "-c", RACE, f"{repo}@{digest}", TAG, str(go)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    time.sleep(1.5)
    go.touch()
    results = [(p.wait(timeout=90), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, ConflictError.exit_code], results
    winner = (a, b)[[rc for rc, _ in results].index(0)]
    assert tag_digest(repo) == winner
    assert [(e.to, e.status) for e in moves.history(f"{repo}:{TAG}", access=env_access())] == [(winner, "done")]


def test_basic_credentials_go_only_to_the_realm_and_tokens_only_to_the_registry(site, repo, oci_image,
                                                                                monkeypatch):
    """Every request gracectl sends, observed on its way out (the real requests still go)."""
    sent = []
    original = Registry._send

    def observed(self, method, url, data, headers):
        sent.append((url.split("/")[2], headers.get("Authorization", "").split(" ")[0]))
        return original(self, method, url, data, headers)

    monkeypatch.setattr(Registry, "_send", observed)
    a = publish(oci_image, repo, "seen-a", smoke())
    moves.promote(f"{repo}@{a}", TAG, access=env_access())
    realm_host = site.issuer.realm.split("/")[2]
    assert {scheme for host, scheme in sent if host == realm_host} == {"Basic"}
    assert {scheme for host, scheme in sent if host == site.address} == {"", "Bearer"}
    assert {host for host, _ in sent} == {realm_host, site.address}


def test_tokens_are_reused_until_their_expires_in_then_fetched_anew(site, repo, oci_image):
    a = publish(oci_image, repo, "reuse-a", smoke())
    path = ImageRef.parse(repo).repository
    for expires_in, expected in ((300, 1), (6, 2)):  # 6 s less the 5 s margin: 1 s of use
        site.issuer.claimed_expires_in = expires_in
        registry = registry_of(site)
        before = len(site.issuer.requests)
        assert registry.head_manifest(path, a).digest == a
        time.sleep(1.5)
        assert registry.head_manifest(path, a).digest == a
        asked = [scopes for _, scopes, _ in site.issuer.requests[before:]]
        assert asked == [[f"repository:{path}:pull"]] * expected


def test_an_insecure_registry_named_so_may_speak_plain_http(registry, monkeypatch):
    """--insecure-registry: https without verification, and plain http when that is all it speaks."""
    monkeypatch.setenv("GRACECTL_INSECURE_REGISTRY", registry)
    plain = Registry(registry, env_access())
    assert plain.scheme == "https" and not plain.tls.verify
    plain.ping()
    assert plain.scheme == "http"


def test_signed_promotion_over_tls_and_tokens(site, repo, oci_image, tmp_path):
    """The site key over TLS + token auth: the signature and the signed provenance are written with the helper's
    credentials and read back through tokens; an unsigned image is refused, nothing moved."""
    from gracectl.tags import provenance
    from gracectl.adapters import signing

    key_path, pub = signing.generate_key(tmp_path / "keys", b"tls pass")
    (tmp_path / "passphrase").write_bytes(b"tls pass")
    key = signing.SigningKey(key_path, tmp_path / "passphrase")
    a = publish(oci_image, repo, "signed-tls", smoke())
    b = publish(oci_image, repo, "unsigned-tls", smoke())
    ref = ImageRef.parse(repo)
    stmt = provenance.statement(f"{ref.registry}/{ref.repository}", a, {"release": "v0.19.0-tfa"},
                                {"resolved": {"images": {}, "git": []}},
                                builder="urn:gracectl:builder:test", invocation="tls", records={})
    trust.attest(ref, a, stmt, key, env_access())
    trust_key_env = {"GRACECTL_TRUST_KEY": str(pub)}
    verified = gracectl("verify", f"{repo}@{a}", env=trust_key_env)
    assert verified.returncode == 0 and "signature:  VALID" in verified.stdout and "provenance: VALID" in \
        verified.stdout, verified.stderr
    assert gracectl("promote", f"{repo}@{a}", "--to", TAG, env=trust_key_env).returncode == 0
    refused = gracectl("promote", f"{repo}@{b}", "--to", TAG, env=trust_key_env)
    assert refused.returncode == PromotionRefusedError.exit_code and "has no signature" in refused.stderr
    assert tag_digest(repo) == a
    # cosign's and containers' own checks through the site CA and the token flow (the helper's credentials), as a
    # site's admission runs them (test_signing.py has the plain registry and every refused case)
    tls = ("--src-cert-dir", str(site.certs_d / site.address))
    ca = ("--registry-cacert", str(site.certs_d / site.address / "ca.crt"))
    for digest, admitted in ((a, True), (b, False)):
        checked = policy_copy(go_tool("skopeo", "SKOPEO_WITH_SIGSTORE"), repo, digest, pub, tmp_path / digest[7:19],
                              source_tls=tls)
        assert (checked.returncode == 0) is admitted, checked.stderr
        for command in (("verify",), ("verify-attestation", "--type", "slsaprovenance1")):
            checked = cosign(go_tool("cosign", "COSIGN"), tmp_path, *command, "--key", str(pub), *COSIGN_AIRGAP, *ca,
                             f"{repo}@{digest}")
            assert (checked.returncode == 0) is admitted, checked.stderr
