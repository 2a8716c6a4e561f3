"""The operator's documents against the code: CLAWMINE.md's exit-code table is errors.py's and the interrupt
handler's codes, TABLES.md's Jenkins parameters and doctor checks are the Jenkinsfile's and the pipeline's, the
runbook opens CLAWMINE.md, and every link between the documents lands on a heading that exists."""

from __future__ import annotations

import inspect
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from gracectl import errors, interrupts
from gracectl.pipeline import doctor, stages

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "CLAWMINE.md", "MEASUREMENTS.md", "TABLES.md")
RUNBOOK_TASKS = ("Add a release", "Build", "Promote", "Roll back", "Add a builder node", "Rotate a key",
                 "What each exit code means")


def read(name: str) -> str:
    return (REPO / name).read_text()


def between(text: str, begin: str, end: str) -> str:
    start = text.index(begin)
    return text[text.index("\n", start) + 1:text.index(end, start)]


def rows(table: str) -> list[list[str]]:
    """The body rows of a markdown table, cells stripped (the header and its rule left out)."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[2:]]


# ---- the exit codes ------------------------------------------------------------------------------------------------


def error_types() -> dict[int, set[str]]:
    """exit code -> the names of errors.py's types that exit with it (Interrupted: one per signal it stands for)."""
    codes: dict[int, set[str]] = {}
    for name, obj in vars(errors).items():
        if inspect.isclass(obj) and obj.__module__ == errors.__name__ and name != "Interrupted":
            codes.setdefault(obj.exit_code, set()).add(name)
    for _, code in interrupts.SIGNALS.values():
        codes.setdefault(code, set()).add("Interrupted")
    return codes


def documented_exit_codes() -> dict[int, set[str]]:
    table = between(read("CLAWMINE.md"), "<!-- exit codes:", "<!-- end of exit codes -->")
    documented: dict[int, set[str]] = {}
    for cells in rows(table):
        names = set(re.findall(r"`(\w+)`", cells[1]))
        for code in cells[0].split(","):
            assert int(code) not in documented, f"exit {code} is in CLAWMINE.md's table twice"
            documented[int(code)] = names
    return documented


def test_the_exit_code_table_is_errors_py():
    """Every code gracectl exits with for an expected failure is in the runbook's table, with the types that give it,
    and the table names no code or type that errors.py and the signal handler do not have."""
    want = {0: set(), **error_types()}
    have = documented_exit_codes()
    assert sorted(have) == sorted(want), "CLAWMINE.md's exit codes differ from errors.py's (and interrupts.SIGNALS')"
    for code in want:
        assert have[code] == want[code], f"exit {code}: CLAWMINE.md names {sorted(have[code])}, errors.py has " \
                                         f"{sorted(want[code])}"


def test_a_signal_row_names_each_signal_s_code():
    table = between(read("CLAWMINE.md"), "<!-- exit codes:", "<!-- end of exit codes -->")
    row = next(cells for cells in rows(table) if "`Interrupted`" in cells[1])
    assert [int(c) for c in row[0].split(",")] == [code for _, code in interrupts.SIGNALS.values()]


def test_the_property_tests_codes_are_documented():
    """test_properties.py's DOCUMENTED (what the release operations may exit with) is a subset of the table."""
    found = re.search(r"^DOCUMENTED = \{([\d, ]+)\}", read("tests/unit/test_properties.py"), re.M)
    assert found, "tests/unit/test_properties.py has no DOCUMENTED set"
    assert {int(c) for c in found.group(1).split(",")} <= set(documented_exit_codes())


# ---- TABLES.md's tables held to the code ---------------------------------------------------------------------------


def test_the_jenkins_parameter_table_is_the_jenkinsfile_s():
    declared = re.findall(r"^\s*(?:choice|string|booleanParam)\(name: '(\w+)'", read("Jenkinsfile"), re.M)
    table = between(read("TABLES.md"), "<!-- jenkins parameters:", "<!-- end of jenkins parameters -->")
    assert [cells[0].strip("`") for cells in rows(table)] == declared


def test_the_doctor_table_is_what_each_stage_needs():
    table = between(read("TABLES.md"), "<!-- doctor checks:", "<!-- end of doctor checks -->")
    have = {cells[0].strip("`"): [s.strip() for s in cells[1].split(",")] for cells in rows(table)}
    want = doctor.needs_of(stages.STAGES)
    assert list(have) == list(want), "TABLES.md's doctor checks differ from pipeline.STAGES' node_needs"
    assert have == want


# ---- CLAWMINE.md opens with the runbook ---------------------------------------------------------------------------


def test_the_runbook_is_on_clawmine_s_first_screen():
    """The first 40 lines hold the table of contents and the runbook's start; the runbook's tasks come before any
    reference section, in this order."""
    text = read("CLAWMINE.md")
    first_screen = text.splitlines()[:40]
    assert "## Runbook" in first_screen
    assert "### " + RUNBOOK_TASKS[0] in first_screen
    headings = re.findall(r"^(#{1,3}) (.+)$", text, re.M)
    titles = [title for _, title in headings]
    positions = [titles.index(task) for task in RUNBOOK_TASKS]
    assert positions == sorted(positions)
    reference = titles.index("Reference")
    assert all(p < reference for p in positions)


# ---- links between the documents ----------------------------------------------------------------------------------


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped but - and _, spaces as -, repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"^#{1,6} (.+)$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_every_link_between_the_documents_lands(doc):
    text = read(doc)
    for target, anchor in re.findall(r"\]\(([A-Za-z.\-]*\.md)?(?:#([\w\-]+))?\)", text):
        if not target and not anchor:
            continue
        path = REPO / (target or doc)
        assert path.exists(), f"{doc} links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(path.read_text()), f"{doc} links to {target or doc}#{anchor}: no such heading"


def test_every_section_named_from_the_code_exists():
    """`CLAWMINE.md, "Driver floor"` in a docstring, a script or a document names a heading (or a bold paragraph
    opening) that the document still has: a section renamed or moved fails here, naming the file that cites it."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    cite = re.compile(r"\b(CLAWMINE|MEASUREMENTS|TABLES)\.md,? \(?\"([^\"\n]+)\"")
    stale, cited = [], 0
    for name in files:
        path = REPO / name
        if path.suffix in (".png", ".whl", ".gz") or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for doc, section in cite.findall(text):
            cited += 1
            target = read(f"{doc}.md")
            if not re.search(r"^(?:#{1,6} |\*\*)" + re.escape(section), target, re.M | re.I):
                stale.append(f"{name}: {doc}.md, \"{section}\"")
    assert cited > 10, "no citations found: the pattern no longer matches how the code cites the documents"
    assert not stale, f"sections cited that the documents no longer have: {stale}"


# ---- the runbook's commands are the CLI's ---------------------------------------------------------------------------


def runbook_commands() -> list[list[str]]:
    """Every `gracectl ...` command the runbook shows (in backquotes or a code block), as argv after `gracectl`."""
    text = read("CLAWMINE.md")
    runbook = text[text.index("## Runbook"):text.index("\n# Reference")]
    snippets = re.findall(r"`(?:\.venv/bin/)?(gracectl [^`]+)`", runbook)
    for block in re.findall(r"```bash\n(.*?)```", runbook, re.S):
        snippets += [line.split("#")[0].rstrip(" \\") for line in block.splitlines() if line.startswith("gracectl ")]
    commands = []
    for snippet in snippets:
        for part in re.split(r"&&|\|", snippet):
            words = shlex.split(part.split("<")[0], comments=False)
            if words and words[0] == "gracectl":
                commands.append(words[1:])
    return commands


def test_every_runbook_command_and_option_is_the_cli_s():
    import typer

    from gracectl.cli import app

    root = typer.main.get_command(app)  # a group has .commands (typer's own click or click's)
    commands = runbook_commands()
    assert len(commands) > 30, commands
    for argv in commands:
        command, words = root, list(argv)
        while hasattr(command, "commands") and words and not words[0].startswith("-"):
            assert words[0] in command.commands, f"`gracectl {' '.join(argv)}`: no command {words[0]!r}"
            command = command.commands[words.pop(0)]
        assert not hasattr(command, "commands"), f"`gracectl {' '.join(argv)}` names no command"
        options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for word in words:
            if word.startswith("--"):
                assert word.split("=")[0] in options, f"`gracectl {' '.join(argv)}`: {command.name} has no {word}"


# ---- names the documents take from the tree -------------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS)
def test_every_source_path_the_documents_name_exists(doc):
    """A module moved or renamed fails here until the documents follow it."""
    missing = sorted({path for path in re.findall(r"\b((?:src/gracectl|smoke_tests|scripts|benchmarks|tests)/[\w/.-]+"
                                                  r"\.(?:py|sh|groovy))\b", read(doc)) if not (REPO / path).exists()})
    assert not missing, f"{doc} names files the tree does not have: {missing}"


def test_clawmine_s_stage_graph_names_the_dockerfile_s_stages():
    """The stage graph in "Build configuration" names stages of vllm/Dockerfile only (a renamed stage fails here)."""
    text = read("CLAWMINE.md")
    section = text[text.index("## Build configuration"):]
    graph = re.search(r"```\n(.*?)```", section, re.S).group(1)
    named = set(re.findall(r"[a-z][a-z0-9-]*[a-z0-9]", graph)) - {"final", "image"}
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", read("vllm/Dockerfile"), re.M | re.I))
    assert named and named <= stages, f"CLAWMINE.md's stage graph names {sorted(named - stages)}, not stages"
