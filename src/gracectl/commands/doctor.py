"""`gracectl doctor [--stage STAGE]...`: what this node lacks for the pipeline's stages, and what to install.

With the job's parameters in the environment (RELEASE, ACTION, PUSH, ... as Jenkins sets them) only the given
stages that run with them are checked: a rollback never waits on the build's disk or the smoke's GPU.
"""

from __future__ import annotations


import os
from typing import Annotated, List, Optional

import typer

from gracectl.pipeline import doctor as checks
from gracectl import ci, environment, settings
from gracectl.pipeline import stages
from gracectl.errors import UsageError
from gracectl.pipeline.stages import Params

StageOpt = Annotated[Optional[List[str]], typer.Option(
    "--stage", help="a stage this node runs (repeat the option; default: every stage)")]
RegistryOpt = Annotated[Optional[str], typer.Option("--registry", help="HOST:PORT/NAMESPACE to reach "
                                                    "(env REGISTRY; empty: not checked)")]
ReleaseOpt = Annotated[Optional[str], typer.Option(
    "--release", help="the release smoked on this node: its image's minimum NVIDIA driver (env RELEASE)")]
BuilderOpt = Annotated[Optional[str], typer.Option(
    "--builder", help="the buildx builder the build runs on (env BUILDER; empty: this node's dockerd)")]
MinFreeOpt = Annotated[Optional[float], typer.Option(
    "--min-free-gb", help=f"free disk a build needs (env {checks.MIN_FREE_ENV}, default {checks.DEFAULT_MIN_FREE_GB})")]


app = typer.Typer()


@app.command()
def doctor(stage: StageOpt = None, registry: RegistryOpt = None, min_free_gb: MinFreeOpt = None,
           release: ReleaseOpt = None, builder: BuilderOpt = None) -> None:
    """Check that this node has what the given pipeline stages need; one line per finding, what to install."""
    wanted = [stages.stage(name) for name in stage] if stage else list(stages.STAGES)
    job = ci.job_values(os.environ)
    try:
        params = Params.from_env(os.environ, registry=registry) if job.get("release") else None
    except UsageError as exc:
        raise UsageError(f"doctor: the job's parameters in the environment are wrong: {exc}") from None
    runs = [s for s in wanted if params is None or s.applies(params)]
    for s in wanted:
        if s not in runs:
            print(f"{checks.SKIPPED:<8} {'stage ' + s.name:<15} does not run with these parameters")
    free = min_free_gb if min_free_gb is not None else environment.min_free_gb(checks.DEFAULT_MIN_FREE_GB, os.environ)
    node = checks.Settings(registry=registry if registry is not None else job.get("registry", ""),
                               min_free_gb=free, smoke_gpus=job.get("smoke_gpus") or "all",
                               release=release or job.get("release", ""),
                               access=settings.registry_access(os.environ),
                               builder=builder if builder is not None else job.get("builder", ""))
    findings = checks.examine(runs, node)
    for finding in findings:
        print(finding.line(), flush=True)
    checks.verdict(findings, runs)
    print(f"doctor: this node has what stage(s) {', '.join(s.name for s in runs) or '(none)'} need")
