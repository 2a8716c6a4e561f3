"""BuildKit `--progress plain` parsing and build record writing (gracectl.image.build)."""

import json

import pytest

from gracectl.image.build import BuildProgress, compare, read_record, rebuilt_stages
from gracectl.record_files import write_json
from gracectl.errors import GraceError

# Shape of real `DOCKER_BUILDKIT=1 docker build --progress plain` output (dockerd 20.10), interleaved.
LOG = """\
#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 9.87kB done
#1 DONE 0.0s
#3 [internal] load metadata for 127.0.0.1:5000/testbed/build-base:bookworm
#3 DONE 0.1s
#5 [vllm-base 1/2] FROM 127.0.0.1:5000/testbed/runtime-base:bookworm@sha256:0123
#5 sha256:a4476755a3348969affa3079370f6c4420887b256dc506efa0f1b6681406c7bf
#5 DONE 0.0s
#6 [vllm-base 2/2] RUN --mount=type=cache,target=/var/cache/apt,sharing=locked     rm -f /etc/apt/apt.conf.d/docker-clean
#6 CACHED
#7 [base 1/5] FROM 127.0.0.1:5000/testbed/build-base:bookworm@sha256:4567
#7 resolve 127.0.0.1:5000/testbed/build-base:bookworm@sha256:4567 done
#7 DONE 1.5s
#8 [base 2/5] RUN python3.11 -m venv /opt/venv
#8 CACHED
#12 [build 1/4] RUN fetch-source "$VLLM_REPO" "$VLLM_REF" /src/vllm
#12 0.412 fetched git://127.0.0.1:9418/vllm-project/vllm.git@v0.19.0 -> 0a1b
#13 [build-triton 1/1] RUN --mount=type=cache,target=/root/.cache/pip pip download triton==3.6.0
#13 CACHED
#12 DONE 2.5s
#14 [build 2/4] WORKDIR /src/vllm
#14 DONE 0.0s
#15 [build 3/4] RUN python use_existing_torch.py && pip install -r requirements/build.txt
#15 1.0 removed torch pins from requirements/build.txt
#15 DONE 7.25s
#16 [linux/arm64 vllm-openai 1/4] RUN --mount=type=cache,target=/root/.cache/pip pip install torch==2.10.0
#16 DONE 11.0s
#17 exporting to image
#17 DONE 0.3s
"""


def feed_all(text: str) -> BuildProgress:
    progress = BuildProgress()
    for line in text.splitlines():
        progress.feed(line)
    return progress


def test_stages_steps_cache_and_seconds():
    stages = feed_all(LOG).stages()
    assert list(stages) == ["vllm-base", "base", "build", "build-triton", "vllm-openai"]
    runtime = stages["vllm-base"]
    # a FROM is never CACHED in BuildKit's output: it does not make a stage a cache miss
    assert (runtime["steps"], runtime["cached"], runtime["ran"], runtime["cache_hit"]) == (1, 1, 0, True)
    assert stages["base"]["cache_hit"] is True and stages["base"]["seconds"] == 1.5
    assert stages["build-triton"]["cache_hit"] is True
    vllm = stages["build"]
    assert (vllm["steps"], vllm["cached"], vllm["ran"], vllm["cache_hit"]) == (3, 0, 3, False)
    assert vllm["seconds"] == pytest.approx(9.8, abs=0.05)  # 2.5 + 0.0 + 7.25, rounded
    # the platform prefix buildx prints is not part of the stage name
    assert stages["vllm-openai"]["seconds"] == 11.0
    # [internal] vertices and the export are not stages
    assert "internal" not in stages and "exporting" not in " ".join(stages)


def test_feed_messages_for_the_operator():
    progress = BuildProgress()
    assert progress.feed("#12 [build 1/4] RUN fetch-source x y /src/vllm") == \
        "build [1/4] RUN fetch-source x y /src/vllm"
    # a repeated header (output resumed after another step's lines) is not a new step
    assert progress.feed("#12 [build 1/4] RUN fetch-source x y /src/vllm") is None
    assert progress.feed("#12 0.1 some output") is None
    assert progress.feed("#12 DONE 3.0s") == "build [1/4] done in 3.0s"
    assert progress.feed("#99 DONE 1.0s") is None  # a vertex we never saw (internal)
    assert len(progress.steps) == 1


def test_failed_step_keeps_error_and_last_output():
    progress = feed_all(
        "#20 [build 4/4] RUN pip wheel --no-deps --no-build-isolation -w /wheels/vllm .\n"
        "#20 1.5 stand-in vLLM build: FLASH_MLA_SRC_DIR is not set\n"
        '#20 ERROR: process "/bin/bash -o pipefail -c pip wheel" did not complete successfully: exit code: 1\n'
    )
    step = progress.failed_step()
    assert step is not None and step.stage == "build" and step.index == 4
    assert step.tail[-1] == "stand-in vLLM build: FLASH_MLA_SRC_DIR is not set"
    assert "exit code: 1" in step.error
    stages = progress.stages()
    assert stages["build"]["failed"] == 1 and stages["build"]["cache_hit"] is False


def test_record_round_trip_and_refusals(tmp_path):
    record = {"kind": "build", "schema": 1, "image": "gh200-vllm:v0.19.0-b1-abcdef0", "stages": {}}
    path = write_json(tmp_path / "out" / "build-record.json", record)
    assert json.loads(path.read_text()) == record
    assert not list(path.parent.glob("*.tmp"))  # written atomically
    assert read_record(path) == record
    (tmp_path / "smoke.json").write_text(json.dumps({"kind": "smoke"}))
    with pytest.raises(GraceError, match="not a build record"):
        read_record(tmp_path / "smoke.json")
    with pytest.raises(GraceError, match="no such build record"):
        read_record(tmp_path / "missing.json")


def test_compare_names_changed_inputs_and_rebuilt_stages():
    hit = {"steps": 2, "cached": 2, "ran": 0, "failed": 0, "seconds": 0.0, "cache_hit": True}
    miss = {"steps": 2, "cached": 0, "ran": 2, "failed": 0, "seconds": 9.0, "cache_hit": False}
    a = {"kind": "build", "build_args": {"VLLM_REF": "v0.19.0", "TRITON_REF": "v3.6.0"}, "seconds": 60.0,
         "size": 300, "stages": {"build-triton": miss, "build": miss}}
    b = {"kind": "build", "build_args": {"VLLM_REF": "0" * 40, "TRITON_REF": "v3.6.0"}, "seconds": 12.0,
         "size": 301, "stages": {"build-triton": hit, "build": miss}}
    diff = compare(a, b)
    assert diff["changed_build_args"] == {"VLLM_REF": ("v0.19.0", "0" * 40)}
    assert diff["rebuilt"] == (["build-triton", "build"], ["build"])
    assert rebuilt_stages(b) == ["build"]
    assert diff["stages"]["build-triton"] == {"a": miss, "b": hit}
