"""Build provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate, made from what the pipeline
recorded (the plan, the build record, the smoke record), signed by the site key (DSSE, adapters.signing) and
attached to the image as cosign attaches attestations (`sha256-<hex>.att`: `cosign verify-attestation --type
slsaprovenance1 --key` verifies it). `gracectl verify` and `gracectl report --provenance` read it back.

SLSA v1's split, followed here: externalParameters are what the caller chose (the release, platform, target, every
build arg of the plan); resolvedDependencies are the artifacts the build read, each with an absolute uri (git+URL@REF,
docker://IMAGE, https://...) and its digest where the plan pins one (a git commit, a sha256); builder.id is stable
per site (the CI job's URL, else urn:gracectl:builder:HOST); invocationId names this run (the CI build URL, else
the run id). An input the plan names by a tag or version only (a base image by tag, a git tag) is listed with its
uri and no digest, annotated `pinned: tag`: the plan does not know its digest, and the build does not yet record
what each tag resolved to (CLAWMINE.md, "Signed images").
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from gracectl.adapters.signing import in_toto_statement
from gracectl.checkout import IMAGE_SOURCE, REPO_ROOT

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://grace-gpu-containers/gracectl/vllm-dockerfile/v1"
_COMMIT = re.compile(r"^[0-9a-f]{40}\Z")
_SHA256 = re.compile(r"sha256:([0-9a-f]{64})")
_GIT_PIN = re.compile(r"^(?P<name>\w+)=(?P<repo>\S+)@(?P<ref>\S+)$")
# The plan's pin labels (REPO@REF; io.gracectl.pin.cmake: "NAME=REPO@REF ...").
PIN_LABEL = "io.gracectl.pin."


def _digest(ref: str) -> dict:
    if _COMMIT.match(ref):
        return {"gitCommit": ref}
    if found := _SHA256.search(ref):
        return {"sha256": found.group(1)}
    return {}


def _git(name: str, repo: str, ref: str) -> dict:
    digest = _digest(ref)
    entry: dict = {"name": name, "uri": f"git+{repo}@{ref}"}
    if digest:
        entry["digest"] = digest
    else:  # a tag, or an abbreviated commit (which names no object for certain)
        entry["annotations"] = {"pinned": "short commit" if re.fullmatch(r"[0-9a-f]{7,39}", ref) else "tag"}
    return entry


def dependencies(plan: dict, dockerfile_sha: str) -> list[dict]:
    """The build's inputs as SLSA ResourceDescriptors: this repository at its commit, the Dockerfile, the base
    images, every git source the plan pins (its io.gracectl.pin.* labels: vLLM, Triton, triton_kernels,
    FlashAttention, FlashMLA, DeepGEMM, the cmake sources), DeepEP, and files fetched by URL."""
    args = {k: str(v) for k, v in (plan.get("build_args") or {}).items()}
    labels = {k: str(v) for k, v in (plan.get("labels") or {}).items()}
    source = labels.get("org.opencontainers.image.source", IMAGE_SOURCE)
    found: list[dict] = []
    if plan.get("source_commit"):
        found.append({"name": "grace-gpu-containers", "uri": f"git+{source}@{plan['source_commit']}",
                      "digest": {"gitCommit": plan["source_commit"]}})
    if dockerfile_sha:
        found.append({"name": "dockerfile", "uri": f"git+{source}@{plan.get('source_commit') or 'HEAD'}#"
                      f"{plan.get('dockerfile', 'vllm/Dockerfile')}", "digest": {"sha256": dockerfile_sha}})
    for arg in ("BUILD_BASE_IMAGE", "RUNTIME_BASE_IMAGE"):
        if image := args.get(arg):
            entry = {"name": arg.lower(), "uri": f"docker://{image}"}
            digest = _digest(image)
            found.append({**entry, "digest": digest} if digest else {**entry, "annotations": {"pinned": "tag"}})
    for label in sorted(k for k in labels if k.startswith(PIN_LABEL) and k != PIN_LABEL + "cmake"):
        repo, _, ref = labels[label].rpartition("@")
        if repo and ref:
            found.append(_git(label.removeprefix(PIN_LABEL), repo, ref))
    for pin in labels.get(PIN_LABEL + "cmake", "").split():
        if m := _GIT_PIN.match(pin):
            found.append(_git(f"cmake:{m['name']}", m["repo"], m["ref"]))
    if args.get("DEEPEP_REPO") and args.get("DEEPEP_REF"):
        found.append(_git("deepep", args["DEEPEP_REPO"], args["DEEPEP_REF"]))
    if url := args.get("GDRCOPY_URL"):
        found.append({"name": "gdrcopy", "uri": url, "annotations": {"pinned": "url"}})
    return found


def statement(repository: str, digest: str, plan: dict, build: dict, *, builder: str, invocation: str,
              records: dict[str, str]) -> dict:
    """The provenance of image `digest` in `repository` (REGISTRY/REPO). `builder`: the site's stable builder id
    (a URI); `invocation`: this run's id. `records`: kind -> artifact digest of the records stored with it (the
    smoke record first of all)."""
    dockerfile = REPO_ROOT / plan.get("dockerfile", "vllm/Dockerfile")
    dockerfile_sha = hashlib.sha256(Path(dockerfile).read_bytes()).hexdigest() if Path(dockerfile).is_file() else ""
    metadata = {"invocationId": invocation}
    metadata.update({key: build[field] for key, field in (("startedOn", "started"), ("finishedOn", "finished"))
                     if build.get(field)})
    return in_toto_statement(repository, digest, PREDICATE_TYPE, {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"release": plan.get("release", ""), "platform": plan.get("platform", ""),
                                   "target": plan.get("target", ""), "dockerfile": plan.get("dockerfile", ""),
                                   "buildArgs": dict(sorted((plan.get("build_args") or {}).items()))},
            "internalParameters": {"build_command": plan.get("build_command", []),
                                   "standins": plan.get("standins", [])},
            "resolvedDependencies": dependencies(plan, dockerfile_sha),
        },
        "runDetails": {
            "builder": {"id": builder},
            "metadata": metadata,
            "byproducts": [{"name": f"{kind}-record", "digest": {"sha256": d.split(":", 1)[1]}}
                           for kind, d in sorted(records.items()) if d],
        },
    })


def summary(stmt: dict) -> list[str]:
    """A few lines for an operator: what was built, from what, by whom."""
    p = stmt.get("predicate", {})
    definition, run = p.get("buildDefinition", {}), p.get("runDetails", {})
    ext = definition.get("externalParameters", {})
    deps = definition.get("resolvedDependencies", [])
    pinned = sum(1 for d in deps if d.get("digest"))
    dockerfile = next((d for d in deps if d.get("name") == "dockerfile"), {})
    return [f"release {ext.get('release')} for {ext.get('platform')} ({ext.get('dockerfile')} sha256:"
            f"{str((dockerfile.get('digest') or {}).get('sha256'))[:12]})",
            f"{len(deps)} inputs, {pinned} pinned by commit or digest",
            f"built by {run.get('builder', {}).get('id')} run {run.get('metadata', {}).get('invocationId')}",
            "records: " + ", ".join(b.get("name", "") for b in run.get("byproducts", []))]
