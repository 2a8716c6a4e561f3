"""`gracectl build RELEASE`: build the plan, stream progress by stage, write the build record."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from gracectl import settings
from gracectl.adapters import docker
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.image.build import BuildResult, compare, layers, read_record, shorten
from gracectl.image.build import build as run_build
from gracectl.commands.options import (BuilderOpt, BuildNumberOpt, ImageTagOpt, MirrorOpt, RegistryOpt, ReleaseArg,
                                       TargetOpt, VllmBuildOpt, VllmRefOpt, registry_options, with_default_registry)
from gracectl.errors import GraceError, UsageError
from gracectl.pipeline.workdir import BUILD_RECORD_FILE, DEFAULT_WORKDIR
from gracectl.image.plan import FINAL_STAGE, plan_for
from gracectl.image import sbom
from gracectl.record_files import write_json
from gracectl.tags.records import newest_record
from gracectl.tags.moves import publish
from gracectl.tags.trust import verify_image

out = Console(stderr=True)  # `build` reports on stderr: its stdout stays free for scripts
report_out = Console(width=None if sys.stdout.isatty() else 150)
DEFAULT_RECORD = DEFAULT_WORKDIR / BUILD_RECORD_FILE


def stage_table(record: dict, title: str) -> Table:
    table = Table("stage", "steps", "cached", "seconds", "cache", title=title, title_justify="left")
    for name, s in record.get("stages", {}).items():
        table.add_row(name, str(s["steps"]), str(s["cached"]), f"{s['seconds']:.1f}",
                      "hit" if s["cache_hit"] else ("FAILED" if s.get("failed") else "miss"))
    return table


def push_build(result: BuildResult, access: RegistryAccess) -> None:
    """Push the build under its immutable build tag (tags.moves.publish, by digest); the record says so."""
    rec = result.record
    try:
        published = publish(rec["image"], rec["image"], access=access)
        rec.update(digest=published.digest, pushed=f"{published.ref.rsplit(':', 1)[0]}@{published.digest}",
                   status="pushed")
    except GraceError as exc:
        rec["error"] = f"push failed: {exc}"
        raise
    finally:
        write_json(result.record_path, rec)


app = typer.Typer()


@app.command()
@registry_options(deadline=False)  # --push moves layers for as long as that takes
def build(
    release: ReleaseArg,
    platform: Annotated[str, typer.Option("--platform", help="override the release's platform")] = "",
    push: Annotated[bool, typer.Option("--push", help="push under the immutable build tag (by digest)")] = False,
    mirror: MirrorOpt = None,
    vllm_ref: VllmRefOpt = "",
    image_tag: ImageTagOpt = "",
    build_number: BuildNumberOpt = 0,
    registry: RegistryOpt = "",
    record: Annotated[Optional[Path], typer.Option("--record", help="build record JSON")] = None,
    vllm_build: VllmBuildOpt = "",
    target: TargetOpt = FINAL_STAGE,
    builder: BuilderOpt = "",
    registry_cache: Annotated[bool, typer.Option(
        "--registry-cache", help="share BuildKit's cache through the registry (<image>:buildcache, mode=max)")] = False,
    *,
    access: RegistryAccess,
) -> None:
    """Build RELEASE with vllm/Dockerfile exactly as `gracectl plan` shows it; write the build record.
    With --builder and --push the builder pushes by digest itself (nothing is loaded into this node's dockerd)."""
    plan = plan_for(release, mirror, vllm_ref, image_tag, build_number, registry, vllm_build, target, builder)
    if platform:
        if platform not in ("linux/arm64", "linux/amd64"):
            raise UsageError(f"--platform must be linux/arm64 or linux/amd64, got {platform!r}")
        plan.platform = platform
    if (push or registry_cache) and not registry:
        raise UsageError("--push and --registry-cache need --registry HOST:PORT (or GRACECTL_REGISTRY)")
    by_builder = push and bool(builder)  # a buildx builder pushes by digest itself
    result = run_build(plan, record_path=record or DEFAULT_RECORD, mirror_file=str(mirror) if mirror else "",
                       registry_cache=registry_cache, push=by_builder)
    rec = result.record
    if push and not by_builder:
        push_build(result, access)
    out.print(stage_table(rec, f"{rec['image']} built in {rec['seconds']:.1f}s"))
    cached = sum(s["cached"] for s in rec["stages"].values())
    out.print(f"{rec['builder']}{' node ' + rec['node'] if rec.get('node') else ''}: "
              f"{cached} of {sum(s['steps'] for s in rec['stages'].values())} steps cached", highlight=False)
    out.print(f"image {rec['image_id'] or rec['digest']} ({rec.get('size', 0) / 1e6:.1f} MB)"
              + (f", pushed {rec['pushed']}" if rec.get("pushed") else "")
              + f"; record {result.record_path}; log {rec['log']}", highlight=False)


def load_sbom(source: str, access: RegistryAccess) -> dict:
    """An SBOM record: a record file (sbom-record.json), or the newest one stored with an image in a registry."""
    path = Path(source)
    if path.is_file():
        return sbom.read_record(path)
    return newest_record(settings.image_reference(source, os.environ), sbom.KIND, access)


def package_diff(a: str, b: str, access: RegistryAccess) -> None:
    """The Python package sets of two images (their SBOM records) side by side: what going from A to B changes."""
    ra, rb = load_sbom(a, access), load_sbom(b, access)
    d = sbom.diff(ra["bom"], rb["bom"])
    table = Table("package", "A", "B", title=f"packages: A = {ra['image']} ({ra['packages']}), "
                  f"B = {rb['image']} ({rb['packages']})", title_justify="left")
    for name, version in d["removed"].items():
        table.add_row(name, version, "-")
    for name, version in d["added"].items():
        table.add_row(name, "-", version)
    for name, c in d["changed"].items():
        cells = [c[side]["version"] + ("" if c["from"]["origin"] == c["to"]["origin"] else f" ({c[side]['origin']})")
                 for side in ("from", "to")]
        table.add_row(name, *cells)
    report_out.print(table)
    report_out.print(f"  {len(d['removed'])} only in A, {len(d['added'])} only in B, {len(d['changed'])} changed, "
                     f"{d['same']} the same", highlight=False)


@app.command()
@registry_options()
def report(
    records: Annotated[Optional[List[Path]], typer.Argument(help="build record JSON files (gracectl build --record)")]
    = None,
    show_layers: Annotated[bool, typer.Option("--layers/--no-layers", help="final image size by layer")] = True,
    packages: Annotated[Optional[List[str]], typer.Option(
        "--packages", help="twice: A and B, each an SBOM record file or REGISTRY/REPO:TAG|@DIGEST; diffs their "
        "Python packages (what a rollback from A to B changes)")] = None,
    provenance_of: Annotated[Optional[str], typer.Option(
        "--provenance", help="REGISTRY/REPO:TAG|@DIGEST: its signed build provenance (needs GRACECTL_TRUST_KEY)",
        callback=with_default_registry)] = None,
    *,
    access: RegistryAccess,
) -> None:
    """Per-stage time and cache hits of each build, the image's size by layer, and what changed between builds;
    with --packages A --packages B, the two images' Python package sets."""
    if packages is not None and len(packages) != 2:
        raise UsageError(f"--packages takes exactly two images (A and B), got {len(packages)}")
    if not records and not packages and not provenance_of:
        raise UsageError("give build record files, --packages A --packages B, or --provenance IMAGE")
    if provenance_of:
        found = verify_image(provenance_of, access=access)
        prov = found["provenance"]
        if prov is None:
            raise UsageError(f"{found['image']} has no provenance attestation: it was pushed unsigned")
        report_out.print(f"{found['image']}: provenance {'VALID' if prov['valid'] else 'NOT VALID'} "
                         f"({prov['why']}); signature {'VALID' if found['signature']['valid'] else 'NOT VALID'}",
                         highlight=False)
        for line in prov.get("summary", []):
            report_out.print(f"  {line}", highlight=False)
        for dep in (prov.get("statement") or {}).get("predicate", {}).get("buildDefinition", {}).get(
                "resolvedDependencies", []):
            pin = next(iter((dep.get("digest") or {}).items()), ("", ""))
            report_out.print(f"    {dep.get('name') or dep.get('uri')}: {pin[0]} {pin[1]}".rstrip(), highlight=False)
    if packages:
        package_diff(*packages, access)
    recs = [read_record(p) for p in records or []]
    for path, rec in zip(records or [], recs):
        report_out.print(stage_table(rec, f"{path}: {rec['image']} {rec.get('status')} in {rec.get('seconds', 0):.1f}s, "
                                   f"{rec.get('size', 0) / 1e6:.1f} MB"))
        if show_layers and rec.get("image_id") and docker.inspect_image(rec["image_id"]):
            table = Table("MB", "layer made by", title=f"layers of {rec['image_id'][:19]}", title_justify="left")
            for layer in layers(rec["image_id"]):
                if layer["size"]:
                    table.add_row(f"{layer['size'] / 1e6:.1f}", shorten(layer["created_by"], 110))
            report_out.print(table)
    for a, b in zip(recs, recs[1:]):
        diff = compare(a, b)
        title = f"{a['image']} -> {b['image']}"
        table = Table("stage", "A s", "A cache", "B s", "B cache", title=title, title_justify="left")
        for name, s in diff["stages"].items():
            cells = []
            for side in (s["a"], s["b"]):
                cells += [f"{side['seconds']:.1f}", "hit" if side["cache_hit"] else "miss"] if side else ["-", "-"]
            table.add_row(name, *cells)
        report_out.print(table)
        for k, (va, vb) in diff["changed_build_args"].items():
            report_out.print(f"  changed {k}: {va} -> {vb}", highlight=False)
        (sa, sb), (ta, tb) = diff["size"], diff["seconds"]
        report_out.print(f"  rebuilt in B: {', '.join(diff['rebuilt'][1]) or 'nothing'}; time {ta:.1f}s -> {tb:.1f}s; "
                  f"size {(sa or 0) / 1e6:.1f} -> {(sb or 0) / 1e6:.1f} MB", highlight=False)
