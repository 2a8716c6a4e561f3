"""The plan of the house: every module of gracectl sits on a floor, and imports only from its floor or below;
the wings (releases, image, tags) keep to their rules; no import cycle. Production code never imports the test bed
(only its own command module does)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "gracectl"

# Lowest first. A module not named here fails the test below: give it its floor.
FLOORS = [
    ("ground", ["gracectl.errors", "gracectl.ci", "gracectl.environment", "gracectl.image_ref",
                "gracectl.interrupts", "gracectl.checkout", "gracectl.record_files"]),
    ("adapters", ["gracectl.adapters"]),
    ("settings read at the edge", ["gracectl.settings"]),
    ("what to build", ["gracectl.releases"]),
    ("build one image, ship by digest", ["gracectl.image", "gracectl.tags"]),
    ("the CI walk", ["gracectl.pipeline"]),
    ("test bed", ["gracectl.testbed"]),
    ("commands", ["gracectl.commands", "gracectl.cli", "gracectl.__main__"]),
]
# What each wing never imports. image builds and tests an image and never touches a tag; tags ships by digest
# whatever built it; releases says what to build and knows nothing of building or shipping.
WING_NEVER_IMPORTS = {
    "gracectl.image": ["gracectl.tags"],
    "gracectl.tags": ["gracectl.releases", "gracectl.image"],
    "gracectl.releases": ["gracectl.image", "gracectl.tags"],
}
# Where image and tags meet: the pipeline, and only what sits above it (test bed, commands).
MEETING_FLOOR = "the CI walk"


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
    return imports_in(path.read_text())


def imports_in(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gracectl"):
            # `from gracectl.tags import records` imports the module gracectl.tags.records: both are named
            found |= {f"{node.module}.{a.name}" for a in node.names} | ({node.module} - {"gracectl"})
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gracectl")}
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_from_a_higher_floor(path):
    me = module_name(path)
    up = [m for m in imports(path) if floor(m) > floor(me)]
    assert not up, f"{me} (floor {FLOORS[floor(me)][0]}) imports from higher floors: {up}"


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def wing_breaches(me: str, imported: set[str]) -> list[str]:
    """What `me` imports against the wings' rules: a wing importing what it never imports, or a module below the
    pipeline importing image and tags together."""
    breaches = [f"{me} imports {m}" for wing, never in WING_NEVER_IMPORTS.items() if within(me, wing)
                for m in sorted(imported) if any(within(m, n) for n in never)]
    both = [m for m in sorted(imported) if within(m, "gracectl.image") or within(m, "gracectl.tags")]
    meeting = [name for name, _ in FLOORS].index(MEETING_FLOOR)
    if floor(me) < meeting and {m.split(".")[1] for m in both} == {"image", "tags"}:
        breaches.append(f"{me} imports image and tags together ({', '.join(both)}): only the pipeline does")
    return breaches


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_wings_keep_their_rules(path):
    me = module_name(path)
    assert not wing_breaches(me, imports(path))


@pytest.mark.parametrize("me, source, breach", [
    ("gracectl.image.smoke", "from gracectl.tags.records import get_records", "gracectl.tags.records"),
    ("gracectl.tags.moves", "from gracectl.releases import manifest", "gracectl.releases.manifest"),
    ("gracectl.tags.moves", "import gracectl.image.bench", "gracectl.image.bench"),
    ("gracectl.releases.train", "from gracectl.image.plan import plan_for", "gracectl.image.plan"),
    ("gracectl.releases.train", "from gracectl.tags import records", "gracectl.tags.records"),
    ("gracectl.adapters.docker", "from gracectl.image import sbom\nfrom gracectl.tags import trust", "together"),
])
def test_a_breach_of_the_wing_rules_is_caught(me, source, breach):
    """The rules above hold: each planted import breaks one, and is named."""
    found = wing_breaches(me, imports_in(source))
    assert found and breach in " ".join(found)


def test_no_import_cycle():
    # a module's own packages are initialised before it whatever it imports: not an edge of a cycle
    graph = {me: {m for m in imports(p) if not me.startswith(m + ".")} for p in MODULES for me in [module_name(p)]}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path[path.index(module):] + (module,))}"
        if module in done:
            return
        for target in graph.get(module, ()):
            visit(target, path + (module,))
        done.add(module)

    for module in graph:
        visit(module, ())


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
