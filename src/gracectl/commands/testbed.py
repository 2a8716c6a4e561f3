"""`gracectl testbed up | status | down`: the local test bed (dockerd, registry, qemu, mirrors);
`gracectl rehearse`: the whole pipeline on it."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from gracectl.adapters.registry_access import RegistryAccess
from gracectl.commands.options import JsonOpt, registry_options
from gracectl.errors import UsageError
from gracectl import environment
from gracectl.testbed import Testbed, state
from gracectl.testbed.mirror_file import REAL, STACKS, STANDIN
from gracectl.testbed.rehearse import DEFAULT_RELEASE, DEFAULT_WORKDIR, RehearsalFailed, Row, real_releases, rehearse

out = Console(width=None if sys.stdout.isatty() else 150)  # CI logs: no wrapping of digests at 80 columns
err = Console(stderr=True)


def rows_table(rows: list[Row], title: str) -> Table:
    table = Table("run", "stage", "seconds", "status", "digest / detail", title=title, title_justify="left")
    for r in rows:
        table.add_row(r.run, r.stage, f"{r.seconds:.1f}", r.status, r.detail)
    return table


def configure_bed(env) -> None:
    """The test bed's folders (GRACECTL_STATE_DIR, XDG_CACHE_HOME), handed down here, at its command's edge."""
    state.use_dirs(state=environment.state_dir(env), cache_home=environment.user_cache_dir(env))


app = typer.Typer()
testbed_app = typer.Typer(help="The local test bed: real dockerd, registry, qemu and stand-in mirrors.",
                          no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")


@testbed_app.command()
def up(
    registry_port: Annotated[Optional[int], typer.Option("--registry-port", help="default 5000")] = None,
    git_port: Annotated[Optional[int], typer.Option("--git-port", help="default 9418")] = None,
    index_port: Annotated[Optional[int], typer.Option("--index-port", help="default 5080")] = None,
    proxy_port: Annotated[Optional[int], typer.Option("--proxy-port", help="the PyPI proxy's; default 5090")] = None,
) -> None:
    """Install, start and fill what is missing; a second `up` changes nothing."""
    configure_bed(os.environ)
    bed = Testbed()
    bed.up(registry_port, git_port, index_port, proxy_port)
    print(bed.mirror_path)


@testbed_app.command()
def status(as_json: JsonOpt = False) -> None:
    """What runs where: pids, ports, images, repositories, the mirror file."""
    configure_bed(os.environ)
    s = Testbed().status()
    if as_json:
        print(json.dumps(s, indent=2))
        return
    table = Table("component", "running", "pid", "where", title=f"test bed in {s['state_dir']}",
                  title_justify="left")
    for name, c in s["components"].items():
        where = c.get("address") or ("started by the test bed" if c.get("started_by_testbed") else "")
        table.add_row(name, "yes" if c["running"] else "no", str(c.get("pid") or "-"), where)
    out.print(table)
    images = Table("image", "in registry", title="base images", title_justify="left")
    for ref, present in s["images"].items():
        images.add_row(ref, "yes" if present else "no")
    out.print(images)
    for url, refs in s["repos"].items():
        out.print(f"repo {url}: " + ", ".join(f"{k}={v[:12]}" for k, v in refs.items()), highlight=False)
    out.print(f"mirror file: {s['mirror_file'] or '(none: run `gracectl testbed up`)'}", highlight=False)


@testbed_app.command()
def down() -> None:
    """Stop what `up` started (caches, registry data and the mirror file stay)."""
    configure_bed(os.environ)
    stopped = Testbed().down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command("rehearse")
@registry_options(deadline=False)  # a push moves layers for as long as that takes
def rehearse_command(
    release: Annotated[str, typer.Option("--release", help="release to rehearse")] = DEFAULT_RELEASE,
    workdir: Annotated[Path, typer.Option("--workdir", help="stage outputs, one folder per run")] = DEFAULT_WORKDIR,
    build_number: Annotated[int, typer.Option("--build-number", help="first build number (default: now)")] = 0,
    stack: Annotated[str, typer.Option("--stack", help="standin: the stand-in packages (fast); real: the real "
                                       "upstream packages from PyPI, both releases in vLLM wheel mode")] = STANDIN,
    *,
    access: RegistryAccess,
) -> None:
    """On the test bed: build, smoke, push, promote; again with the vLLM ref changed; roll back; verify.
    With --stack real: both releases from the real upstream packages (see gracectl.testbed.rehearse)."""
    if stack not in STACKS:
        raise UsageError(f"--stack must be one of {', '.join(STACKS)}, got {stack!r}")
    configure_bed(os.environ)

    def progress(row: Row) -> None:
        err.print(f"rehearse: {row.run} / {row.stage}: {row.status} in {row.seconds:.1f}s {row.detail}",
                  highlight=False)

    started = time.monotonic()
    try:
        rows = rehearse(release, access=access, workdir=workdir, build_number=build_number, on_row=progress,
                        stack=stack)
    except RehearsalFailed as exc:
        out.print(rows_table(exc.rows, "rehearsal FAILED"))
        raise
    what = (f"the real stack ({', '.join(real_releases(release).values())}; vLLM wheel mode)" if stack == REAL
            else release)
    # wall time: some rows ran side by side (`vllm serve --help` beside the smoke stage)
    out.print(rows_table(rows, f"rehearsal of {what}: passed in {time.monotonic() - started:.0f}s"))
