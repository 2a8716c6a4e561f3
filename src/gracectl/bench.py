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
from gracectl.records import utc_now, write_json
from gracectl.smoke import OUT_IN_CONTAINER, SUITE_IN_IMAGE, run_in_image

BENCH_SCRIPT = f"{SUITE_IN_IMAGE}/bench_moe.py"
DEFAULT_TOKENS = (16, 256, 2048, 8192)
RESULT_COLUMNS = ("name", "median_ms", "eager_ms", "launch_ms", "tflops", "ratio_vs_dense", "hbm_gbps",
                  "ratio_vs_hbm_peak", "ratio_vs_loop", "rel_err_vs_loop", "rel_tol", "tokens_per_s", "refused",
                  "skipped")
# The figures a floor can hold the MoE GEMM rows to: the FLOP ratio to a dense cuBLAS matmul (meaningful where
# the GEMMs are compute-bound, ~2048 tokens and up) and the achieved HBM bandwidth over the GPU's peak
# (meaningful where they are memory-bound: decode sizes). The promotion gate's median_ms comparison already
# covers both on one GPU model (for fixed shapes both are proportional to 1 / median_ms).
GATE_FIGURES = ("ratio_vs_dense", "ratio_vs_hbm_peak")
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


def parse_floor(item: str) -> tuple[str, float]:
    """`--floor FIGURE[@TOKENS]=VALUE` -> ("FIGURE" or "FIGURE@TOKENS", VALUE). With @TOKENS the floor holds only
    the rows of that token count (e.g. ratio_vs_hbm_peak@16: decode size, where the GEMMs are memory-bound)."""
    key, _, value = item.partition("=")
    figure, at, tokens = key.partition("@")
    try:
        floor = float(value)
    except ValueError:
        raise UsageError(f"--floor {item!r}: write FIGURE[@TOKENS]=NUMBER") from None
    if figure not in GATE_FIGURES or not 0 < floor < 10 or (at and not tokens.isdigit()):
        raise UsageError(f"--floor {item!r}: FIGURE is one of {', '.join(GATE_FIGURES)}, @TOKENS a token count, "
                         "the floor above 0")
    return key, floor


def row_tokens(name: str) -> int | None:
    """The token count of a result row named ..._tokens<N>."""
    _, sep, tail = name.rpartition("_tokens")
    return int(tail) if sep and tail.isdigit() else None


def figure_findings(record: dict, floors: dict[str, float], *, name_prefix: str = "moe_") -> list[str]:
    """What falls below a floor: {figure or figure@tokens: floor} over GATE_FIGURES, for each result row whose
    name starts with name_prefix (and is of that token count) and carries that figure; a row without it, such as
    routing, is not judged. Not passed either: a row in scope that bench_moe.py REFUSED (its accuracy outside
    vLLM's tolerance, its figures withheld); a floor no row carries; a record whose median_ms is not the GPU's
    time (no `timing`: an eager record from before schema 2, whose figures at decode sizes are the host's launch
    path)."""
    for key in floors:
        parse_floor(f"{key}={floors[key]}")
    findings = []
    if floors and not record.get("timing"):
        findings.append("the bench record does not say its median_ms is GPU time (no `timing`: an eager record "
                        "from before schema 2, launch-bound at decode sizes): its figures cannot be held to a floor")
    for key, floor in floors.items():
        figure, _, tokens = key.partition("@")
        scope = [r for r in record.get("results") or [] if str(r.get("name", "")).startswith(name_prefix)
                 and (not tokens or row_tokens(str(r.get("name", ""))) == int(tokens))]
        refused = [r for r in scope if r.get("refused")]
        rows = [r for r in scope if isinstance(r.get(figure), (int, float))]
        if not rows and not refused:
            findings.append(f"no {name_prefix}* result{' of ' + tokens + ' tokens' if tokens else ''} carries "
                            f"{figure}: the floor {floor} cannot be checked")
        findings += [f"{r['name']}: refused by the bench ({r['refused']}), so {key} {floor} is not shown"
                     for r in refused]
        findings += [f"{r['name']}: {figure} {r[figure]} below the floor {floor}" for r in rows if r[figure] < floor]
    return findings


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
