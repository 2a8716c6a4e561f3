"""`gracectl doctor [--stage STAGE]...`: what this node lacks for the pipeline's stages, and what to install.

With the job's parameters in the environment (RELEASE, ACTION, PUSH, ... as Jenkins sets them) only the given
stages that run with them are checked: a rollback never waits on the build's disk or the smoke's GPU.
"""

from __future__ import annotations

import os
from typing import Annotated, List, Optional

import typer

from gracectl import doctor as checks
from gracectl import pipeline
from gracectl.errors import UsageError
from gracectl.pipeline import Params

StageOpt = Annotated[Optional[List[str]], typer.Option(
    "--stage", help="a stage this node runs (repeat the option; default: every stage)")]
RegistryOpt = Annotated[Optional[str], typer.Option("--registry", help="HOST:PORT/NAMESPACE to reach "
                                                    "(env REGISTRY; empty: not checked)")]
MinFreeOpt = Annotated[Optional[float], typer.Option(
    "--min-free-gb", help=f"free disk a build needs (env {checks.MIN_FREE_ENV}, default {checks.DEFAULT_MIN_FREE_GB})")]


app = typer.Typer()


@app.command()
def doctor(stage: StageOpt = None, registry: RegistryOpt = None, min_free_gb: MinFreeOpt = None) -> None:
    """Check that this node has what the given pipeline stages need; one line per finding, what to install."""
    wanted = [pipeline.stage(name) for name in stage] if stage else list(pipeline.STAGES)
    env = os.environ
    try:
        params = Params.from_env(registry=registry) if env.get("RELEASE") else None
    except UsageError as exc:
        raise UsageError(f"doctor: the job's parameters in the environment are wrong: {exc}") from None
    runs = [s for s in wanted if params is None or s.applies(params)]
    for s in wanted:
        if s not in runs:
            print(f"{checks.SKIPPED:<8} {'stage ' + s.name:<15} does not run with these parameters")
    try:
        free = float(min_free_gb if min_free_gb is not None else env.get(checks.MIN_FREE_ENV) or
                     checks.DEFAULT_MIN_FREE_GB)
    except ValueError:
        raise UsageError(f"{checks.MIN_FREE_ENV} must be a number of GB, got {env[checks.MIN_FREE_ENV]!r}") from None
    settings = checks.Settings(registry=registry if registry is not None else env.get("REGISTRY", ""),
                               min_free_gb=free, smoke_gpus=env.get("GRACECTL_SMOKE_GPUS") or "all")
    findings = checks.examine(runs, settings)
    for finding in findings:
        print(finding.line(), flush=True)
    checks.verdict(findings, runs)
    print(f"doctor: this node has what stage(s) {', '.join(s.name for s in runs) or '(none)'} need")
