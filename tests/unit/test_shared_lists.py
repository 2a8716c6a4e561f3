"""Each shared list has one owner in the package; the copies that must exist elsewhere (the Jenkinsfile,
smoke_tests/pytest.ini) are held to it here."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from gracectl.pipeline.stages import ACTIONS, SMOKE_LEVELS, STAGES
from gracectl.image import smoke
from gracectl.pipeline import workdir

REPO = Path(__file__).resolve().parents[2]
JENKINSFILE = (REPO / "Jenkinsfile").read_text()


def jenkins_choices(name: str) -> list[str]:
    m = re.search(rf"choice\(name: '{name}', choices: \[([^\]]*)\]", JENKINSFILE)
    assert m, f"the Jenkinsfile has no choice parameter {name}"
    return re.findall(r"'([^']*)'", m.group(1))


def test_pytest_markers_are_the_smoke_levels():
    ini = configparser.ConfigParser()
    ini.read(REPO / "smoke_tests" / "pytest.ini")
    markers = [line.split(":", 1)[0].strip() for line in ini["pytest"]["markers"].splitlines() if line.strip()]
    assert markers == list(smoke.LEVELS)


def test_jenkins_smoke_level_choices_are_the_smoke_levels():
    assert sorted(jenkins_choices("SMOKE_LEVEL")) == sorted(smoke.LEVEL_CHOICES)
    assert SMOKE_LEVELS == smoke.LEVEL_CHOICES  # the pipeline validates SMOKE_LEVEL against the owner's


def test_jenkins_action_choices_are_the_pipelines():
    assert jenkins_choices("ACTION") == list(ACTIONS)


def test_work_dir_files_the_jenkinsfile_reads_are_the_pipelines():
    for name in (workdir.MOVING_TAG_FILE, workdir.SMOKE_JUNIT_FILE):
        assert f"'{workdir.DEFAULT_WORKDIR}/{name}'" in JENKINSFILE
    assert f"'{workdir.DEFAULT_WORKDIR}/**'" in JENKINSFILE  # stashed and archived whole
    outputs = [s.output for s in STAGES]
    assert len(set(outputs)) == len(outputs), "two stages write the same file"
    assert set(workdir.OUTPUTS) == {s.name for s in STAGES}  # every stage has its one file
    for name in (workdir.PLAN_FILE, workdir.BUILD_RECORD_FILE, workdir.SMOKE_RECORD_FILE):
        assert name in outputs
