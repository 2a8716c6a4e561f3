"""`gracectl bench`: the triton_kernels MoE kernel benchmark, run inside the image, and its bench record.

The script is smoke_tests/bench_moe.py (baked into the image with the smoke suite, sharing its MoE routine);
it runs through the same container runner as the smoke suite and writes the record's GPU, versions and
results; gracectl adds the image reference, image ID and time.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

from gracectl.adapters import proc
from gracectl.errors import CommandFailedError, UsageError
from gracectl.smoke import OUT_IN_CONTAINER, SUITE_IN_IMAGE, now_iso, run_in_image, write_record

BENCH_SCRIPT = f"{SUITE_IN_IMAGE}/bench_moe.py"
DEFAULT_TOKENS = (16, 256, 2048, 8192)
RESULT_COLUMNS = ("name", "median_ms", "tflops", "ratio_vs_dense", "ratio_vs_loop")


def bench_args(tokens: Sequence[int]) -> list[str]:
    if not tokens or any(t <= 0 for t in tokens):
        raise UsageError(f"--tokens needs positive token counts, got {list(tokens)}")
    return [BENCH_SCRIPT, "--tokens", ",".join(map(str, tokens)), "--json", f"{OUT_IN_CONTAINER}/bench.json"]


def bench_record(image: str, iid: str, script_record: dict, created: str | None = None) -> dict:
    """The script's record with the common record fields first."""
    if script_record.get("kind") != "bench" or not isinstance(script_record.get("results"), list):
        raise CommandFailedError(f"bench script in {image} wrote no bench record (kind={script_record.get('kind')!r})")
    return {"kind": "bench", "schema": 1, "image": image, "image_id": iid, "created": created or now_iso(),
            **{k: v for k, v in script_record.items() if k not in ("kind", "schema")}}


def run_bench(image: str, *, record_path: str | os.PathLike, tokens: Sequence[int] = DEFAULT_TOKENS,
              gpus: str = "all", timeout: float | None = None) -> dict:
    """Run the MoE kernel benchmark in the local image (needs a GPU), write and return the bench record."""
    args = bench_args(tokens)
    iid, result, out_dir = run_in_image(image, args, gpus=gpus, timeout=timeout)
    try:
        out = out_dir / "bench.json"
        if result.returncode != 0 or not out.exists():
            raise CommandFailedError(f"bench in {image} failed (exit {result.returncode}): "
                                     f"{proc.last_line(result.stdout) or 'no output'}",
                                     returncode=result.returncode, output=result.stdout)
        record = bench_record(image, iid, json.loads(out.read_text()))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    write_record(record_path, record)
    return record
