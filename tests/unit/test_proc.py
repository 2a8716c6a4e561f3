"""The subprocess adapter: list args, echo with secrets redacted, typed errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gracectl.adapters import proc
from gracectl.errors import CommandFailedError, ToolMissingError


def test_echoes_the_command_with_secrets_redacted(capsys):
    r = proc.run(["sh", "-c", "cat; echo done", "hunter2-arg"], input="s3cret-token\n", secrets=["hunter2"])
    assert r.stdout == "s3cret-token\ndone\n"
    err = capsys.readouterr().err
    assert err.startswith("+ ") and "sh -c" in err
    assert "hunter2" not in err and "***-arg" in err


def test_missing_tool_names_what_to_install():
    with pytest.raises(ToolMissingError) as exc:
        proc.run(["skopeo-that-does-not-exist", "inspect"])
    assert "skopeo-that-does-not-exist" in str(exc.value)
    with pytest.raises(ToolMissingError, match="apt-get install skopeo"):
        proc.which("/nonexistent/skopeo")


def test_failure_is_one_line_with_the_last_error_line_and_no_secret():
    with pytest.raises(CommandFailedError) as exc:
        proc.run(["sh", "-c", "echo noise >&2; echo 'login failed for pw=topsecret' >&2; exit 7"],
                 secrets=["topsecret"], echo=False)
    msg = str(exc.value)
    assert exc.value.returncode == 7 and exc.value.exit_code == 4
    assert msg == "sh exited 7: login failed for pw=***"
    assert "topsecret" not in exc.value.output


def test_streaming_gives_each_line_as_it_comes():
    seen = []
    r = proc.run(["sh", "-c", "echo a; echo b >&2; echo c"], on_line=seen.append, echo=False)
    assert seen == ["a", "b", "c"] and r.returncode == 0


def test_check_false_returns_the_failure():
    r = proc.run(["sh", "-c", "exit 3"], check=False, echo=False)
    assert r.returncode == 3


def test_timeout_is_a_command_failure():
    with pytest.raises(CommandFailedError, match="did not finish within 1s"):
        proc.run(["sleep", "5"], timeout=1, echo=False)


def test_a_child_has_its_own_process_group_and_dies_when_gracectl_is_sigkilled():
    """A parent (standing in for gracectl) runs `sleep` through proc.run and is SIGKILLed: the kernel kills the
    child too (its parent-death signal), so nothing it was doing goes on unseen."""
    parent = subprocess.Popen([sys.executable, "-c", "from gracectl.adapters import proc; proc.run(['sleep', '60'])"],
                              stderr=subprocess.DEVNULL)
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")

    def started() -> bool:  # listed from the fork on; its process group and parent-death signal are set by exec
        kids = children.read_text().split()
        return bool(kids) and Path(f"/proc/{kids[0]}/comm").read_text().strip() == "sleep"

    deadline = time.monotonic() + 20
    while not started():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.02)
    child = int(children.read_text().split()[0])
    assert os.getpgid(child) == child != os.getpgid(parent.pid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break  # gone
        if state == "Z":  # dead, waiting for its new parent to collect it
            break
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.02)
