"""`gracectl bench IMAGE`: the triton_kernels MoE kernel and/or vLLM engine benchmark inside the image -> bench
record."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from gracectl.image.bench import DEFAULT_TOKENS, PARTS, RESULT_COLUMNS, run_bench
from gracectl.commands.options import GpusOpt
from gracectl.errors import UsageError
from gracectl.pipeline.workdir import BENCH_RECORD_FILE, DEFAULT_WORKDIR

out = Console()


def parse_tokens(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--tokens takes comma-separated integers, not {text!r}") from None


app = typer.Typer()


@app.command()
def bench(
    image: Annotated[str, typer.Argument(help="local image (reference or ID)")],
    record: Annotated[Optional[Path], typer.Option("--record", help="bench record JSON output")] = None,
    tokens: Annotated[str, typer.Option("--tokens", help="token counts")] = ",".join(map(str, DEFAULT_TOKENS)),
    gpus: GpusOpt = "all",
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="seconds for the whole run")] = None,
    part: Annotated[str, typer.Option("--part", help=f"what to time: {' | '.join(PARTS)}")] = "moe",
) -> None:
    """Time triton_kernels topk + matmul_ogs MoE GEMMs (gpt-oss shapes) in IMAGE against cuBLAS and a
    PyTorch loop (part moe), and/or vLLM's offline engine on tiny models (part engine: TTFT, time per
    output token, tokens/s); write the bench record."""
    record = record or DEFAULT_WORKDIR / BENCH_RECORD_FILE
    rec = run_bench(image, record_path=record, tokens=parse_tokens(tokens), gpus=gpus, timeout=timeout,
                    part=part)
    gpu = rec.get("gpu") or {}
    device = (f"{gpu.get('name')} (driver {gpu.get('driver')})" if gpu
              else f"CPU {(rec.get('cpu') or {}).get('model')}, no GPU")
    columns = [c for c in RESULT_COLUMNS if any(r.get(c) is not None for r in rec["results"])]
    table = Table(*columns, title=f"bench {image} on {device}", title_justify="left")
    for r in rec["results"]:
        table.add_row(*("-" if r.get(c) is None else str(r[c]) for c in columns))
    out.print(table)
    out.print(f"clocks {gpu.get('clocks')}; versions {rec.get('versions')}; record {record}", highlight=False)
