"""Build provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate, made from what the pipeline
recorded (the plan, the build record, the smoke record), signed by the site key (DSSE, adapters.signing) and
attached to the image as cosign attaches attestations (`sha256-<hex>.att`: `cosign verify-attestation --type
slsaprovenance1 --key` verifies it). `gracectl verify` and `gracectl report --provenance` read it back.

SLSA v1's split, followed here: externalParameters are what the caller chose (the release, platform, target, every
build arg of the plan); resolvedDependencies are the artifacts the build read, each with an absolute uri (git+URL@REF,
docker://IMAGE, https://...) and the digest the BUILD resolved (the build record's "resolved", gracectl.image.build_inputs:
base images by the digest BuildKit pulled, git sources by the commit each stage checked out, downloads and every
wheel of the final install by sha256); an input without one fails the statement, never listed unpinned. builder.id
is stable per site (the CI job's URL, else urn:gracectl:builder:HOST); invocationId names this run (the CI build URL,
else the run id).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from gracectl.adapters.signing import in_toto_statement
from gracectl.checkout import IMAGE_SOURCE, REPO_ROOT
from gracectl.errors import GraceError
from gracectl.image_ref import normalized_image

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


# Which stage fetches each git pin of the plan (a pin of a stage the build does not run is no input of the image:
# the official vLLM wheel's flash-attn, say, is inside that wheel, which is pinned by its sha256).
_PIN_STAGE = {"vllm": "build", "flash_attn": "build-flash-attn", "flashmla": "build-flashmla",
              "deepgemm": "build-deepgemm", "deepep": "build-deepep"}


def _pins(plan: dict) -> list[tuple[str, str, str, str]]:
    """(name, repo, ref, the stage that fetches it) of every git source the plan pins (its pin labels)."""
    args = {k: str(v) for k, v in (plan.get("build_args") or {}).items()}
    labels = {k: str(v) for k, v in (plan.get("labels") or {}).items()}
    found = []
    for label in sorted(k for k in labels if k.startswith(PIN_LABEL) and k != PIN_LABEL + "cmake"):
        repo, _, ref = labels[label].rpartition("@")
        name = label.removeprefix(PIN_LABEL)
        stage = _PIN_STAGE.get(name, "")
        if name == "triton":
            stage = "build-triton" if args.get("TRITON_BUILD") == "source" else ""  # else the official wheel
        elif name == "triton_kernels":  # site-packages' wheel, or (the fallback) the copy vLLM's cmake vendors
            stage = "build-triton-kernels" if args.get("TRITON_KERNELS") == "site-packages" else "build-cmake-sources"
        if repo and ref:
            found.append((name, repo, ref, stage))
    for pin in labels.get(PIN_LABEL + "cmake", "").split():
        if m := _GIT_PIN.match(pin):
            found.append((f"cmake:{m['name']}", m["repo"], m["ref"], "build-cmake-sources"))
    if args.get("DEEPEP_REPO") and args.get("DEEPEP_REF"):
        found.append(("deepep", args["DEEPEP_REPO"], args["DEEPEP_REF"], "build-deepep"))
    return found


def dependencies(plan: dict, dockerfile_sha: str, resolved: dict | None) -> list[dict]:
    """The build's inputs as SLSA ResourceDescriptors, each with an absolute uri and the digest the BUILD resolved
    (`resolved`: the build record's, gracectl.image.build_inputs): this repository at its commit, the Dockerfile, the base
    images by the digest BuildKit pulled, every git source a built stage fetched by its commit, each download and
    every Python distribution of the final image by the sha256 of its wheel. An input without one is an error."""
    if not resolved:
        raise GraceError("the build record holds no resolved inputs (digests, commits, wheel hashes): it was made "
                         "before gracectl recorded them; rebuild to get provenance that pins every input")
    args = {k: str(v) for k, v in (plan.get("build_args") or {}).items()}
    source = str((plan.get("labels") or {}).get("org.opencontainers.image.source", IMAGE_SOURCE))
    found: list[dict] = []
    if plan.get("source_commit"):
        found.append({"name": "grace-gpu-containers", "uri": f"git+{source}@{plan['source_commit']}",
                      "digest": {"gitCommit": plan["source_commit"]}})
    if dockerfile_sha:
        found.append({"name": "dockerfile", "uri": f"git+{source}@{plan.get('source_commit') or 'HEAD'}#"
                      f"{plan.get('dockerfile', 'vllm/Dockerfile')}", "digest": {"sha256": dockerfile_sha}})
    missing: list[str] = []
    images = {normalized_image(ref): digest for ref, digest in resolved.get("images", {}).items()}
    named = set()
    for arg in ("BUILD_BASE_IMAGE", "RUNTIME_BASE_IMAGE"):
        if image := args.get(arg):
            digest, pinned = images.get(normalized_image(image), ""), _digest(image).get("sha256")
            named.add(normalized_image(image))
            if not digest or (pinned and digest != f"sha256:{pinned}"):
                missing.append(f"{arg} {image} (BuildKit resolved {digest or 'no digest'})")
                continue
            found.append({"name": arg.lower(), "uri": f"docker://{image}", "digest": {"sha256": digest[7:]}})
    found += [{"name": f"image:{ref}", "uri": f"docker://{ref}", "digest": {"sha256": d[7:]}}
              for ref, d in sorted(images.items()) if ref not in named]
    built = set(plan.get("stages") or ()) - set(plan.get("not_built") or ())
    commits = {(g["repo"], g["ref"]): g["commit"] for g in resolved.get("git", [])}
    used = set()
    for name, repo, ref, stage in _pins(plan):
        if stage and stage not in (plan.get("stages") or {}):  # _PIN_STAGE behind the Dockerfile's stage names
            missing.append(f"{name} {repo}@{ref} (the plan has no stage {stage})")
            continue
        if stage not in built:  # not fetched by this build (another pin may share its repo and ref: Triton's)
            continue
        commit = commits.get((repo, ref), "")
        if not commit:
            missing.append(f"{name} {repo}@{ref} (stage {stage} recorded no commit)")
            continue
        if re.fullmatch(r"[0-9a-f]{7,40}", ref) and not commit.startswith(ref):  # a (short) commit pin: the same
            missing.append(f"{name} {repo}@{ref} (the build checked out {commit})")
            continue
        used.add((repo, ref))
        found.append({"name": name, "uri": f"git+{repo}@{ref}", "digest": {"gitCommit": commit}})
    found += [{"name": f"git:{repo}", "uri": f"git+{repo}@{ref}", "digest": {"gitCommit": commit}}
              for (repo, ref), commit in sorted(commits.items()) if (repo, ref) not in used]
    downloads = {d["url"]: d["sha256"] for d in resolved.get("downloads", [])}
    if (url := args.get("GDRCOPY_URL")) and url not in downloads:
        missing.append(f"gdrcopy {url} (the build recorded no sha256)")
    found += [{"name": "gdrcopy" if url == args.get("GDRCOPY_URL") else f"download:{url}", "uri": url,
               "digest": {"sha256": sha}} for url, sha in sorted(downloads.items())]
    found += [{"name": f"pypi:{p['name']}", "uri": p["uri"], "digest": {"sha256": p["sha256"]},
               "annotations": {"version": p["version"], "from": p["from"]}} for p in resolved.get("python", [])]
    if missing:
        raise GraceError(f"provenance cannot pin {len(missing)} input(s) of this build: {'; '.join(missing)}")
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
            "resolvedDependencies": dependencies(plan, dockerfile_sha, build.get("resolved")),
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
