"""Build provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate, made from what the pipeline
recorded (the plan, the build record, the smoke record), signed by the site key (DSSE, adapters.signing) and
stored with the image by digest as its "provenance" record (records.py: referrers API where the registry has it,
the tag fallback otherwise). `gracectl verify` and `gracectl report --provenance` read it back.

What it names: every pinned input of the plan (each build arg, a git commit or sha256 digest as such), the
Dockerfile and its sha256, the source commit of this repository, the builder (the CI build URL, else the host),
the run id, the build's start and end, and the smoke record's artifact digest (the gate the image passed).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from gracectl.plan import REPO_ROOT

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://grace-gpu-containers/gracectl/vllm-dockerfile/v1"
KIND = "provenance"
_COMMIT = re.compile(r"^[0-9a-f]{40}\Z")
_SHA256 = re.compile(r"sha256:([0-9a-f]{64})")


def _dependency(name: str, value: str) -> dict:
    """One resolved input: its digest when the value pins one (a git commit, a sha256), its value otherwise."""
    entry: dict = {"name": name, "annotations": {"value": value}}
    if _COMMIT.match(value):
        entry["digest"] = {"gitCommit": value}
    elif found := _SHA256.search(value):
        entry["digest"] = {"sha256": found.group(1)}
    return entry


def statement(repository: str, digest: str, plan: dict, build: dict, *, builder: str, run_id: str,
              records: dict[str, str]) -> dict:
    """The provenance of image `digest` in `repository` (REGISTRY/REPO). `records`: kind -> artifact digest of
    the records stored with it (the smoke record first of all)."""
    dockerfile = REPO_ROOT / plan.get("dockerfile", "vllm/Dockerfile")
    dockerfile_sha = hashlib.sha256(Path(dockerfile).read_bytes()).hexdigest() if Path(dockerfile).is_file() else ""
    dependencies = [_dependency(k, str(v)) for k, v in sorted((plan.get("build_args") or {}).items())]
    if plan.get("source_commit"):
        dependencies.insert(0, {"uri": "git+grace-gpu-containers", "digest": {"gitCommit": plan["source_commit"]}})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": repository, "digest": {"sha256": digest.split(":", 1)[1]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"release": plan.get("release", ""), "platform": plan.get("platform", ""),
                                       "target": plan.get("target", ""), "dockerfile": plan.get("dockerfile", ""),
                                       "dockerfile_sha256": dockerfile_sha},
                "internalParameters": {"build_command": plan.get("build_command", []),
                                       "standins": plan.get("standins", [])},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": builder},
                "metadata": {"invocationId": run_id, "startedOn": build.get("started", ""),
                             "finishedOn": build.get("finished", "")},
                "byproducts": [{"name": f"{kind}-record", "digest": {"sha256": d.split(":", 1)[1]}}
                               for kind, d in sorted(records.items()) if d],
            },
        },
    }


def summary(stmt: dict) -> list[str]:
    """A few lines for an operator: what was built, from what, by whom."""
    p = stmt.get("predicate", {})
    definition, run = p.get("buildDefinition", {}), p.get("runDetails", {})
    ext = definition.get("externalParameters", {})
    deps = definition.get("resolvedDependencies", [])
    pinned = sum(1 for d in deps if d.get("digest"))
    return [f"release {ext.get('release')} for {ext.get('platform')} ({ext.get('dockerfile')} sha256:"
            f"{str(ext.get('dockerfile_sha256'))[:12]})",
            f"{len(deps)} inputs, {pinned} pinned by commit or digest",
            f"built by {run.get('builder', {}).get('id')} run {run.get('metadata', {}).get('invocationId')}",
            "records: " + ", ".join(b.get("name", "") for b in run.get("byproducts", []))]
