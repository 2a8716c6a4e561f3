"""The work directory of a pipeline run (default ./gracectl-out): the one owner of its file names, and the
one reader of a stage's recorded output.

Each stage writes one JSON output marked "stage_status": "passed" | "failed" (gracectl.pipeline.stages.run_stage);
`gracectl build`, `smoke` and `bench` default their records to the same files, and Jenkins archives the folder.
(The Jenkinsfile's copies of these names: tests/unit/test_shared_lists.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

from gracectl.errors import PromotionRefusedError, UsageError

DEFAULT_WORKDIR = Path("gracectl-out")
PLAN_FILE = "plan.json"
BUILD_RECORD_FILE = "build-record.json"
BUILD_LOG_FILE = "build.log"
SMOKE_RECORD_FILE = "smoke-record.json"
SMOKE_JUNIT_FILE = "smoke-junit.xml"
SBOM_RECORD_FILE = "sbom-record.json"  # the CycloneDX SBOM of the image (gracectl.image.sbom): written where it is local
BENCH_RECORD_FILE = "bench-record.json"
# Plain-text file naming the moving tag (REGISTRY/IMAGE:TAG); the Jenkinsfile reads it to take
# `lock(resource: "gracectl-tag-<image>:<tag>")` around the stages that move that tag.
MOVING_TAG_FILE = "moving-tag"

# stage -> its output file, and the other files it writes (cleared with it when it runs again)
OUTPUTS = {"plan": PLAN_FILE, "build": BUILD_RECORD_FILE, "smoke": SMOKE_RECORD_FILE, "push": "push-record.json",
           "promote": "promote-record.json", "rollback": "rollback-record.json", "archive": "summary.json"}
EXTRA_FILES = {"plan": [MOVING_TAG_FILE], "build": [BUILD_LOG_FILE, SBOM_RECORD_FILE], "smoke": [SMOKE_JUNIT_FILE]}

PASSED, FAILED = "passed", "failed"
ENVELOPE = ("stage", "stage_status", "stage_error")


def status_of(record: dict) -> str:
    """passed/failed of a stage output, as run_stage marked it; anything else counts as failed."""
    return PASSED if record.get("stage_status") == PASSED else FAILED


def without_envelope(record: dict) -> dict:
    """The record as its owner wrote it (what goes into the registry), without run_stage's fields."""
    return {k: v for k, v in record.items() if k not in ENVELOPE}


def read_output(workdir: Path, stage: str, *, for_stage: str = "") -> dict:
    """The output of `stage`; a one-line refusal when it is missing, unreadable or failed."""
    who = f"ci {for_stage}: " if for_stage else ""
    refusal = PromotionRefusedError if for_stage in ("push", "promote") else UsageError
    path = workdir / OUTPUTS[stage]
    if not path.exists():
        raise refusal(f"{who}{path} is missing: run `gracectl ci {stage}` first (same --workdir)")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise refusal(f"{who}{path} is unreadable ({exc}): run `gracectl ci {stage}` again") from None
    if status_of(record) != PASSED:
        reason = record.get("stage_error") or "no stage_status passed"
        raise refusal(f"{who}stage {stage} failed ({reason}): refusing to continue")
    return record


def read_json(path: Path) -> dict:
    """A JSON object from `path`, {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
