"""The plan of the house: every module of gracectl sits on a floor, and imports only from its floor or below.
Production code never imports the test bed (only its own command module does)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "gracectl"

# Lowest first. A module not named here fails the test below: give it its floor.
FLOORS = [
    ("ground", ["gracectl.errors", "gracectl.ci", "gracectl.environment", "gracectl.image_ref",
                "gracectl.interrupts"]),
    ("adapters", ["gracectl.adapters"]),
    ("inputs", ["gracectl.manifest", "gracectl.mirrors", "gracectl.upstream", "gracectl.upstream_final_stage",
                "gracectl.upstream_build", "gracectl.driver_floor"]),
    ("plan and records", ["gracectl.plan", "gracectl.builders", "gracectl.plan_extras", "gracectl.records",
                          "gracectl.workdir", "gracectl.provenance", "gracectl.build_inputs"]),
    ("work", ["gracectl.build", "gracectl.smoke", "gracectl.bench", "gracectl.release_ops", "gracectl.release_gates",
              "gracectl.release_history", "gracectl.release_lock", "gracectl.sbom",
              "gracectl.release_derive", "gracectl.release_train", "gracectl.release_watch", "gracectl.release_trust",
              "gracectl.release_publish"]),
    ("pipeline", ["gracectl.pipeline"]),
    ("node checks", ["gracectl.doctor"]),
    ("test bed", ["gracectl.testbed"]),
    ("commands", ["gracectl.commands", "gracectl.cli", "gracectl.__main__"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    for i, (_, prefixes) in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    if module == "gracectl":
        return 0
    raise AssertionError(f"{module} is on no floor: add it to FLOORS in {__file__}")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gracectl"):
            found |= {node.module} if node.module != "gracectl" else {f"gracectl.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gracectl")}
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_from_a_higher_floor(path):
    me = module_name(path)
    up = [m for m in imports(path) if floor(m) > floor(me)]
    assert not up, f"{me} (floor {FLOORS[floor(me)][0]}) imports from higher floors: {up}"


def test_only_the_testbed_command_imports_the_test_bed():
    users = {module_name(p) for p in MODULES if not module_name(p).startswith("gracectl.testbed")
             and any(m == "gracectl.testbed" or m.startswith("gracectl.testbed.") for m in imports(p))}
    assert users == {"gracectl.commands.testbed"}


def readme_layout() -> str:
    text = (PACKAGE.parents[1] / "README.md").read_text()
    return text.split("## How it is laid out", 1)[1].split("```", 2)[1]


def test_readme_layout_names_every_module_and_helper():
    """README's layout section matches the tree: every module, the Dockerfile's helpers, the scripts."""
    layout = readme_layout()
    root = PACKAGE.parents[1]
    files = [p.name for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")
             and p.parent.name != "commands"]  # commands/ is one module per area, named as a group
    files += [p.name for p in (root / "vllm").iterdir() if p.is_file() and p.name != "Dockerfile.dockerignore"]
    files += [p.name for p in (root / "scripts").glob("*.sh")] + [p.name for p in (root / "benchmarks").glob("*.py")]
    missing = sorted(name for name in files if name not in layout)
    assert not missing, f"README's layout section does not name: {missing}"
    for entry in ("releases/", "smoke_tests/", "Jenkinsfile", ".ci/run", "CLAWMINE.md", "tests/unit"):
        assert entry in layout
