"""`gracectl build`: run a Plan's build command, follow BuildKit stage by stage, write the build record.

The command is exactly `Plan.build_command()` on the plan's builder (plus --iidfile, or buildx's --metadata-file
when a buildx builder pushes by digest itself: gracectl.image.builders), run from the repository root. BuildKit's `--progress plain` output is parsed as it streams:

    #12 [build 3/4] RUN --mount=type=cache,...           a step starts (vertex 12, stage build)
    #12 0.512 some output                                 its output
    #12 CACHED                                            taken from the cache
    #12 DONE 12.3s                                        ran for 12.3 s
    #12 ERROR: process "/bin/bash ..." did not complete   failed

The build record (JSON, kind "build") holds the release, every pin (the plan's build args and labels), the
image ID and size, per-stage time and cache hits, the full log's path, start and end, and what the build resolved
("resolved": base image digests, git commits, wheel sha256s; gracectl.image.build_inputs), which its provenance names.
A failed build writes a record with status "failed" and moves no tag (BuildKit tags only a finished image).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gracectl.image import build_inputs, builders
from gracectl.adapters import docker, proc
from gracectl.errors import CommandFailedError, GraceError
from gracectl.checkout import REPO_ROOT
from gracectl.image.plan import Plan, stage_closure
from gracectl.record_files import utc_now, write_json

RECORD_SCHEMA = 1
# "[stage 3/4]", "[linux/arm64 stage 3/4]" (buildx with a platform), not "[internal]" nor "[stage internal]".
STEP_RE = re.compile(r"^#(\d+) \[(?:[a-z0-9]+/[a-z0-9/]+ )?([A-Za-z0-9._-]+) (\d+)/(\d+)\] (.*)$")
DONE_RE = re.compile(r"^#(\d+) DONE (\d+(?:\.\d+)?)s$")
CACHED_RE = re.compile(r"^#(\d+) CACHED$")
ERROR_RE = re.compile(r"^#(\d+) ERROR:? (.*)$")
OUTPUT_RE = re.compile(r"^#(\d+) \d+\.\d+ (.*)$")


@dataclass
class Step:
    stage: str
    index: int
    total: int
    text: str
    status: str = "running"  # running | done | cached | error
    seconds: float = 0.0
    error: str = ""
    tail: list[str] = field(default_factory=list)  # last output lines (shown when the step fails)


class BuildProgress:
    """Parses BuildKit plain progress lines; `feed` returns what to tell the operator (or None)."""

    def __init__(self):
        self.steps: dict[int, Step] = {}

    def feed(self, line: str) -> str | None:
        if m := STEP_RE.match(line):
            vid = int(m.group(1))
            if vid in self.steps:  # BuildKit repeats the header when a step's output resumes
                return None
            step = Step(m.group(2), int(m.group(3)), int(m.group(4)), m.group(5))
            self.steps[vid] = step
            return f"{step.stage} [{step.index}/{step.total}] {shorten(step.text)}"
        if m := CACHED_RE.match(line):
            step = self.steps.get(int(m.group(1)))
            if step:
                step.status = "cached"
                return f"{step.stage} [{step.index}/{step.total}] cached"
            return None
        if m := DONE_RE.match(line):
            step = self.steps.get(int(m.group(1)))
            if step and step.status == "running":
                step.status, step.seconds = "done", float(m.group(2))
                return f"{step.stage} [{step.index}/{step.total}] done in {step.seconds:.1f}s"
            return None
        if m := ERROR_RE.match(line):
            step = self.steps.get(int(m.group(1)))
            if step:
                step.status, step.error = "error", m.group(2)
                return f"{step.stage} [{step.index}/{step.total}] FAILED: {m.group(2)}"
            return None
        if m := OUTPUT_RE.match(line):
            step = self.steps.get(int(m.group(1)))
            if step:
                step.tail = (step.tail + [m.group(2)])[-20:]
        return None

    def stages(self) -> dict[str, dict]:
        """Per stage, in the order BuildKit reported them: steps, how many cached, seconds (the sum of its steps'
        DONE times: BuildKit runs stages in parallel and may print a quiet step's header only when it ends,
        so our own clock cannot time a stage), cache hit (every step cached; the FROM of an image is not counted)."""
        out: dict[str, dict] = {}
        for step in self.steps.values():
            s = out.setdefault(step.stage, {"steps": 0, "cached": 0, "ran": 0, "failed": 0, "seconds": 0.0})
            s["seconds"] += step.seconds
            if step.text.startswith("FROM ") and step.status != "error":
                continue  # resolving/pulling the base image is never "CACHED": not a step of ours
            s["steps"] += 1
            s["cached"] += step.status == "cached"
            s["ran"] += step.status == "done"
            s["failed"] += step.status == "error"
        for s in out.values():
            s["seconds"] = round(s["seconds"], 1)
            s["cache_hit"] = s["cached"] == s["steps"]
        return out

    def failed_step(self) -> Step | None:
        return next((s for s in self.steps.values() if s.status == "error"), None)


def shorten(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class BuildResult:
    record: dict
    record_path: Path


def build(plan: Plan, *, record_path: Path, log_path: Path | None = None, registry_cache: bool = False,
          mirror_file: str = "", echo: Callable[[str], None] | None = None, push: bool = False,
          by_digest: bool = False) -> BuildResult:
    """Build `plan` into a local image tagged with its immutable build tag; write the build record.
    (Pushing is gracectl.tags.publish, the one push path from dockerd: `gracectl build --push` and the pipeline's
    push stage; a named buildx builder pushes by itself.)

    `registry_cache`: share BuildKit's cache through the plan's registry (Plan.build_command says how).
    `push` (a buildx builder only): the builder pushes the image by digest itself and nothing is loaded into the
    node's dockerd; the record's digest is the one the builder pushed. `by_digest`: pushed untagged (the pipeline's
    build stage: the push stage tags it once its smoke passed).
    """
    echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
    record_path = Path(record_path)
    log_path = Path(log_path or record_path.with_suffix(".log"))
    record_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if push and not plan.builder:
        raise GraceError("only a buildx builder pushes while it builds: name one (--builder), or push afterwards")
    progress = BuildProgress()
    started, t0 = utc_now(), time.monotonic()
    record = {
        "kind": "build", "schema": RECORD_SCHEMA, "status": "failed", "image": plan.build_tag, "image_id": "",
        "digest": "", "created": started, "release": plan.release, "platform": plan.platform,
        "target": plan.target, "tags": {"build": plan.build_tag, "moving": plan.moving_tag},
        "source_commit": plan.source_commit, "mirror_file": mirror_file, "build_args": plan.build_args,
        "labels": plan.labels, "builder": builders.describe(plan.builder), "log": str(log_path), "started": started,
    }
    with tempfile.TemporaryDirectory() as tmp:
        iidfile, metadata = Path(tmp) / "iid", Path(tmp) / "metadata.json"
        cmd, env = plan.build_command(tags=[plan.build_tag], registry_cache=registry_cache, push=push,
                                      by_digest=by_digest, metadata_file=str(metadata) if plan.builder else None)
        full = docker.command(cmd if push else [*cmd[:-1], "--iidfile", str(iidfile), cmd[-1]])
        stages = len(stage_closure(plan.stages, plan.target))
        echo(f"building {plan.build_tag} ({plan.platform}, target {plan.target}, {stages} stages); log {log_path}")
        with open(log_path, "w") as log:
            def on_line(line: str) -> None:
                log.write(line + "\n")
                msg = progress.feed(line)
                if msg:
                    echo(f"[{time.monotonic() - t0:7.1f}s] {msg}")

            result = proc.run(full, env=env, cwd=REPO_ROOT, check=False, on_line=on_line)
        image_id = iidfile.read_text().strip() if iidfile.exists() else ""
        pushed = builders.read_metadata(metadata) if push and result.returncode == 0 else None
    record.update(finished=utc_now(), seconds=round(time.monotonic() - t0, 1), stages=progress.stages())
    if result.returncode != 0 or not (image_id or pushed):
        record["error"] = failure_message(progress, result, log_path)
        write_json(record_path, record)
        raise CommandFailedError(record["error"], returncode=result.returncode)
    if pushed:  # nothing local to inspect: the registry holds it, by digest
        record.update(status="pushed", digest=pushed.digest, node=pushed.node,
                      pushed=f"{plan.build_tag.rsplit(':', 1)[0]}@{pushed.digest}")
        write_json(record_path, record)
        return BuildResult(record, record_path)
    info = docker.inspect_image(image_id) or {}
    record.update(image_id=image_id, size=int(info.get("Size") or 0), status="built")
    actual = (info.get("Config") or {}).get("Labels") or {}
    drift = {k: (v, actual.get(k)) for k, v in plan.labels.items() if actual.get(k) != v}
    if drift:
        record["error"] = "labels differ from the plan: " + ", ".join(f"{k}: plan {a!r}, image {b!r}"
                                                                     for k, (a, b) in drift.items())
        write_json(record_path, record)
        raise GraceError(f"{plan.build_tag}: {record['error']}")
    try:  # what the build resolved (digests, commits, wheel hashes): its provenance names exactly these
        record["resolved"] = build_inputs.resolved(plan.build_args, image_id, log_path.read_text())
    except GraceError as exc:
        record.update(status="failed", error=f"the build's inputs cannot all be pinned: {exc}")
        write_json(record_path, record)
        raise GraceError(f"{plan.build_tag}: {record['error']}") from None
    write_json(record_path, record)
    return BuildResult(record, record_path)


def failure_message(progress: BuildProgress, result, log_path: Path) -> str:
    step = progress.failed_step()
    if step:
        last = step.tail[-1] if step.tail else ""
        return (f"build failed in stage {step.stage} step {step.index}/{step.total} ({shorten(step.text, 60)}): "
                f"{last or step.error}; full log {log_path}")
    return f"build failed (exit {result.returncode}): {proc.last_line(result.stdout)}; full log {log_path}"


def read_record(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GraceError(f"{path}: no such build record") from None
    except ValueError as exc:
        raise GraceError(f"{path}: not a JSON build record ({exc})") from None
    if record.get("kind") != "build":
        raise GraceError(f"{path}: not a build record (kind {record.get('kind')!r})")
    return record


# --- reports over build records (`gracectl report`, benchmarks/build_cache.py) ---------------------------

def rebuilt_stages(record: dict) -> list[str]:
    """Stages of a build that ran at least one step (were not entirely taken from the cache)."""
    return [name for name, s in record.get("stages", {}).items() if not s["cache_hit"]]


def layers(image: str) -> list[dict]:
    """The image's layers, oldest first, with their size and the instruction that made them."""
    return list(reversed(docker.history(image)))


def compare(a: dict, b: dict) -> dict:
    """What changed from build record `a` to `b`: inputs, per-stage cache use and time, size."""
    args = sorted(set(a.get("build_args", {})) | set(b.get("build_args", {})))
    changed = {k: (a["build_args"].get(k), b["build_args"].get(k)) for k in args
               if a["build_args"].get(k) != b["build_args"].get(k)}
    stages = {}
    for name in list(dict.fromkeys([*a.get("stages", {}), *b.get("stages", {})])):
        sa, sb = a.get("stages", {}).get(name), b.get("stages", {}).get(name)
        stages[name] = {"a": sa, "b": sb}
    return {"changed_build_args": changed, "stages": stages,
            "seconds": (a.get("seconds"), b.get("seconds")), "size": (a.get("size"), b.get("size")),
            "rebuilt": (rebuilt_stages(a), rebuilt_stages(b))}
