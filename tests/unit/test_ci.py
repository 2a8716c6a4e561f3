"""gracectl.ci, the CI seam: the job's parameters and the provider's facts, read from the environment."""

from __future__ import annotations

import pytest

from gracectl import ci
from gracectl.pipeline.stages import Params

JENKINS_ENV = {"BUILD_TAG": "jenkins-gh200-42", "BUILD_NUMBER": "42", "BUILD_URL": "https://ci.example/job/gh200/42/"}


def test_jenkins_facts():
    assert ci.fact("run_id", JENKINS_ENV) == "jenkins-gh200-42"
    assert ci.fact("build_number", JENKINS_ENV) == "42"
    assert ci.build_url(JENKINS_ENV) == "https://ci.example/job/gh200/42/"


def test_outside_ci_there_are_no_facts():
    assert ci.fact("run_id", {}) == ci.build_url({}) == ci.run_id({}) == ""
    assert ci.job_values({"BUILD_URL": ""}) == {}


def test_a_parameter_wins_over_the_providers_fact():
    values = ci.job_values({**JENKINS_ENV, "GRACECTL_RUN_ID": "mine", "RELEASE": "v0.19.0"})
    assert values == {"run_id": "mine", "build_number": "42", "release": "v0.19.0",
                      "build_url": "https://ci.example/job/gh200/42/"}  # the provenance's invocation
    assert Params.from_env({**JENKINS_ENV, "RELEASE": "v0.19.0"}).run_id == "jenkins-gh200-42"


def test_a_second_provider_is_one_table(monkeypatch):
    """The shape a GitHub Actions row would have: facts composed from several variables."""
    github = ci.Provider("github-actions", run_id="github-{GITHUB_RUN_ID}-{GITHUB_RUN_ATTEMPT}",
                         build_number="{GITHUB_RUN_NUMBER}",
                         build_url="{GITHUB_SERVER_URL}/{GITHUB_REPOSITORY}/actions/runs/{GITHUB_RUN_ID}",
                         job_url="{GITHUB_SERVER_URL}/{GITHUB_REPOSITORY}/actions/workflows/{GITHUB_WORKFLOW}")
    monkeypatch.setattr(ci, "PROVIDERS", (ci.JENKINS, github))
    env = {"GITHUB_RUN_ID": "9", "GITHUB_RUN_ATTEMPT": "2", "GITHUB_RUN_NUMBER": "7",
           "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "RELEASE": "v0.19.0"}
    p = Params.from_env(env)
    assert (p.run_id, p.build_number) == ("github-9-2", 7)
    assert ci.build_url(env) == "https://github.com/o/r/actions/runs/9"
    assert ci.fact("run_id", {**env, "GITHUB_RUN_ATTEMPT": ""}) == ""  # a fact needs all its variables


@pytest.mark.parametrize("var", sorted(ci.PARAMETERS))
def test_every_parameter_is_a_params_field(var):
    assert ci.PARAMETERS[var] in Params.__dataclass_fields__
