"""`gracectl rehearse` end to end on the test bed, its results checked in the registry itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from gracectl.adapters import proc
from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_access import RegistryAccess  # the test bed's loopback registry: no site settings
from gracectl.image_ref import ImageRef
from gracectl.checkout import REPO_ROOT
from gracectl.tags.records import get_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def skopeo(*args: str) -> dict:
    return json.loads(proc.run(["skopeo", "inspect", "--tls-verify=false", *args]).stdout)


def output(workdir, run: str, name: str) -> dict:
    return json.loads((workdir / run / name).read_text())


def test_rehearsal_builds_promotes_rebuilds_and_rolls_back(bed, tmp_path):
    workdir = tmp_path / "rehearsal"
    done = subprocess.run([sys.executable, "-m", "gracectl", "rehearse", "--workdir", str(workdir)],
                          capture_output=True, text=True, timeout=1800, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rehearsal of v0.19.0-tfa: passed" in done.stdout

    first, second = output(workdir, "build-1", "push-record.json"), output(workdir, "build-2", "push-record.json")
    assert first["digest"] != second["digest"]
    # every push signed and attested with the test bed's site key, every move through the signature gate
    assert first["signed"] and second["signed"] and "signature + provenance" in done.stdout
    # each signed provenance pins every input it names (gracectl.image.build_inputs: what the build resolved)
    counts = re.findall(r"provenance:\s+(\d+)\s+inputs,\s+(\d+)\s+pinned", done.stderr)  # progress lines, maybe wrapped
    assert len(counts) >= 2 and all(n == pinned and int(n) > 20 for n, pinned in counts), counts
    moving = output(workdir, "rollback", "plan.json")["moving_tag"]
    assert moving == f"{bed.state.registry}/gh200-vllm-tfa:v0.19.0-tfa"

    # the registry itself: the moving tag is back at build 1's digest, both build tags hold their images
    tag_now = proc.run(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                        f"docker://{moving}"]).stdout.strip()
    assert tag_now == first["digest"]
    for record, run in ((first, "build-1"), (second, "build-2")):
        pushed = skopeo(f"docker://{record['ref']}")
        assert pushed["Digest"] == record["digest"]
        assert pushed["Architecture"] == "arm64"
        build = output(workdir, run, "build-record.json")
        assert pushed["Labels"] == {**pushed["Labels"], **build["labels"]}  # every planned label is on it
        # the config digest (image ID) survives the push: the smoke record's key
        config = json.loads(proc.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                      f"docker://{record['ref']}"]).stdout)["config"]["digest"]
        assert config == build["image_id"]
        ref = ImageRef.parse(record["ref"])
        smoke = get_records(ref, record["digest"], "smoke", registry=Registry(ref.registry, RegistryAccess()))
        assert smoke and smoke[-1]["passed"] is True and smoke[-1]["level"] == "imports"
    labels_2 = skopeo(f"docker://{second['ref']}")["Labels"]
    assert labels_2["io.gracectl.pin.vllm"].endswith("@" + bed.state.vllm_alt_ref)
    assert labels_2["io.gracectl.version.vllm"] == f"0.19.0+g{bed.state.vllm_alt_ref[:7]}"

    # the history says promote, promote, rollback (the last one undoing build 2's promotion)
    rollback = output(workdir, "rollback", "rollback-record.json")["history_entry"]
    assert rollback["action"] == "rollback" and rollback["to"] == first["digest"]
    assert rollback["from"] == second["digest"]
