"""`gracectl rehearse`: the whole pipeline, for real, on the test bed (the main job's embedded default).

Walks the SAME ordered stage list as Jenkins (gracectl.pipeline.STAGES, via pipeline.run_stage):

  1. ACTION=build, PUSH, PROMOTE: plan -> build (linux/arm64) -> smoke (imports, under qemu) -> push -> promote
  2. the same with one input changed (the vLLM ref: the stand-in repo's second commit)
  3. ACTION=rollback: plan -> rollback (undo the last promotion)
  4. verify in the registry that the moving tag points at the first run's digest again.

Every step's time and digest go into a table; any failure stops the rehearsal with a non-zero exit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gracectl import pipeline
from gracectl.adapters.registry import Registry
from gracectl.image_ref import ImageRef
from gracectl.build import rebuilt_stages
from gracectl.errors import GraceError, TestbedError
from gracectl.pipeline import Params
from gracectl.release_ops import short
from gracectl.testbed import Testbed

DEFAULT_RELEASE = "v0.19.0-tfa"
DEFAULT_WORKDIR = Path("gracectl-out") / "rehearsal"


FIRST, SECOND, ROLLBACK = "build 1", "build 2 (vllm ref changed)", "rollback"


@dataclass
class Row:
    run: str
    stage: str
    seconds: float
    status: str
    detail: str = ""


class RehearsalFailed(GraceError):
    def __init__(self, message: str, rows: list[Row], exit_code: int):
        super().__init__(message)
        self.rows = rows
        self.exit_code = exit_code


def detail(stage: str, record: dict) -> str:
    """What the table shows for a stage: its digest or image, and the build's cache use."""
    if stage == "plan":
        return record.get("build_tag", "")
    if stage == "build":
        rebuilt = rebuilt_stages(record)
        return f"{short(record.get('image_id'))}, rebuilt: {', '.join(rebuilt) or 'nothing (all cached)'}"
    if stage == "smoke":
        counts = record.get("counts", {})
        return ", ".join(f"{n} {k}" for k, n in counts.items() if n) + f" ({record.get('level')})"
    if stage in ("push", "promote"):
        return short(record.get("digest"))
    if stage == "rollback":
        entry = record.get("history_entry") or {}
        return f"-> {short(entry.get('to'))}" if entry else "(already there)"
    return ""


def runs(release: str, registry: str, mirror: str, vllm_alt_ref: str, build_number: int) -> list[tuple[str, Params]]:
    common = dict(release=release, registry=registry, mirror=mirror, smoke_level="imports", smoke_gpus="none")
    return [
        (FIRST, Params(**common, push=True, promote=True, build_number=build_number,
                           run_id=f"rehearsal-{build_number}")),
        (SECOND, Params(**common, push=True, promote=True, build_number=build_number + 1,
                                              vllm_ref=vllm_alt_ref, run_id=f"rehearsal-{build_number + 1}")),
        (ROLLBACK, Params(**common, action="rollback", build_number=build_number + 2,
                            run_id=f"rehearsal-{build_number + 2}")),
    ]


def rehearse(release: str = DEFAULT_RELEASE, *, workdir: Path = DEFAULT_WORKDIR, build_number: int = 0,
             on_row=None) -> list[Row]:
    """Run the rehearsal; returns the rows, or raises RehearsalFailed (carrying the rows so far)."""
    bed = Testbed()
    status = bed.status()
    if not status["mirror_file"] or not status["components"]["registry"]["running"]:
        raise TestbedError("the test bed is not up (no mirror file or registry): run `gracectl testbed up` first")
    registry = bed.state.registry
    # Build tags are immutable: a fresh build number per rehearsal (seconds since the epoch) never collides.
    build_number = build_number or int(time.time())
    rows: list[Row] = []
    digests: dict[str, str] = {}

    def add(row: Row) -> None:
        rows.append(row)
        if on_row:
            on_row(row)

    for label, params in runs(release, registry, str(bed.mirror_path), bed.state.vllm_alt_ref, build_number):
        wd = workdir / label.split(" (")[0].replace(" ", "-")
        for stage in pipeline.stages_for(params):
            start = time.monotonic()
            try:
                record = pipeline.run_stage(stage.name, params, wd)
            except GraceError as exc:
                add(Row(label, stage.name, time.monotonic() - start, "FAILED", str(exc)))
                raise RehearsalFailed(f"rehearsal failed at {label} / {stage.name}: {exc}", rows,
                                      exc.exit_code) from None
            add(Row(label, stage.name, time.monotonic() - start, "passed", detail(stage.name, record)))
            if stage.name == "push":
                digests[label] = record["digest"]
    first, second = digests[FIRST], digests[SECOND]
    moving = ImageRef.parse(pipeline.read_output(workdir / ROLLBACK, pipeline.stage("plan"))["moving_tag"])
    start = time.monotonic()
    found = Registry(moving.registry).head_manifest(moving.repository, moving.tag)
    now = found.digest if found else "(no tag)"
    ok = now == first and first != second
    add(Row("verify", f"{moving.tag} = build 1", time.monotonic() - start, "passed" if ok else "FAILED", short(now)))
    if not ok:
        why = "both builds gave the same digest" if first == second else f"it points at {now}, not {first}"
        raise RehearsalFailed(f"rehearsal: after the rollback {moving} should point at build 1: {why}", rows, 1)
    return rows
