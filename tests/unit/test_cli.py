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


LEAVES = [p for p in PATHS if not hasattr(GROUP.get_command(typer.Context(GROUP), p[0]), "list_commands")
          or len(p) > 1]


def test_every_command_says_what_an_interrupt_leaves():
    """The interrupt line always ends with the outcome: a new command must state its own (cli.INTERRUPT_LEAVES)."""
    from gracectl.cli import INTERRUPT_LEAVES

    assert {" ".join(p) for p in LEAVES} == set(INTERRUPT_LEAVES)


@pytest.mark.parametrize("argv, ends", [(["plan", "v0.19.0-tfa"], "; nothing was changed"),
                                        (["ci", "build"], "; no release tag was moved (a record or image is written whole or not at all)"),
                                        (["rehearse"], "(the test bed's tags they moved included)")])
def test_an_interrupt_inside_a_command_ends_its_line_with_the_outcome(monkeypatch, capsys, argv, ends):
    """Interrupted raised where the command is (as gracectl.interrupts raises it), plainly and rewrapped the way
    Python 3.11 rewraps an exception raised inside a class's __set_name__."""
    from gracectl import cli, interrupts
    from gracectl.errors import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted("interrupted (SIGINT)", 130)

    def rewrapped(*args, **kwargs):
        try:
            interrupted()
        except Interrupted as exc:
            raise RuntimeError("Error calling __set_name__") from exc

    for raiser in (interrupted, rewrapped):
        monkeypatch.setattr(typer.Typer, "__call__", lambda *a, **k: raiser())
        previous = interrupts.install()
        try:
            assert cli.run(argv) == 130
        finally:
            interrupts.restore(previous)  # run() holds at its end: the next test's signals must raise again
        line = capsys.readouterr().err
        assert line.startswith("error: interrupted (SIGINT); ") and line.rstrip().endswith(ends), line
        assert line.count("\n") == 1
