"""The test bed's process handling with real processes: a component that dies at start is a one-line error."""

from __future__ import annotations

import pytest

from gracectl.errors import TestbedError
from gracectl.testbed.processes import pid_alive, spawn, stop_pid, wait_until


def test_a_daemon_that_dies_at_start_is_named_with_its_log_tail(tmp_path):
    log = tmp_path / "fake.log"
    pid = spawn(["sh", "-c", "echo 'failed to listen: address already in use' >&2; exit 1"], log)
    with pytest.raises(TestbedError) as exc:
        wait_until(lambda: False, "dockerd", 30, log, pid, "sh")
    msg = str(exc.value)
    assert msg.startswith("dockerd exited while starting") and "address already in use" in msg
    assert "\n" not in msg


def test_a_daemon_that_never_answers_times_out(tmp_path):
    log = tmp_path / "slow.log"
    pid = spawn(["sleep", "30"], log)
    try:
        with pytest.raises(TestbedError, match="registry did not come up within 1s"):
            wait_until(lambda: False, "registry", 1, log, pid, "sleep")
        assert pid_alive(pid, "sleep") and not pid_alive(pid, "dockerd")  # a pid is ours only by its program
    finally:
        assert stop_pid(pid, "sleep")
    assert not pid_alive(pid, "sleep")
