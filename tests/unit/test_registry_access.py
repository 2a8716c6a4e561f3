"""How gracectl reaches a registry: one RegistryAccess value (registry_access) and its TLS settings per host,
the token spec's challenge and scopes (registry_token), and credentials in docker's order (registry_auth),
with a real helper program."""

from __future__ import annotations

import os
import json
import ssl
import stat
import sys

import pytest

from gracectl import settings
from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.registry_auth import credentials_for
from gracectl.adapters.registry_tls import tls_error
from gracectl.adapters.registry_token import _covers, merge_scopes, needed_scope, parse_challenge
from gracectl.errors import RegistryError, UsageError
from gracectl.pipeline.stages import Params


@pytest.fixture()
def site(tmp_path):
    """A RegistryAccess with no site CA anywhere (its own empty certs.d) and its own docker config."""
    (tmp_path / "docker").mkdir()
    return RegistryAccess(certs_d=(tmp_path / "certs.d",), docker_config=tmp_path / "docker")


def test_https_everywhere_but_the_loopback_test_bed_and_never_insecure_unless_named(tmp_path, site):
    assert site.tls("127.0.0.1:5000").scheme == "http"
    assert Registry("localhost:5000", site).scheme == "http"
    plain = site.tls("registry.example.org")
    assert (plain.scheme, plain.verify) == ("https", True)
    assert plain.context().verify_mode == ssl.CERT_REQUIRED and plain.context().check_hostname
    # A loopback registry with a certificate folder is https (the TLS tests' registry).
    (tmp_path / "certs.d" / "127.0.0.1:5443").mkdir(parents=True)
    assert site.tls("127.0.0.1:5443").scheme == "https"
    env = {"GRACECTL_INSECURE_REGISTRY": "other.example:5000, registry.example.org",
           "GRACECTL_CERTS_D": str(tmp_path / "certs.d")}
    lax = settings.registry_access(env)
    insecure = lax.tls("registry.example.org")
    assert not insecure.verify and insecure.skopeo_flags("dest-") == ["--dest-tls-verify=false"]
    assert lax.tls("registry.example.org:443").verify  # the port is part of the name, as in docker
    # Two operations in one process, two settings: the value each was given, nothing global.
    assert site.tls("registry.example.org").verify and not lax.tls("registry.example.org").verify
    with pytest.raises(UsageError, match="is not a registry HOST"):
        settings.registry_access({"GRACECTL_INSECURE_REGISTRY": "not a host!"})
    with pytest.raises(UsageError, match="is not a registry HOST"):
        RegistryAccess(insecure_hosts={"http://x.example"})


@pytest.mark.parametrize("name, value", [("GRACECTL_REQUEST_TIMEOUT_S", "soon"), ("GRACECTL_DEADLINE_S", "-1"),
                                         ("GRACECTL_LOCK_TTL_S", "inf"), ("GRACECTL_LOCK_SETTLE_S", "1e9"),
                                         ("GRACECTL_LOCK_TTL_S", "nan")])
def test_timings_from_the_environment_are_numbers_in_bounds(name, value):
    with pytest.raises(UsageError, match=name):
        settings.registry_access({name: value})
    good = "60" if name == "GRACECTL_LOCK_TTL_S" else "2"
    assert settings.registry_access({name: good}) != settings.registry_access({})


def test_the_lock_outlives_three_request_timeouts():
    """The fencing margin is 1.5 request timeouts: a TTL shorter than 3 of them could expire under a write."""
    with pytest.raises(UsageError, match="GRACECTL_LOCK_TTL_S .* at least 3 x GRACECTL_REQUEST_TIMEOUT_S"):
        settings.registry_access({"GRACECTL_LOCK_TTL_S": "30"})
    assert settings.registry_access({"GRACECTL_LOCK_TTL_S": "6", "GRACECTL_REQUEST_TIMEOUT_S": "2"})


def test_settings_are_read_at_the_edge_only(tmp_path):
    """The environment reaches an operation only through gracectl.settings: a value built without it ignores it."""
    env = {"GRACECTL_LOCK_DIR": str(tmp_path / "locks"), "GRACECTL_ACTOR": "ci-bot", "BUILD_URL": "https://ci/1/",
           "GRACECTL_REQUEST_TIMEOUT_S": "7", "DOCKER_CONFIG": str(tmp_path / "d")}
    access = settings.registry_access(env)
    assert (access.lock_dir, access.who, access.request_timeout_s, access.docker_config) == (
        tmp_path / "locks", "ci-bot (https://ci/1/)", 7.0, tmp_path / "d")
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="GRACECTL_LOCK_DIR.*is a file"):
        settings.registry_access({"GRACECTL_LOCK_DIR": str(tmp_path / "file")})
    from gracectl import environment
    with pytest.raises(KeyError, match="GRACECTL_LOCK_TTL is not one of"):  # a typo is a bug, not a silent ""
        environment.get("GRACECTL_LOCK_TTL", {})


def test_ca_and_client_certificate_from_the_host_folder(tmp_path, site):
    folder = tmp_path / "certs.d" / "reg.example:5000"
    folder.mkdir(parents=True)
    (folder / "ca.crt").write_text("not a certificate")
    with pytest.raises(UsageError, match="ca.crt for registry reg.example:5000 is not a readable PEM"):
        site.tls("reg.example:5000").context()
    (folder / "client.cert").write_text("x")
    with pytest.raises(UsageError, match="has no client.key beside it"):
        site.tls("reg.example:5000")
    (folder / "client.key").write_text("x")
    tls = site.tls("reg.example:5000")
    assert tls.client_cert == (folder / "client.cert", folder / "client.key")
    with pytest.raises(UsageError, match="GRACECTL_REGISTRY_CA"):
        RegistryAccess(registry_ca=tmp_path / "missing.pem")
    with pytest.raises(UsageError, match="--cert-dir"):
        RegistryAccess(cert_dir=tmp_path / "missing")


def test_tls_errors_name_host_failure_and_remedy():
    def verify_error(code: int) -> ssl.SSLCertVerificationError:
        error = ssl.SSLCertVerificationError(1, "certificate verify failed")
        error.verify_code, error.verify_message = code, "x"
        return error

    unknown = str(tls_error("reg.example", verify_error(20)))
    assert unknown.startswith("TLS to registry reg.example failed: its certificate is signed by an unknown CA")
    assert "/etc/docker/certs.d/reg.example/ca.crt" in unknown and "GRACECTL_REGISTRY_CA" in unknown
    assert "name mismatch" in str(tls_error("reg.example", verify_error(62)))
    assert "has expired" in str(tls_error("reg.example", verify_error(10)))


def test_challenge_and_scopes_as_the_token_spec_writes_them():
    scheme, params = parse_challenge('Bearer realm="https://auth.example/token",service="harbor-registry",'
                                     'scope="repository:gh200/vllm:pull,push",error="insufficient_scope"')
    assert scheme == "bearer" and params == {"realm": "https://auth.example/token", "service": "harbor-registry",
                                             "scope": "repository:gh200/vllm:pull,push",
                                             "error": "insufficient_scope"}
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert needed_scope("GET", "/v2/gh200/vllm/manifests/v1") == "repository:gh200/vllm:pull"
    assert needed_scope("PUT", "/v2/gh200/vllm/manifests/v1") == "repository:gh200/vllm:pull,push"
    assert needed_scope("POST", "/v2/a/blobs/uploads/") == "repository:a:pull,push"
    assert needed_scope("DELETE", "/v2/a/manifests/sha256:x") == "repository:a:delete"
    assert needed_scope("GET", "/v2/") == ""
    assert _covers("repository:a:pull,push", "repository:a:pull")
    assert not _covers("repository:a:pull", "repository:a:pull,push")
    assert not _covers("repository:a:pull,push", "repository:b:pull")
    assert _covers("repository:b:pull repository:a:pull,push", "repository:a:push")


HELPER = """#!{python}
import json, sys
if sys.argv[1] != "get":
    sys.exit(2)
server = sys.stdin.read().strip()
if server != "reg.example:5000":
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({{"ServerURL": server, "Username": "robot$ci", "Secret": "s3cret-from-helper"}}))
"""


def test_credentials_in_dockers_order_with_a_real_helper(tmp_path, monkeypatch, site):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-unit"
    helper.write_text(HELPER.format(python=sys.executable))
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    config = tmp_path / "docker" / "config.json"
    import base64

    auths = {"reg.example:5000": {"auth": base64.b64encode(b"file-user:file-pw").decode()},
             "other.example": {"auth": base64.b64encode(b"o:p").decode()}}
    config.write_text(json.dumps({"auths": auths, "credHelpers": {"reg.example:5000": "unit"}}))
    found = site.credentials_for("reg.example:5000")
    assert (found.username, found.password) == ("robot$ci", "s3cret-from-helper")  # credHelpers first
    assert "s3cret" not in repr(found)
    assert site.credentials_for("other.example").username == "o"  # no helper for it: auths
    # credsStore for every registry; a miss falls back to auths.
    config.write_text(json.dumps({"auths": auths, "credsStore": "unit"}))
    assert site.credentials_for("reg.example:5000").username == "robot$ci"
    assert site.credentials_for("other.example").username == "o"
    # A helper that is not installed, or that fails, is one line naming it.
    config.write_text(json.dumps({"credHelpers": {"reg.example:5000": "missing"}}))
    with pytest.raises(Exception, match="docker-credential-missing"):
        site.credentials_for("reg.example:5000")
    helper.write_text("#!/bin/sh\necho boom >&2\nexit 3\n")
    config.write_text(json.dumps({"credHelpers": {"reg.example:5000": "unit"}}))
    with pytest.raises(RegistryError, match="credential helper docker-credential-unit failed for reg.example:5000"):
        site.credentials_for("reg.example:5000")
    # Explicit --username/--password-stdin win over everything.
    assert credentials_for("reg.example:5000", "me", "pw").username == "me"


def test_jenkins_insecure_registry_parameter_is_read_and_checked_in_one_place():
    """GRACECTL_INSECURE_REGISTRY (the job's parameter, as any variable) is read by gracectl.settings alone and
    checked by RegistryAccess alone, whether it came from there or from --insecure-registry."""
    env = {"GRACECTL_INSECURE_REGISTRY": "reg.example:5000", "RELEASE": "x"}
    assert settings.registry_access(env).insecure_hosts == {"reg.example:5000"}
    assert "insecure_registry" not in Params.__dataclass_fields__ and Params.from_env(env).release == "x"
    with pytest.raises(UsageError, match="GRACECTL_INSECURE_REGISTRY"):
        settings.registry_access({"GRACECTL_INSECURE_REGISTRY": "http://reg.example"})
    with pytest.raises(UsageError, match="--insecure-registry"):
        settings.registry_access({}, insecure=["http://reg.example"])


def test_dockerd_pushes_only_where_it_would_verify_the_registry_as_gracectl_does(tmp_path):
    from gracectl.adapters.registry_tls import dockerd_trust_gap as gap

    docker_d, containers_d = tmp_path / "docker-certs.d", tmp_path / "containers"
    (docker_d / "a.example").mkdir(parents=True)
    (containers_d / "b.example").mkdir(parents=True)
    default = RegistryAccess()
    assert gap(default.tls("127.0.0.1:5000")) == ""  # loopback http: dockerd's default insecure range too
    assert gap(default.tls("registry.example.org")) == ""  # the system store, for both
    moved = RegistryAccess(certs_d=(docker_d, containers_d))  # certs.d elsewhere: dockerd does not read it
    assert "GRACECTL_CERTS_D" in gap(moved.tls("a.example"))
    assert "insecure" in gap(RegistryAccess(insecure_hosts={"c.example"}).tls("c.example"))
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    assert "GRACECTL_REGISTRY_CA" in gap(RegistryAccess(registry_ca=ca).tls("a.example"))
    assert "--cert-dir" in gap(RegistryAccess(cert_dir=docker_d / "a.example").tls("a.example"))


@pytest.mark.parametrize("message, kind, words", [
    # what dockerd 20.10 says (captured from real pushes against docker-registry 2.8)
    ("error parsing HTTP 405 response body: invalid character 'M' looking for beginning of value: "
     "\"Method not allowed\\n\"", "ReadOnlyRegistryError", "read-only"),
    ("unauthorized: authentication required", "RegistryError", "refused dockerd's push credentials"),
    ("denied: requested access to the resource is denied", "RegistryError", "denied the push"),
    ("Get \"https://r.example:5000/v2/\": x509: certificate signed by unknown authority", "RegistryError",
     "TLS to registry r.example:5000 failed (dockerd): its certificate is signed by an unknown CA"),
    ("Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused", "RegistryError",
     "is not reachable from dockerd"),
    ("blob upload unknown: sha256:4054050405", "CommandFailedError", "dockerd's push to r.example:5000 failed"),
])
def test_dockerd_push_errors_become_one_typed_line(message, kind, words):
    from gracectl.adapters.docker import _push_error

    error = _push_error("r.example:5000", message)
    assert type(error).__name__ == kind and words in str(error) and "\n" not in str(error)


def test_scopes_of_one_resource_merge_whatever_order_the_registry_writes():
    # docker-registry's challenge says `push,pull` where gracectl says `pull,push`: one need, one scope
    assert merge_scopes("repository:a/b:push,pull", "repository:a/b:pull,push") == "repository:a/b:pull,push"
    assert merge_scopes("repository:a:pull", "repository:a:delete", "repository:c:pull") == \
        "repository:a:pull,delete repository:c:pull"
    assert merge_scopes("registry:catalog:*", "") == "registry:catalog:*"
    assert merge_scopes("", "") == ""
