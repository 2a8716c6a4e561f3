"""Local record files (build, smoke, bench, SBOM records on this machine's disk) and the timestamp every record
carries. Records stored in the registry with an image are gracectl.tags.records."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path


def utc_now() -> str:
    """The timestamp every record carries: ISO 8601, UTC, seconds."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json(path: str | os.PathLike, record: dict) -> Path:
    """Write a local record file whole or not at all (temp file + rename): a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path
