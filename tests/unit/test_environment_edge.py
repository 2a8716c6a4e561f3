"""Nothing below the edge reads the environment: the CLI's commands (commands/, cli.py, __main__) and the test
bed's command read it, through gracectl.settings, gracectl.environment and gracectl.ci, and hand the values down
(registry access, the signing key, the job's parameters). Every reader takes the environment as an argument;
a module below the edge that names os.environ / os.getenv, or calls a reader, is on the short list below
with its reason, or fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from test_layout import MODULES, module_name

EDGE = ("gracectl.commands", "gracectl.cli", "gracectl.__main__")
# Modules below the edge that touch the environment, and why.
ALLOWED = {
    # a child program runs with this process's environment plus its own: passed on, no setting read
    "gracectl.adapters.proc": "os.environ",
}
# The readers: they take the environment as an argument and are called from the edge only.
READERS = ("gracectl.settings", "gracectl.environment")


def environment_reads(source: str) -> list[str]:
    """What in `source` reads the environment: os.environ / os.getenv / os.environb, or `environ` imported."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb", "putenv") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            found.append(f"os.{node.attr} (line {node.lineno})")
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and \
                any(a.name in ("environ", "getenv", "environb") for a in node.names):
            found.append(f"from os import ... (line {node.lineno})")
    return found


def reader_imports(source: str) -> list[str]:
    """The environment readers `source` imports (gracectl.settings, gracectl.environment)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            found += [r for r in READERS if r in names]
        elif isinstance(node, ast.Import):
            found += [r for a in node.names for r in READERS if a.name == r]
    return found


def below_the_edge(module: str) -> bool:
    return not any(module == e or module.startswith(e + ".") for e in EDGE) and module not in READERS


BELOW = [p for p in MODULES if below_the_edge(module_name(p))]


@pytest.mark.parametrize("path", BELOW, ids=lambda p: module_name(p))
def test_no_environment_read_below_the_edge(path):
    me = module_name(path)
    reads = environment_reads(path.read_text()) + reader_imports(path.read_text())
    if me in ALLOWED:
        assert reads, f"{me} no longer reads the environment: strike it off the list in {__file__}"
    else:
        assert not reads, f"{me} reads the environment below the edge: {reads} (take it as a value from the edge)"


def test_the_readers_read_only_what_they_are_handed():
    """gracectl.settings, gracectl.environment and gracectl.ci take the environment as an argument."""
    for path in MODULES:
        if module_name(path) in (*READERS, "gracectl.ci"):
            assert not environment_reads(path.read_text()), module_name(path)


@pytest.mark.parametrize("source, caught", [
    ("import os\nx = os.environ.get('HOME')", True),
    ("import os\nx = os.getenv('HOME')", True),
    ("from os import environ", True),
    ("from gracectl import settings", True),
    ("from gracectl.environment import get", True),
    ("import os\nx = os.path.join('a', 'b')", False),
])
def test_an_environment_read_is_caught(source, caught):
    assert bool(environment_reads(source) + reader_imports(source)) is caught
