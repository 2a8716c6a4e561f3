"""The command-line options more than one command takes: declared once, so that the same option reads the same
(name, help, environment variable) wherever it appears.

Two families: the operator's options (`gracectl plan`, `build`: a value or its default), and the pipeline's
(`gracectl ci STAGE`: None unless given, so that the job's environment, read by gracectl.ci, fills them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gracectl.pipeline import ACTIONS
from gracectl.smoke import GPUS, LEVEL_CHOICES

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
GpusOpt = Annotated[str, typer.Option("--gpus", help=f"GPUs for the container: {' | '.join(GPUS)}")]

# the operator's
ReleaseArg = Annotated[str, typer.Argument(help="release name (see `gracectl releases`) or path to a manifest")]
MirrorOpt = Annotated[Optional[Path], typer.Option("--mirror", help="mirror file mapping upstream inputs")]
VllmRefOpt = Annotated[str, typer.Option("--vllm-ref", help="override the vLLM ref (tag or full commit)")]
ImageTagOpt = Annotated[str, typer.Option("--image-tag", help="override the moving tag")]
VllmBuildOpt = Annotated[str, typer.Option("--vllm-build", help="source | wheel: build vLLM or install the "
                                           "official wheel (default: the manifest's sources.vllm.build)")]
BuildNumberOpt = Annotated[int, typer.Option("--build-number", help="CI build number for the immutable tag")]
RegistryOpt = Annotated[str, typer.Option("--registry", envvar="GRACECTL_REGISTRY",
                                          help="registry: HOST, HOST:PORT or HOST:PORT/NAMESPACE")]

# the pipeline's (None: from the job's environment)
WorkdirOpt = Annotated[Path, typer.Option("--workdir", help="stage inputs/outputs (plan.json, records...)")]
CiReleaseOpt = Annotated[Optional[str], typer.Option("--release", help="release name (env RELEASE)")]
CiVllmRefOpt = Annotated[Optional[str], typer.Option("--vllm-ref", help="override the vLLM ref (env VLLM_REF)")]
CiVllmBuildOpt = Annotated[Optional[str], typer.Option("--vllm-build", help="source | wheel (env VLLM_BUILD)")]
CiImageTagOpt = Annotated[Optional[str], typer.Option("--image-tag", help="override the moving tag (env IMAGE_TAG)")]
CiBuildNumberOpt = Annotated[Optional[int], typer.Option("--build-number", help="(env BUILD_NUMBER)")]
CiRegistryOpt = Annotated[Optional[str], typer.Option("--registry", help="HOST:PORT/NAMESPACE (env REGISTRY)")]
CiSmokeLevelOpt = Annotated[Optional[str], typer.Option("--smoke-level", help=f"{'|'.join(LEVEL_CHOICES)} "
                                                        "(env SMOKE_LEVEL)")]
CiRollbackToOpt = Annotated[Optional[str], typer.Option("--rollback-to", help="target of a rollback (env ROLLBACK_TO)")]
CiRunIdOpt = Annotated[Optional[str], typer.Option("--run-id", help="labels this run's containers "
                                                   "(env GRACECTL_RUN_ID, else the CI's: Jenkins BUILD_TAG)")]
CiMirrorOpt = Annotated[Optional[str], typer.Option("--mirror", help="mirror file (env GRACECTL_MIRROR)")]
CiActionOpt = Annotated[Optional[str], typer.Option("--action", help=f"{'|'.join(ACTIONS)} (env ACTION)")]
CiPushOpt = Annotated[Optional[bool], typer.Option("--push/--no-push", help="(env PUSH)", show_default=False)]
CiPromoteOpt = Annotated[Optional[bool], typer.Option("--promote/--no-promote", help="(env PROMOTE)",
                                                      show_default=False)]
