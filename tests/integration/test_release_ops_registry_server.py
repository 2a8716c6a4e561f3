"""registry_server.RegistryServer: the real docker-registry started, refused, stopped, restarted."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl import errors
from gracectl.testbed.registry_server import RegistryServer

pytestmark = pytest.mark.integration


def status(address: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_port_in_use_is_one_clear_error(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(errors.TestbedError, match=f"port {port} on 127.0.0.1 is in use"):
            RegistryServer(tmp_path, port).start()
    assert not (tmp_path / "registry.pid").exists()


def test_a_registry_that_will_not_start_reports_its_log(tmp_path):
    class BrokenConfig(RegistryServer):
        def write_config(self):
            path = super().write_config()
            path.write_text("version: 0.1\nstorage: [not, a, mapping\n")
            return path

    expected = r"exited with \d+ at start: configuration error: error parsing .* \(log: .*registry.log\)"
    with pytest.raises(errors.TestbedError, match=expected):
        BrokenConfig(tmp_path).start()


def test_start_stop_restart_keeps_the_data_and_stop_works_from_another_process_view(tmp_path):
    server = RegistryServer(tmp_path).start()
    address = server.address
    assert status(address) == 200 and server.running()
    Registry(address, RegistryAccess()).push_artifact("keep", "t1", "application/vnd.gracectl.test.v1+json", b"{}")
    with pytest.raises(errors.TestbedError, match="already running"):
        RegistryServer(tmp_path, server.port).start()

    RegistryServer(tmp_path).stop()  # only the root: the pid file says which process
    assert not server.running()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{address}/v2/", timeout=1)

    with server.start():
        assert Registry(address, RegistryAccess()).tags("keep") == ["t1"]
    assert not server.running()


def test_htpasswd_registry_wants_the_password(tmp_path):
    with RegistryServer(tmp_path, user="ci", password="pw-123").start() as server:
        assert status(server.address) == 401
        htpasswd = (tmp_path / "htpasswd").read_text()
        assert htpasswd.startswith("ci:$2") and "pw-123" not in htpasswd
        assert (tmp_path / "htpasswd").stat().st_mode & 0o077 == 0
    with pytest.raises(errors.TestbedError, match="both a user and a password"):
        RegistryServer(tmp_path, user="ci")
