"""`gracectl ci STAGE`: one pipeline stage (gracectl.pipeline.stages) per command, as the Jenkinsfile calls them.

Parameters come from the job's environment (gracectl.ci reads it: RELEASE, VLLM_REF, IMAGE_TAG, REGISTRY,
SMOKE_LEVEL, ROLLBACK_TO, PUSH, PROMOTE, ACTION, GRACECTL_RUN_ID, and the CI's build number and run id);
options override them. `gracectl ci stages [--json]` lists the stages; `gracectl ci cleanup` removes the run's
containers.
"""

from __future__ import annotations

import json
import os

import typer
from rich.console import Console
from rich.table import Table

from gracectl import ci, settings
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.pipeline.stages import STAGES, Stage, find_run_id, run_stage
from gracectl.commands.options import (CiActionOpt, CiBuilderOpt, CiBuildNumberOpt, CiImageTagOpt, CiMirrorOpt,
                                       CiPromoteOpt,
                                       CiPushOpt, CiRegistryOpt, CiReleaseOpt, CiRollbackToOpt, CiRunIdOpt,
                                       CiSmokeLevelOpt, CiVllmBuildOpt, CiVllmRefOpt, JsonOpt,
                                       WorkdirOpt, registry_options)
from gracectl.errors import UsageError
from gracectl.pipeline.stages import Params
from gracectl.image.smoke import RUN_LABEL, remove_run_containers
from gracectl.pipeline.workdir import DEFAULT_WORKDIR

err = Console(stderr=True)

app = typer.Typer(help="Pipeline stages as Jenkins runs them (`gracectl ci stages` lists them in order).",
                  no_args_is_help=True)


@app.command()
def stages(
    as_json: JsonOpt = False,
    release: CiReleaseOpt = None,
    action: CiActionOpt = None,
    push: CiPushOpt = None,
    promote: CiPromoteOpt = None,
    registry: CiRegistryOpt = None,
) -> None:
    """List the stages in order; with parameters (env or options) also whether each one runs."""
    params = None
    try:
        params = Params.from_env(os.environ, release=release, action=action, push=push, promote=promote,
                                 registry=registry)
    except UsageError:
        if release or action or push is not None or promote is not None:
            raise  # parameters were given and are wrong: say so
    rows = [{"name": s.name, "command": s.command, "description": s.description, "output": s.output,
             "needs": list(s.needs), "moves_tag": s.moves_tag,
             "runs": s.applies(params) if params else None} for s in STAGES]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("stage", "runs", "command", "output", "description")
    for r in rows:
        runs = "-" if r["runs"] is None else ("yes" if r["runs"] else "no")
        table.add_row(r["name"], runs, r["command"], r["output"], r["description"])
    Console().print(table)


@app.command()
def cleanup(workdir: WorkdirOpt = DEFAULT_WORKDIR, run_id: CiRunIdOpt = None) -> None:
    """Remove the containers this run started (label io.gracectl.run=<run id>)."""
    run_id = find_run_id(run_id or ci.run_id(os.environ), workdir)
    removed = remove_run_containers(run_id)
    err.print(f"ci cleanup: removed {len(removed)} container(s) labelled {RUN_LABEL}={run_id}")


def _stage_command(stage: Stage):
    @registry_options(deadline=False)  # the push stage moves layers for as long as that takes
    def command(
        workdir: WorkdirOpt = DEFAULT_WORKDIR,
        release: CiReleaseOpt = None,
        vllm_ref: CiVllmRefOpt = None,
        vllm_build: CiVllmBuildOpt = None,
        image_tag: CiImageTagOpt = None,
        build_number: CiBuildNumberOpt = None,
        registry: CiRegistryOpt = None,
        smoke_level: CiSmokeLevelOpt = None,
        rollback_to: CiRollbackToOpt = None,
        run_id: CiRunIdOpt = None,
        mirror: CiMirrorOpt = None,
        action: CiActionOpt = None,
        push: CiPushOpt = None,
        promote: CiPromoteOpt = None,
        builder: CiBuilderOpt = None,
        *,
        access: RegistryAccess,
    ) -> None:
        params = Params.from_env(os.environ, builder=builder, release=release, vllm_ref=vllm_ref,
                                 vllm_build=vllm_build, image_tag=image_tag, build_number=build_number,
                                 registry=registry, smoke_level=smoke_level, rollback_to=rollback_to,
                                 run_id=run_id, mirror=mirror, action=action, push=push, promote=promote)
        err.print(f"[bold]ci {stage.name}[/bold]: {stage.description}", highlight=False, soft_wrap=True)
        run_stage(stage.name, params, workdir, access, settings.signing_key(os.environ))
        err.print(f"ci {stage.name}: passed ({workdir / stage.output})", highlight=False)

    command.__doc__ = stage.description[0].upper() + stage.description[1:] + "."
    return command


for _stage in STAGES:  # one command per stage, in the pipeline's order
    app.command(name=_stage.name)(_stage_command(_stage))
