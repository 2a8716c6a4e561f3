"""`gracectl releases`, `gracectl plan`, `gracectl lint`: look at what would be built, change nothing."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from gracectl.commands.options import (BuilderOpt, BuildNumberOpt, ImageTagOpt, JsonOpt, MirrorOpt, RegistryOpt, ReleaseArg,
                                       TargetOpt, VllmBuildOpt, VllmRefOpt)
from gracectl.image.bake import bake_file, target_name
from gracectl.releases.manifest import load_release, pair_of, release_names, releases_dir
from gracectl.image.plan import FINAL_STAGE, lint_dockerfile, plan_for

out = Console()

app = typer.Typer()


@app.command()
def releases(as_json: JsonOpt = False) -> None:
    """List the release manifests under releases/."""
    rows = []
    for name in release_names():
        m = load_release(name)
        rows.append({"release": name, "image": m.image_ref, "triton_kernels": m.release.triton_kernels,
                     "fallback": m.release.fallback, "platform": m.release.platform,
                     "description": m.release.description})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("release", "image", "triton_kernels", "fallback", title=f"releases in {releases_dir()}")
    for r in rows:
        table.add_row(r["release"], r["image"], r["triton_kernels"], r["fallback"] or "-")
    out.print(table)


@app.command()
def plan(
    release: ReleaseArg,
    as_json: JsonOpt = False,
    mirror: MirrorOpt = None,
    vllm_ref: VllmRefOpt = "",
    image_tag: ImageTagOpt = "",
    build_number: BuildNumberOpt = 0,
    registry: RegistryOpt = "",
    vllm_build: VllmBuildOpt = "",
    target: TargetOpt = FINAL_STAGE,
    builder: BuilderOpt = "",
    bake: Annotated[Optional[Path], typer.Option(
        "--bake", help="write the plan of RELEASE and of its pair's other image (tfa <-> fallback) as a "
                       "docker-bake.hcl to this file (pushed by digest when --registry is given): `docker buildx "
                       "bake -f FILE --builder NAME` builds what `gracectl build --builder NAME --push "
                       "--registry-cache` builds")] = None,
) -> None:
    """Print the stage graph, build arguments, tags, labels, the builder and the exact build command."""
    if bake:
        plans = [plan_for(name, mirror, vllm_ref, image_tag, build_number, registry, vllm_build, target, builder)
                 for name in [release, pair_of(release)] if name]
        bake.write_text(bake_file(plans, push=bool(registry)))
        out.print(f"wrote {bake}: bake targets {', '.join(target_name(p.release) for p in plans)}", highlight=False)
        return
    p = plan_for(release, mirror, vllm_ref, image_tag, build_number, registry, vllm_build, target,
                 builder).to_dict()
    if as_json:
        print(json.dumps(p, indent=2))
        return
    out.print(f"[bold]Plan for release {p['release']}[/bold] ({p['platform']}, target {p['target']})")
    tree = Tree(f"stage graph ({len(p['final_stages'])} stages in the final image's build)")
    for stage in p["final_stages"]:
        deps = p["stages"][stage]
        tree.add(f"{stage}" + (f"  <- {', '.join(deps)}" if deps else ""))
    if p["not_built"]:
        tree.add(f"[dim]not built for this release: {', '.join(p['not_built'])} (vLLM build "
                 f"{p['build_args']['VLLM_BUILD']}, triton_kernels {p['build_args']['TRITON_KERNELS']})[/dim]")
    out.print(tree)
    out.print(f"minimum NVIDIA driver (Linux): {p['min_driver']} (CUDA {p['build_args']['CUDA_VERSION']}; an older "
              f"driver fails at the first CUDA call)", highlight=False)
    for title, mapping in (("build arguments", p["build_args"]), ("labels", p["labels"]), ("tags", p["tags"])):
        table = Table(title=title, title_justify="left")
        table.add_column("name", no_wrap=True)
        table.add_column("value", overflow="fold")
        for k, v in mapping.items():
            table.add_row(k, v or "-")
        out.print(table)
    if p["unpinned"]:
        out.print("[yellow]pinned by tag only (resolve to digests/commits for a fully reproducible build):")
        for line in p["unpinned"]:
            out.print(f"  - {line}")
    if p.get("runtime_extras"):
        out.print("[bold]what vLLM's own final image installs, and this image[/bold] (releases [runtime_extras]):")
        for line in p["runtime_extras"]:
            out.print(f"  - {line}", highlight=False, markup=False)
    if p["standins"]:
        out.print("[yellow]STAND-IN: upstream inputs this mirror does not provide:")
        for line in p["standins"]:
            out.print(f"  - {line}")
    for line in p.get("warnings", []):
        out.print(f"[bold yellow]WARNING[/bold yellow] {line}", highlight=False)
    out.print(f"[bold]builder[/bold] {p['builder']}", highlight=False)
    out.print("[bold]build command[/bold]")
    out.print(shlex.join(p["build_command"]), soft_wrap=True, highlight=False, markup=False)


@app.command()
def lint() -> None:
    """Run hadolint on vllm/Dockerfile (every ignored rule carries its reason in the file)."""
    lint_dockerfile()
    out.print("hadolint: vllm/Dockerfile has no findings")
