"""Every command's --help renders (rich markup in a help text once crashed `plan --help` and `build --help`)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from gracectl.cli import app

GROUP = typer.main.get_command(app)


def command_paths(group, prefix=()):
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield (*prefix, name)
        if hasattr(cmd, "list_commands"):  # a group
            yield from command_paths(cmd, (*prefix, name))


PATHS = list(command_paths(GROUP))


def test_the_cli_has_the_commands_the_docs_name():
    names = {" ".join(p) for p in PATHS}
    for expected in ("releases", "plan", "lint", "build", "report", "testbed up", "testbed status", "testbed down",
                     "rehearse", "smoke", "bench", "publish", "promote", "rollback", "history", "records",
                     "ci stages", "ci plan", "ci cleanup"):
        assert expected in names, f"`gracectl {expected}` is missing"


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_help_renders(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output or repr(result.exception)
    assert "Usage" in result.output


@pytest.mark.parametrize("argv, words", [(["plan"], "Missing argument"), (["plan", "--nope", "x"], "No such option")])
def test_usage_errors_are_one_line_exit_2(argv, words):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "gracectl", *argv], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and words in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_help_keeps_every_bracketed_word(path):
    """Rich markup takes `[provenance]` in a help text for a style tag and prints nothing (it once turned
    `release new --help` into "kept in )"): every [word] a help text names is on the screen."""
    import re

    cmd = GROUP
    for name in path:
        cmd = cmd.get_command(typer.Context(cmd), name)
    words = {w for p in cmd.params for w in re.findall(r"\[[A-Za-z_.]+\]", (getattr(p, "help", "") or "")
                                                      .replace("\\[", "["))}
    shown = CliRunner().invoke(app, [*path, "--help"], terminal_width=300).output
    assert not [w for w in words if w not in shown], shown
