"""The CI seam: the one module that reads what a CI system tells a job, from the environment the edge hands it.

- PARAMETERS: the job's parameters (environment variable -> pipeline.stages.Params field). Every CI passes them the
  same way: its job definition sets these variables (the Jenkinsfile: parameters and `environment {}`).
- PROVIDERS: per CI, where its facts about this run are: the run id (labels the containers a run starts),
  the build number (in the immutable build tag) and the build URL (in the history of a tag move). One table
  per provider; a fact comes from the first provider whose variables are all set.

Jenkins is the one shipped. A second CI is one more Provider row here, one workflow file that calls
`gracectl ci STAGE` per stage of pipeline.stages.STAGES, and one test that executes it like
tests/unit/test_jenkinsfile.py.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

# Environment variable -> pipeline.stages.Params field.
PARAMETERS = {"RELEASE": "release", "ACTION": "action", "VLLM_REF": "vllm_ref", "VLLM_BUILD": "vllm_build",
              "IMAGE_TAG": "image_tag",
              "REGISTRY": "registry", "SMOKE_LEVEL": "smoke_level", "PUSH": "push", "PROMOTE": "promote",
              "ROLLBACK_TO": "rollback_to", "GRACECTL_RUN_ID": "run_id", "GRACECTL_MIRROR": "mirror",
              "GRACECTL_SMOKE_GPUS": "smoke_gpus",
              "GRACECTL_RELEASE_CHECK": "release_check", "GRACECTL_UPSTREAM_CACHE": "upstream_cache",
              "BUILDER": "builder"}


@dataclass(frozen=True)
class Provider:
    """Where one CI system keeps its facts about the run: templates over its environment variables."""

    name: str
    run_id: str
    build_number: str
    build_url: str
    job_url: str  # the job itself, the same for every run: a stable SLSA builder.id

    def fact(self, name: str, env: Mapping[str, str]) -> str:
        """The fact filled in from `env`, or "" unless every variable it names is set."""
        template = getattr(self, name)
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field]
        if not all(env.get(n) for n in names):
            return ""
        return template.format_map({n: env[n] for n in names})


JENKINS = Provider("jenkins", run_id="{BUILD_TAG}", build_number="{BUILD_NUMBER}", build_url="{BUILD_URL}",
                   job_url="{JOB_URL}")
PROVIDERS: tuple[Provider, ...] = (JENKINS,)


def fact(name: str, env: Mapping[str, str]) -> str:
    """A provider fact about this run (run_id, build_number, build_url, job_url), "" outside CI."""
    return next((value for p in PROVIDERS if (value := p.fact(name, env))), "")


def job_values(env: Mapping[str, str]) -> dict[str, str]:
    """The job's parameters as Params field -> text: the parameter variables that are set, then the provider's
    facts where no parameter gave them (GRACECTL_RUN_ID wins over Jenkins' BUILD_TAG)."""
    values = {field: env[var] for var, field in PARAMETERS.items() if env.get(var, "") != ""}
    for name in ("run_id", "build_number", "job_url", "build_url"):
        if name not in values and (value := fact(name, env)):
            values[name] = value
    return values


def run_id(env: Mapping[str, str]) -> str:
    """This run's id from the environment (GRACECTL_RUN_ID, else the provider's), "" when none is set."""
    return job_values(env).get("run_id", "")


def build_url(env: Mapping[str, str]) -> str:
    return fact("build_url", env)


def job_url(env: Mapping[str, str]) -> str:
    return fact("job_url", env)
