"""`gracectl bench`: the triton_kernels MoE kernel benchmark, run inside the image, and its bench record.

The script is smoke_tests/bench_moe.py (baked into the image with the smoke suite, sharing its MoE routine);
it runs through the same container runner as the smoke suite and writes the record's GPU, versions and
results; gracectl adds the image reference, image ID and time.
Part `engine` is smoke_tests/bench_engine.py (vLLM end to end on tiny models); part `all` runs both, one
container each, into one record.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence

from gracectl.adapters import proc
from gracectl.errors import CommandFailedError, UsageError
from gracectl.record_files import utc_now, write_json
from gracectl.image.smoke import OUT_IN_CONTAINER, SUITE_IN_IMAGE, run_in_image

BENCH_SCRIPT = f"{SUITE_IN_IMAGE}/bench_moe.py"
DEFAULT_TOKENS = (16, 256, 2048, 8192)
RESULT_COLUMNS = ("name", "median_ms", "eager_ms", "launch_ms", "tflops", "ratio_vs_dense", "hbm_gbps",
                  "ratio_vs_hbm_peak", "ratio_vs_loop", "rel_err_vs_loop", "rel_tol", "tokens_per_s", "refused",
                  "skipped")
ENGINE_SCRIPT = f"{SUITE_IN_IMAGE}/bench_engine.py"
PARTS = ("moe", "engine", "all")


def bench_args(tokens: Sequence[int]) -> list[str]:
    if not tokens or any(t <= 0 for t in tokens):
        raise UsageError(f"--tokens needs positive token counts, got {list(tokens)}")
    return [BENCH_SCRIPT, "--tokens", ",".join(map(str, tokens)), "--json", f"{OUT_IN_CONTAINER}/bench.json"]


def part_args(part: str, tokens: Sequence[int]) -> list[list[str]]:
    """The script command line(s) of a part; each writes its record to the file its --json names."""
    if part not in PARTS:
        raise UsageError(f"unknown bench part {part!r}: choose one of {', '.join(PARTS)}")
    engine = [ENGINE_SCRIPT, "--json", f"{OUT_IN_CONTAINER}/bench-engine.json"]
    return {"moe": [bench_args(tokens)], "engine": [engine], "all": [bench_args(tokens), engine]}[part]


def merge_script_records(part: str, records: Sequence[dict]) -> dict:
    """One script record from the parts' records: their results one after the other, other fields merged."""
    merged: dict = {}
    for rec in records:
        merged.update(rec)
    return {**merged, "part": part, "results": [r for rec in records for r in rec.get("results") or []]}


def bench_record(image: str, iid: str, script_record: dict, created: str | None = None) -> dict:
    """The script's record with the common record fields first."""
    if script_record.get("kind") != "bench" or not isinstance(script_record.get("results"), list):
        raise CommandFailedError(f"bench script in {image} wrote no bench record (kind={script_record.get('kind')!r})")
    return {"kind": "bench", "schema": 1, "image": image, "image_id": iid, "created": created or utc_now(),
            **{k: v for k, v in script_record.items() if k not in ("kind", "schema")}}


def run_bench(image: str, *, record_path: str | os.PathLike, tokens: Sequence[int] = DEFAULT_TOKENS,
              gpus: str = "all", timeout: float | None = None, part: str = "moe") -> dict:
    """Run the benchmark part(s) in the local image (the MoE part needs a GPU), write and return the record."""
    script_records = []
    deadline = time.monotonic() + timeout if timeout else None  # --timeout is for all parts together
    for args in part_args(part, tokens):
        left = max(deadline - time.monotonic(), 1.0) if deadline else None
        iid, result, out_dir = run_in_image(image, args, gpus=gpus, timeout=left)
        try:
            out = out_dir / os.path.basename(args[-1])
            if result.returncode != 0 or not out.exists():
                raise CommandFailedError(f"bench {os.path.basename(args[0])} in {image} failed "
                                         f"(exit {result.returncode}): {proc.last_line(result.stdout) or 'no output'}",
                                         returncode=result.returncode, output=result.stdout)
            script_records.append(json.loads(out.read_text()))
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
    record = bench_record(image, iid, merge_script_records(part, script_records))
    write_json(record_path, record)
    return record
