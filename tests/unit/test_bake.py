"""gracectl.image.bake: the bake target says what the buildx command says (the integration test builds both and
compares digests; this holds the mapping and HCL's escaping without a builder)."""

from __future__ import annotations

import dataclasses

from gracectl.image.bake import _hcl, bake_file, target, target_name
from gracectl.image.plan import plan_for


def flags(cmd: list[str], name: str) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == name]


def test_a_target_carries_what_the_buildx_command_carries():
    plan = plan_for("v0.19.0-tfa", registry="reg:5000/ml", builder="agents", build_number=3)
    cmd, _ = plan.build_command(push=True, registry_cache=True)
    t = target(plan, push=True)
    assert [f"{k}={v}" for k, v in t["args"].items()] == flags(cmd, "--build-arg")
    assert [f"{k}={v}" for k, v in t["labels"].items()] == flags(cmd, "--label")
    assert t["tags"] == flags(cmd, "--tag") and t["platforms"] == flags(cmd, "--platform")
    assert [t["target"]] == flags(cmd, "--target") and [t["dockerfile"]] == flags(cmd, "--file")
    assert t["cache-from"] == flags(cmd, "--cache-from") and t["cache-to"] == flags(cmd, "--cache-to")
    assert t["output"] == flags(cmd, "--output")
    assert "--provenance=false" in cmd and "type=provenance,disabled=true" in t["attest"]


def test_the_file_holds_the_pair_and_escapes_hcl_templates():
    plans = [plan_for(r, registry="reg:5000/ml", builder="agents") for r in ("v0.19.0-tfa", "v0.19.0")]
    text = bake_file(plans, push=True)
    assert 'targets = ["v0-19-0-tfa", "v0-19-0"]' in text and 'target "v0-19-0" {' in text
    tfa, fallback = (target(p, push=True)["args"] for p in plans)
    assert {k for k in tfa if tfa[k] != fallback.get(k)} >= {"TRITON_KERNELS", "RELEASE"}
    assert _hcl("a ${b} %{c}") == '"a $${b} %%{c}"' and target_name("v0.25.0-tfa") == "v0-25-0-tfa"
    local = target(dataclasses.replace(plans[0], cache_ref="", twin_cache_ref=""), push=False)
    assert local["output"] == ["type=docker"] and "cache-from" not in local and "attest" not in local
