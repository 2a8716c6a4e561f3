"""`gracectl publish` of a dockerd image goes through dockerd's own push (real dockerd, real docker-registry):
it skips every layer the registry already has, mounts layers across repositories, keeps the credentials out of
argv and output, and names a read-only registry. (A CA that dockerd cannot see sends the push through skopeo:
test_release_tls_token.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid

import pytest

from gracectl.errors import RegistryError
from gracectl.testbed.registry_server import RegistryServer
from fault_proxy import FaultProxy
from test_release_faults import ReadOnlyRegistry, wait_for
from test_release_ops_integration import gracectl, isolated_env, tag_digest  # noqa: F401

pytestmark = pytest.mark.integration

DOCKER = "/usr/bin/docker"


def layer_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.startswith("  ") and ": " in line]


def test_dockerd_push_skips_layers_the_registry_has(registry, local_image):
    repo, other = (f"{registry}/gracectl-test/{uuid.uuid4().hex[:8]}" for _ in range(2))
    first = gracectl("publish", local_image, "--to", f"{repo}:b1", "--json")
    assert first.returncode == 0, first.stderr
    assert "+ dockerd push" in first.stderr and "skopeo" not in first.stderr
    published = json.loads(first.stdout)
    image_id = subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Id}}", local_image], check=True,
                              capture_output=True, text=True).stdout.strip()
    assert published["image_id"] == image_id and published["digest"] == tag_digest(repo, "b1")
    assert [line.split(": ", 1)[1] for line in layer_lines(first.stderr)] == ["Pushed", "Pushed"]

    again = gracectl("publish", local_image, "--to", f"{repo}:b2", "--json")  # same image, new build tag
    assert again.returncode == 0, again.stderr
    assert [line.split(": ", 1)[1] for line in layer_lines(again.stderr)] == ["Layer already exists"] * 2
    assert json.loads(again.stdout)["digest"] == published["digest"] == tag_digest(repo, "b2")

    elsewhere = gracectl("publish", local_image, "--to", f"{other}:b1", "--json")  # another repository
    assert elsewhere.returncode == 0, elsewhere.stderr
    statuses = [line.split(": ", 1)[1] for line in layer_lines(elsewhere.stderr)]
    assert statuses and all(s.startswith("Mounted from") for s in statuses), statuses
    # dockerd was given a second local name only for the push: it is gone again
    names = subprocess.run([DOCKER, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], check=True,
                           capture_output=True, text=True).stdout.split()
    assert f"{other}:b1" not in names


def test_dockerd_push_keeps_the_password_out_of_argv_and_output(auth_registry, local_image):
    address, user, password = auth_registry
    repo = f"{address}/sec-{uuid.uuid4().hex[:6]}"
    ok = gracectl("publish", local_image, "--to", f"{repo}:b1", "--username", user, "--password-stdin",
                  input=password)
    assert ok.returncode == 0, ok.stderr
    assert "+ dockerd push" in ok.stderr and password not in ok.stdout + ok.stderr
    wrong = gracectl("publish", local_image, "--to", f"{repo}:b2", "--username", user, "--password-stdin",
                     input="not-" + password)
    assert wrong.returncode == RegistryError.exit_code
    assert "refused the credentials" in wrong.stderr.strip().splitlines()[-1]
    assert password not in wrong.stdout + wrong.stderr


def test_read_only_registry_refuses_a_dockerd_push_by_name(tmp_path, local_image):
    with RegistryServer(tmp_path / "reg").start() as server:
        port = server.port
    with ReadOnlyRegistry(tmp_path / "reg", port).start() as server:
        result = gracectl("publish", local_image, "--to", f"{server.address}/ro:b1")
        assert result.returncode == RegistryError.exit_code, result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith("error: ") and "read-only" in line, line



@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_dockerd_push_moves_no_tag(registry, local_image, sig):
    repo = f"killed-{uuid.uuid4().hex[:6]}"
    with FaultProxy(registry).start() as proxy:
        proxy.add("POST", r"/blobs/uploads/$", "stall")  # dockerd's first upload hangs there
        dest = f"{proxy.address}/{repo}:b1"
        p = subprocess.Popen([sys.executable, "-m", "gracectl", "publish", local_image, "--to", dest],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        wait_for(lambda: proxy.count("stall") >= 1)
        p.send_signal(sig)
        rc = p.wait(timeout=30)
    assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
    assert tag_digest(f"{registry}/{repo}", "b1") is None  # the manifest is the push's last write: never made
    names = subprocess.run([DOCKER, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], check=True,
                           capture_output=True, text=True).stdout.split()
    if sig == signal.SIGTERM:  # interrupted cleanly: the extra local name for the push is gone too
        assert dest not in names
    else:  # SIGKILL leaves only that local name in dockerd (nothing in the registry): remove it
        subprocess.run([DOCKER, "rmi", dest], capture_output=True)
