"""`gracectl release new VERSION` and `gracectl release check [NAME...]`: a release's pins derived from its own
sources on the site's package index (gracectl.releases.train), checked before any build."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from gracectl import environment
from gracectl.adapters.package_index import PackageIndex, default_cache
from gracectl.errors import ReleaseCheckError, UsageError
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.commands.options import MirrorOpt, registry_options
from gracectl.releases.mirrors import load_mirror
from gracectl.releases.manifest import releases_dir
from gracectl.releases.train import Choices, check_releases, new_release
from gracectl.releases.watch import BRANCH_PREFIX, watch, write_report

app = typer.Typer(help="Add a vLLM release (every pin derived from its own sources) and check manifests against "
                  "upstream.", no_args_is_help=True)

IndexOpt = Annotated[str, typer.Option("--index-url", help="the package index holding vLLM's sdist and the wheels "
                                       "it pins (a site's mirror; check: default each manifest's python.index_url "
                                       "through --mirror)")]
CacheOpt = Annotated[Optional[Path], typer.Option(
    "--cache-dir", help="where sdists, metadata and triton_kernels trees are kept (env GRACECTL_UPSTREAM_CACHE, "
    "default ~/.cache/gracectl/upstream)")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="only the cache, never the network (resolving is "
                                          "skipped)")]
TreeOpt = Annotated[Optional[list[str]], typer.Option(
    "--triton-kernels-tree", help="REF=DIR: the triton_kernels package folder of that ref, to check a pairing "
    "against (repeatable; default: fetched from the manifest's repository at its ref, through --mirror)")]


def _trees(specs: list[str] | None) -> dict[str, Path]:
    trees = {}
    for spec in specs or ():
        ref, sep, folder = spec.partition("=")
        if not sep or not (Path(folder) / "__init__.py").is_file():
            raise UsageError(f"--triton-kernels-tree {spec!r}: give REF=DIR, DIR a triton_kernels package folder")
        trees[ref] = Path(folder)
    return trees


def _index(url: str, cache: Path | None, offline: bool) -> PackageIndex:
    cache = cache or environment.upstream_cache(os.environ) or default_cache()
    return PackageIndex(url.rstrip("/"), cache, offline)


@app.command("new")
@registry_options()
def new(
    version: Annotated[str, typer.Argument(help="the vLLM release, e.g. 0.34.0")],
    index_url: IndexOpt = "https://pypi.org/simple",
    triton_kernels_ref: Annotated[str, typer.Option(
        "--triton-kernels-ref", help="the triton_kernels tag for site-packages (default: the tag of the Triton "
        "the release's torch requires; needs --reason)")] = "",
    override: Annotated[Optional[list[str]], typer.Option(
        "--override", help="NAME==VERSION for a pin the index cannot serve (repeatable; needs --reason)")] = None,
    # "\\[": rich markup would take an unescaped [provenance] for a style tag and print nothing.
    reason: Annotated[str, typer.Option("--reason", help="why the overrides (kept in \\[provenance])")] = "",
    ubuntu: Annotated[str, typer.Option("--ubuntu", help="Ubuntu of the CUDA base images")] = "24.04",
    vllm_build: Annotated[str, typer.Option("--vllm-build", help="wheel | source (the manifest's default; source stays unproven until CI runs its path: CLAWMINE.md)")] = "wheel",
    force: Annotated[bool, typer.Option("--force", help="rewrite manifests that exist")] = False,
    print_only: Annotated[bool, typer.Option("--print", help="print the manifests and the checks; write nothing")]
    = False,
    mirror: MirrorOpt = None,
    cache_dir: CacheOpt = None,
    tree: TreeOpt = None,
    no_digests: Annotated[bool, typer.Option("--no-digests", help="pin the CUDA base images by tag only (else "
                                             "their digests are read through the mirror)")] = False,
    *,
    access: RegistryAccess,
) -> None:
    """Write releases/v<VERSION>-tfa.toml and its fallback v<VERSION>.toml, every pin derived from the release's
    sdist and the metadata of what it pins; nothing is written unless the pairing and the resolution pass (a vLLM
    that cannot work with its own Triton's triton_kernels: the fallback alone, saying why)."""
    if (override or triton_kernels_ref) and not reason.strip():
        raise UsageError("--override and --triton-kernels-ref need --reason (it is kept in the manifest)")
    if vllm_build not in ("source", "wheel"):
        raise UsageError(f"--vllm-build must be source or wheel, got {vllm_build!r}")
    choices = Choices(index_url=index_url.rstrip("/"), ubuntu=ubuntu, vllm_build=vllm_build,
                      triton_kernels_ref=triton_kernels_ref, triton_kernels_reason=reason.strip(),
                      overrides=tuple((o, reason.strip()) for o in override or ()))
    written = new_release(version, _index(index_url, cache_dir, False), choices, mirror=load_mirror(mirror),
                          trees=_trees(tree), force=force, dry_run=print_only,
                          access=None if no_digests else access)
    for path in written.paths:
        print(f"wrote {path}" + (" (FALLBACK ONLY: no tfa image, see its first lines)" if written.no_tfa else ""))
    if written.paths:
        print("review: the [provenance] of each pin, the STAND-IN lines of `gracectl plan`, then commit releases/ and "
              "the Jenkinsfile")


@app.command("check")
def check(
    names: Annotated[Optional[list[str]], typer.Argument(help="releases (default: every manifest in releases/)")] = None,
    index_url: IndexOpt = "",
    offline: OfflineOpt = False,
    no_resolve: Annotated[bool, typer.Option("--no-resolve", help="skip resolving the requirement set")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also the pins that match")] = False,
    mirror: MirrorOpt = None,
    cache_dir: CacheOpt = None,
    tree: TreeOpt = None,
) -> None:
    """Re-derive every pin of each manifest from its release's sources: one line per drift, the triton_kernels
    pairing and the resolution; exit 14 when any fails."""
    failed = 0
    cache = cache_dir or environment.upstream_cache(os.environ) or default_cache()
    for report in check_releases(list(names or []), cache, index_url=index_url, offline=offline,
                                 mirror=load_mirror(mirror), resolve_set=not no_resolve, trees=_trees(tree)):
        shown = [line for line in report.lines if verbose or line.status != "ok"
                 or line.path.startswith(("pairing", "resolve"))]
        print(f"{report.release}: {len(report.lines)} checks, {len(report.failed)} failed")
        for line in shown:
            print(f"  {line}")
        failed += bool(report.failed)
    if failed:
        raise ReleaseCheckError(f"{failed} release(s) differ from upstream or would fail before a build (above)")


@app.command("watch")
def watch_cmd(
    index_url: IndexOpt = "https://pypi.org/simple",
    since: Annotated[str, typer.Option("--since", help="every release from this version on that releases/ lacks "
                                       "(default: those newer than the newest in releases/)")] = "",
    report: Annotated[Optional[Path], typer.Option("--report", help="the JSON report: one entry per release "
                                                   "(written / fallback-only / refused / pending)")] = None,
    push: Annotated[str, typer.Option("--push", help="git remote (URL or name) to push each release's manifests "
                                      "to, on a branch of its own; empty: write releases/ only")] = "",
    branch_prefix: Annotated[str, typer.Option("--branch-prefix", help="the branches' prefix (+ v<VERSION>)")]
    = BRANCH_PREFIX,
    mirror: MirrorOpt = None,
    cache_dir: CacheOpt = None,
    tree: TreeOpt = None,
) -> None:
    """Each vLLM release on the index that releases/ lacks, through `release new` and `release check`: one line
    per release and a JSON report; exit 0 whatever each release's outcome, 13 when the index cannot be reached,
    4 when a push fails."""
    directory = releases_dir()
    rep, error = watch(_index(index_url, cache_dir, False), Choices(index_url=index_url.rstrip("/")), directory,
                       mirror=load_mirror(mirror), trees=_trees(tree), since=since, repo=directory.parent,
                       remote=push, branch_prefix=branch_prefix)
    if report:
        write_report(rep, report)
    print(f"release watch: {len(rep['releases'])} new release(s) on {rep['index']} (newest in releases/: "
          f"{rep['newest_known'] or 'none'}) in {rep['seconds']} s" + (f"; report {report}" if report else ""))
    if error:
        raise error
