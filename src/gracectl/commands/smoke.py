"""`gracectl smoke IMAGE`: run the image's smoke suite inside it; write the JUnit XML and the smoke record."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from gracectl.commands.options import GpusOpt
from gracectl.pipeline.workdir import DEFAULT_WORKDIR, SMOKE_JUNIT_FILE, SMOKE_RECORD_FILE
from gracectl.image.smoke import LEVEL_CHOICES, run_smoke

out = Console()


app = typer.Typer()


@app.command()
def smoke(
    image: Annotated[str, typer.Argument(help="local image (reference or ID)")],
    level: Annotated[str, typer.Option("--level", help=' | '.join(LEVEL_CHOICES))] = "imports",
    junit: Annotated[Optional[Path], typer.Option("--junit", help="JUnit XML output")] = None,
    record: Annotated[Optional[Path], typer.Option("--record", help="smoke record JSON output")] = None,
    gpus: GpusOpt = "all",
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="seconds for the whole run")] = None,
) -> None:
    """Run smoke_tests (baked into the image) at a level inside IMAGE; exit 6 if any test fails."""
    junit = junit or DEFAULT_WORKDIR / SMOKE_JUNIT_FILE
    record = record or DEFAULT_WORKDIR / SMOKE_RECORD_FILE
    rec = run_smoke(image, level=level, junit_path=junit, record_path=record, gpus=gpus, timeout=timeout)
    table = Table("test", "outcome", "note", title=f"smoke {level}: {image} ({rec['image_id'][:19]})",
                  title_justify="left")
    for t in rec["tests"]:
        table.add_row(t["name"], t["outcome"], t.get("message", ""))
    out.print(table)
    out.print(f"passed: {rec['counts']}; versions {rec['versions']}; record {record}", highlight=False)
