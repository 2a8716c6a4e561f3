"""`gracectl ci STAGE`: one pipeline stage (gracectl.pipeline) per command, as the Jenkinsfile calls them.

Parameters come from the environment Jenkins sets (RELEASE, VLLM_REF, IMAGE_TAG, BUILD_NUMBER, REGISTRY,
SMOKE_LEVEL, ROLLBACK_TO, PUSH, PROMOTE, ACTION, GRACECTL_RUN_ID or BUILD_TAG); options override them.
`gracectl ci stages [--json]` lists the stages; `gracectl ci cleanup` removes the run's containers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from gracectl import pipeline
from gracectl.errors import UsageError
from gracectl.pipeline import DEFAULT_WORKDIR, Params

err = Console(stderr=True)

WorkdirOpt = Annotated[Path, typer.Option("--workdir", help="stage inputs/outputs (plan.json, records...)")]
ReleaseOpt = Annotated[Optional[str], typer.Option("--release", help="release name (env RELEASE)")]
VllmRefOpt = Annotated[Optional[str], typer.Option("--vllm-ref", help="override the vLLM ref (env VLLM_REF)")]
ImageTagOpt = Annotated[Optional[str], typer.Option("--image-tag", help="override the moving tag (env IMAGE_TAG)")]
BuildNumberOpt = Annotated[Optional[int], typer.Option("--build-number", help="(env BUILD_NUMBER)")]
RegistryOpt = Annotated[Optional[str], typer.Option("--registry", help="HOST:PORT/NAMESPACE (env REGISTRY)")]
SmokeLevelOpt = Annotated[Optional[str], typer.Option("--smoke-level", help="imports|kernels|engine|server|all "
                                                      "(env SMOKE_LEVEL)")]
RollbackToOpt = Annotated[Optional[str], typer.Option("--rollback-to", help="target of a rollback (env ROLLBACK_TO)")]
RunIdOpt = Annotated[Optional[str], typer.Option("--run-id", help="labels this run's containers "
                                                 "(env GRACECTL_RUN_ID, else BUILD_TAG)")]
MirrorOpt = Annotated[Optional[str], typer.Option("--mirror", help="mirror file (env GRACECTL_MIRROR)")]
ActionOpt = Annotated[Optional[str], typer.Option("--action", help="build|rollback (env ACTION)")]
PushOpt = Annotated[Optional[bool], typer.Option("--push/--no-push", help="(env PUSH)", show_default=False)]
PromoteOpt = Annotated[Optional[bool], typer.Option("--promote/--no-promote", help="(env PROMOTE)",
                                                    show_default=False)]


def _stage_command(stage: pipeline.Stage):
    def command(
        workdir: WorkdirOpt = DEFAULT_WORKDIR,
        release: ReleaseOpt = None,
        vllm_ref: VllmRefOpt = None,
        image_tag: ImageTagOpt = None,
        build_number: BuildNumberOpt = None,
        registry: RegistryOpt = None,
        smoke_level: SmokeLevelOpt = None,
        rollback_to: RollbackToOpt = None,
        run_id: RunIdOpt = None,
        mirror: MirrorOpt = None,
        action: ActionOpt = None,
        push: PushOpt = None,
        promote: PromoteOpt = None,
    ) -> None:
        params = Params.from_env(release=release, vllm_ref=vllm_ref, image_tag=image_tag, build_number=build_number,
                                 registry=registry, smoke_level=smoke_level, rollback_to=rollback_to,
                                 run_id=run_id, mirror=mirror, action=action, push=push, promote=promote)
        err.print(f"[bold]ci {stage.name}[/bold]: {stage.description}", highlight=False, soft_wrap=True)
        pipeline.run_stage(stage.name, params, workdir)
        err.print(f"ci {stage.name}: passed ({workdir / stage.output})", highlight=False)

    command.__doc__ = stage.description[0].upper() + stage.description[1:] + "."
    return command


def register(app: typer.Typer) -> None:
    ci = typer.Typer(help="Pipeline stages as Jenkins runs them (`gracectl ci stages` lists them in order).",
                     no_args_is_help=True)
    app.add_typer(ci, name="ci")

    @ci.command()
    def stages(
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable list on stdout")] = False,
        release: ReleaseOpt = None,
        action: ActionOpt = None,
        push: PushOpt = None,
        promote: PromoteOpt = None,
        registry: RegistryOpt = None,
    ) -> None:
        """List the stages in order; with parameters (env or options) also whether each one runs."""
        params = None
        try:
            params = Params.from_env(release=release, action=action, push=push, promote=promote, registry=registry)
        except UsageError:
            if release or action or push is not None or promote is not None:
                raise  # parameters were given and are wrong: say so
        rows = [{"name": s.name, "command": s.command, "description": s.description, "output": s.output,
                 "needs": list(s.needs), "moves_tag": s.moves_tag,
                 "runs": s.applies(params) if params else None} for s in pipeline.STAGES]
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        table = Table("stage", "runs", "command", "output", "description")
        for r in rows:
            runs = "-" if r["runs"] is None else ("yes" if r["runs"] else "no")
            table.add_row(r["name"], runs, r["command"], r["output"], r["description"])
        Console().print(table)

    @ci.command()
    def cleanup(workdir: WorkdirOpt = DEFAULT_WORKDIR, run_id: RunIdOpt = None) -> None:
        """Remove the containers this run started (label io.gracectl.run=<run id>)."""
        import os

        run_id = run_id or os.environ.get("GRACECTL_RUN_ID") or os.environ.get("BUILD_TAG") or ""
        if not run_id and (workdir / "plan.json").exists():
            run_id = json.loads((workdir / "plan.json").read_text()).get("run_id", "")
        removed = pipeline.cleanup(run_id)
        err.print(f"ci cleanup: removed {len(removed)} container(s) labelled {pipeline.RUN_LABEL}={run_id}")

    for s in pipeline.STAGES:
        ci.command(name=s.name)(_stage_command(s))
