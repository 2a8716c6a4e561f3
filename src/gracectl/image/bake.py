"""`gracectl plan RELEASE --bake FILE`: the plan of a release and of its pair's other image (tfa <-> fallback) as a
docker-bake.hcl, for a site that drives its builds with `docker buildx bake` (as vLLM's own build is driven).

Each target carries what `gracectl build --builder NAME --push --registry-cache` gives buildx (the plan's build
args and labels, its platform, target stage, network, build tag, the pair's shared registry cache, the OCI index
pushed by digest, BuildKit's own attestations off), so bake builds the same image digest for digest
(tests/integration/test_buildx_agents.py checks one release). The two targets differ only where the plans do:
TRITON_KERNELS (the site-packages stage or vLLM's vendored copy) and the release's own names.
"""

from __future__ import annotations

import json
import re

from gracectl.image.plan import Plan


def target_name(release: str) -> str:
    """A bake target name for a release (bake allows letters, digits, '_' and '-')."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", release)


def target(plan: Plan, *, push: bool) -> dict:
    """The bake target of `plan`, as gracectl.image.builders.buildx_command builds it (registry cache when the
    plan has a registry)."""
    args = dict(plan.build_args)
    found: dict = {"context": plan.context, "dockerfile": plan.dockerfile, "target": plan.target,
                   "platforms": [plan.platform], "tags": [plan.build_tag], "labels": dict(plan.labels)}
    if plan.build_network != "default":
        found["network"] = plan.build_network
    if plan.cache_ref:
        found["cache-from"] = [f"type=registry,ref={ref}" for ref in (plan.cache_ref, plan.twin_cache_ref) if ref]
        found["cache-to"] = [f"type=registry,ref={plan.cache_ref},mode=max"]
    if push:
        args["BUILDKIT_MULTI_PLATFORM"] = "1"
        found["attest"] = ["type=provenance,disabled=true", "type=sbom,disabled=true"]
        found["output"] = ["type=registry,oci-mediatypes=true"]
    else:
        found["output"] = ["type=docker"]
    found["args"] = args
    return found


def bake_file(plans: list[Plan], *, push: bool) -> str:
    """docker-bake.hcl text: one target per plan and a default group of them all."""
    names = [target_name(p.release) for p in plans]
    lines = ["# Written by `gracectl plan --bake` from releases/ and the mirror file: regenerate, do not edit.",
             f"group \"default\" {{\n  targets = {_hcl(names)}\n}}"]
    for name, p in zip(names, plans):
        body = "".join(f"  {key} = {_hcl(value, 1)}\n" for key, value in target(p, push=push).items())
        lines.append(f"target {_hcl(name)} {{\n{body}}}")
    return "\n\n".join(lines) + "\n"


def _hcl(value, depth: int = 0) -> str:
    """An HCL2 literal: strings as JSON strings with HCL's template sequences escaped, lists, and objects."""
    if isinstance(value, str):
        return json.dumps(value).replace("${", "$${").replace("%{", "%%{")
    if isinstance(value, list):
        return "[" + ", ".join(_hcl(v) for v in value) + "]"
    pad = "  " * (depth + 1)
    return "{\n" + "".join(f"{pad}{_hcl(k)} = {_hcl(v, depth + 1)}\n" for k, v in value.items()) + "  " * depth + "}"
