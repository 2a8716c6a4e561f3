"""The command-line options more than one command takes: declared once, so that the same option reads the same
(name, help, environment variable) wherever it appears.

Two families: the operator's options (`gracectl plan`, `build`: a value or its default), and the pipeline's
(`gracectl ci STAGE`: None unless given, so that the job's environment, read by gracectl.ci, fills them).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from gracectl import settings
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.registry_auth import Credentials
from gracectl.errors import UsageError
from gracectl.pipeline.stages import ACTIONS
from gracectl.image.smoke import GPUS, LEVEL_CHOICES

JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
GpusOpt = Annotated[str, typer.Option("--gpus", help=f"GPUs for the container: {' | '.join(GPUS)}")]

# the operator's
ReleaseArg = Annotated[str, typer.Argument(help="release name (see `gracectl releases`) or path to a manifest")]
MirrorOpt = Annotated[Optional[Path], typer.Option("--mirror", help="mirror file mapping upstream inputs")]
VllmRefOpt = Annotated[str, typer.Option("--vllm-ref", help="override the vLLM ref (tag or full commit)")]
ImageTagOpt = Annotated[str, typer.Option("--image-tag", help="override the moving tag")]
VllmBuildOpt = Annotated[str, typer.Option("--vllm-build", help="source | wheel: build vLLM or install the "
                                           "official wheel (default: the manifest's sources.vllm.build)")]
TargetOpt = Annotated[str, typer.Option("--target", help="vllm-openai | vllm-openai-nonroot (the final image as user "
                                       "vllm, uid 2000: tags <tag>-nonroot)")]
BuildNumberOpt = Annotated[int, typer.Option("--build-number", help="CI build number for the immutable tag")]
RegistryOpt = Annotated[str, typer.Option("--registry", envvar="GRACECTL_REGISTRY",
                                          help="registry: HOST, HOST:PORT or HOST:PORT/NAMESPACE")]

# the pipeline's (None: from the job's environment)
BuilderOpt = Annotated[str, typer.Option("--builder", help="the buildx builder to build on (e.g. remote BuildKit "
                                         "agents; empty: this node's dockerd)")]
CiBuilderOpt = Annotated[Optional[str], typer.Option("--builder", help="buildx builder (env BUILDER; empty: dockerd)")]
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


def with_default_registry(reference: str | None) -> str | None:
    """typer callback of an image reference argument: GRACECTL_REGISTRY in front of one that names no registry."""
    return settings.image_reference(reference, os.environ) if reference else reference


# -- registry access: the options every command that speaks to a registry takes, declared once -----------------
# `@registry_options` adds them to a command and hands the command ONE value, `access` (a RegistryAccess built
# from them over the documented GRACECTL_* variables by gracectl.settings), in their place.
UserOpt = Annotated[str, typer.Option("--username", help="registry user (with --password-stdin)")]
PasswordStdinOpt = Annotated[bool, typer.Option("--password-stdin", help="read the registry password from stdin")]
InsecureOpt = Annotated[Optional[list[str]], typer.Option(
    "--insecure-registry", help="HOST[:PORT] to reach without TLS verification (repeatable; "
    "env GRACECTL_INSECURE_REGISTRY)")]
CertDirOpt = Annotated[Optional[Path], typer.Option(
    "--cert-dir", help="folder with the registry's CA (*.crt) and client.cert/client.key, as skopeo's "
    "(default /etc/docker/certs.d/HOST[:PORT]; env GRACECTL_CERT_DIR)")]
DeadlineOpt = Annotated[Optional[float], typer.Option(
    "--deadline", help="give up after this many seconds overall (default: GRACECTL_DEADLINE_S or 180)")]

_REGISTRY_PARAMS = {"username": (UserOpt, ""), "password_stdin": (PasswordStdinOpt, False),
                    "insecure_registry": (InsecureOpt, None), "cert_dir": (CertDirOpt, None)}


def read_access(username: str = "", password_stdin: bool = False, insecure_registry: list[str] | None = None,
                cert_dir: Path | None = None, deadline: float | None = None) -> RegistryAccess:
    """The command's RegistryAccess: its options over the environment's settings (gracectl.settings)."""
    credentials = None
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
        if not (username and password):
            raise UsageError("give both --username and a password on stdin (--password-stdin)")
        credentials = Credentials(username, password)
    elif username:
        raise UsageError("--username needs --password-stdin (passwords never go on the command line)")
    return settings.registry_access(os.environ, credentials=credentials, insecure=insecure_registry or (),
                                    cert_dir=cert_dir, deadline_s=deadline)


def registry_options(*, deadline: bool = True):
    """Decorator: the command gets --username/--password-stdin/--insecure-registry/--cert-dir (and --deadline
    unless deadline=False: publish moves layers for as long as that takes) and receives `access` instead."""
    def wrap(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "access"]
        extra = dict(_REGISTRY_PARAMS, **({"deadline": (DeadlineOpt, None)} if deadline else {}))
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
                 for name, (kind, default) in extra.items()]

        @functools.wraps(command)
        def run(*args, **kwargs):
            options = {name: kwargs.pop(name) for name in extra}
            return command(*args, access=read_access(**options), **kwargs)

        run.__signature__ = signature.replace(parameters=[
            *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own), *added])
        return run
    return wrap
