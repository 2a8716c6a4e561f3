"""`gracectl smoke`: run the image's own smoke suite inside the image and write the smoke record.

The suite (smoke_tests/, baked into the image at /opt/gracectl/smoke_tests) runs with `docker run` and the
entrypoint overridden; its JUnit XML comes back through a bind-mounted folder. The smoke record is keyed by
the image ID (the config digest, unchanged by a push), which is what the push stage attaches and promotion
checks. The same container runner serves `gracectl bench` (bench.py).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gracectl.adapters import docker, proc
from gracectl.errors import CommandFailedError, SmokeFailedError, UsageError
from gracectl.record_files import utc_now, write_json

SUITE_IN_IMAGE = "/opt/gracectl/smoke_tests"
OUT_IN_CONTAINER = "/gracectl-out"
# THE smoke levels: one pytest marker each (smoke_tests/pytest.ini), the Jenkinsfile's SMOKE_LEVEL choices are
# LEVEL_CHOICES; tests/unit/test_shared_lists.py holds both copies to this.
LEVELS = ("imports", "kernels", "upstream", "collectives", "engine", "server")
LEVEL_CHOICES = (*LEVELS, "all")
GPUS = ("all", "none")
# Containers a pipeline run starts carry this label with the run id; `gracectl ci cleanup` removes exactly those.
RUN_LABEL = "io.gracectl.run"
# pytest exit codes with a JUnit file worth reading: 0 passed, 1 some failed, 2 stopped by a collection
# error (listed in the XML as an error), 5 nothing selected.
_PYTEST_RESULT_CODES = (0, 1, 2, 5)
# Tests that cannot pass against a STAND-IN the plan names (its line's prefix -> the suite's test ids): the smoke
# stage deselects exactly these, and the smoke record lists each with the plan's line as the reason. Nothing
# else is ever deselected, so a real fault still fails the level.
STANDIN_DESELECT = {
    # PyPI's aarch64 torch is a CPU build: it has no CUDA version and no sm_90 kernels to find.
    "torch.version:": ("test_imports.py::test_torch_is_a_cuda_build_with_sm90",),
}


def deselections(standins: Sequence[str]) -> dict[str, str]:
    """test id -> reason, for the plan's stand-in lines that STANDIN_DESELECT knows."""
    return {test: line for line in standins for prefix, tests in STANDIN_DESELECT.items()
            if line.startswith(prefix) for test in tests}


def marker_expression(level: str) -> str:
    """The pytest -m expression of a level; "all" selects every level."""
    if level == "all":
        return " or ".join(LEVELS)
    if level not in LEVELS:
        raise UsageError(f"unknown smoke level {level!r}: choose one of {', '.join(LEVEL_CHOICES)}")
    return level


def container_command(image: str, python_args: Sequence[str], *, out_dir: str | os.PathLike, gpus: str,
                      run_id: str = "") -> list[str]:
    """`docker run` of the image's python (entrypoint overridden) with out_dir mounted at OUT_IN_CONTAINER.

    `run_id` labels the container (RUN_LABEL) so `gracectl ci cleanup` finds it after an aborted job.
    """
    if gpus not in GPUS:
        raise UsageError(f"--gpus must be one of {', '.join(GPUS)}, not {gpus!r}")
    args = [docker.binary(), "run", "--rm", "--pull", "never"]
    if run_id:
        args += ["--label", f"{RUN_LABEL}={run_id}"]
    if gpus == "all":
        args += ["--gpus", "all"]
    # The host's IPC namespace, as vLLM's docs ask for tensor parallelism: NCCL (collectives level) and vLLM's
    # engine/server processes move tensors through /dev/shm, which docker caps at 64 MB otherwise.
    args += ["--ipc=host", "-e", "PYTHONUNBUFFERED=1",
             "-v", f"{os.fspath(out_dir)}:{OUT_IN_CONTAINER}", "--entrypoint", "python", image]
    return args + list(python_args)


def pytest_args(level: str, deselect: Sequence[str] = ()) -> list[str]:
    return ["-m", "pytest", SUITE_IN_IMAGE, "-m", marker_expression(level), "-rA",
            f"--junitxml={OUT_IN_CONTAINER}/junit.xml",
            *(f"--deselect={test}" for test in deselect)]  # node ids: relative to the suite's pytest.ini


def image_id(image: str) -> str:
    """The local image's ID (sha256 of its config): what the record is keyed by, and what is run."""
    info = docker.inspect_image(image)
    if info is None:
        raise UsageError(f"no local image {image}: build it (gracectl build) or pull it first")
    return info["Id"]


def run_in_image(image_ref: str, python_args: Sequence[str], *, gpus: str, timeout: float | None,
                 run_id: str = ""):
    """Run `python ARGS` in the image with a fresh host folder mounted at OUT_IN_CONTAINER.

    Returns (image_id, completed process, out_dir); the caller reads its files and removes out_dir.
    The container's output streams to stderr as it comes (kernel compiles and model loads take minutes).
    """
    iid = image_id(image_ref)
    out_dir = Path(tempfile.mkdtemp(prefix="gracectl-smoke-"))
    out_dir.chmod(0o777)  # the image may run as a non-root user
    args = container_command(iid, python_args, out_dir=out_dir, gpus=gpus, run_id=run_id)
    result = proc.run(args, check=False, timeout=timeout, on_line=lambda line: print(line, file=sys.stderr))
    return iid, result, out_dir


@dataclass
class JunitResult:
    tests: list[dict] = field(default_factory=list)  # {"name", "outcome", "message"?, "time"}
    properties: dict[str, str] = field(default_factory=dict)


def parse_junit(path: str | os.PathLike) -> JunitResult:
    """Tests (name = <classname>::<name>, outcome passed|failed|error|skipped) and suite properties."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    result = JunitResult()
    for suite in suites:
        for prop in suite.findall("properties/property"):
            result.properties[prop.get("name")] = prop.get("value")
        for case in suite.findall("testcase"):
            test = {"name": f"{case.get('classname')}::{case.get('name')}", "outcome": "passed",
                    "time": float(case.get("time") or 0)}
            for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
                node = case.find(tag)
                if node is not None:
                    test["outcome"] = outcome
                    test["message"] = " ".join((node.get("message") or node.text or "").split())[:1000]
                    break
            result.tests.append(test)
    return result


# JUnit property prefix of the upstream level's per-group counts (smoke_tests/upstream_selection.py).
UPSTREAM_PREFIX = "upstream:"


def upstream_counts(props: dict[str, str]) -> dict[str, dict]:
    """{group: {"passed": n, ..., "selected": n, "of": n}} from the `upstream:<group>` properties (popped);
    a group whose file the suite lacks reads {"absent": True}."""
    out = {}
    for name in [n for n in props if n.startswith(UPSTREAM_PREFIX)]:
        value = props.pop(name)
        group = name[len(UPSTREAM_PREFIX):]
        if value == "absent":
            out[group] = {"absent": True}
            continue
        out[group] = {k: int(v) for k, _, v in (p.partition("=") for p in value.split()) if v.isdigit()}
    return out


def smoke_record(image: str, iid: str, level: str, junit: JunitResult, created: str | None = None) -> dict:
    counts = {o: sum(t["outcome"] == o for t in junit.tests) for o in ("passed", "failed", "error", "skipped")}
    props = dict(junit.properties)
    upstream = upstream_counts(props)
    gpu = props.pop("gpu", None)
    gpu_capability = props.pop("gpu_capability", None)
    return {
        "kind": "smoke", "schema": 1, "image": image, "image_id": iid, "created": created or utc_now(),
        "level": level,
        # Passing means: something ran and nothing failed (skips are listed, each with its reason).
        "passed": counts["passed"] > 0 and counts["failed"] == 0 and counts["error"] == 0,
        "counts": counts,
        "failed_tests": [t["name"] for t in junit.tests if t["outcome"] in ("failed", "error")],
        "tests": junit.tests,
        "versions": props,
        "gpu": {"name": gpu, "capability": gpu_capability} if gpu else None,
        # triton_kernels' own tests run by the upstream level, per group (absent when that level did not run).
        **({"upstream": upstream} if upstream else {}),
    }


def run_smoke(image: str, *, level: str = "imports", junit_path: str | os.PathLike,
              record_path: str | os.PathLike, gpus: str = "all", timeout: float | None = None,
              run_id: str = "", deselect: dict[str, str] | None = None) -> dict:
    """Run the smoke suite at `level` in the local image, write the JUnit XML and the smoke record.
    `deselect`: test id -> reason (see deselections), recorded.

    Returns the record; raises SmokeFailedError (after writing both files) when any test failed or none ran.
    """
    deselect = deselect or {}
    py_args = pytest_args(level, list(deselect))  # validates the level before docker runs
    iid, result, out_dir = run_in_image(image, py_args, gpus=gpus, timeout=timeout, run_id=run_id)
    try:
        junit_in_out = out_dir / "junit.xml"
        if result.returncode not in _PYTEST_RESULT_CODES or not junit_in_out.exists():
            raise CommandFailedError(
                f"smoke suite did not run in {image} (exit {result.returncode}): "
                f"{proc.last_line(result.stdout) or 'no output'}", returncode=result.returncode,
                output=result.stdout)
        Path(junit_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(junit_in_out, junit_path)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    record = smoke_record(image, iid, level, parse_junit(junit_path))
    if deselect:
        record["deselected"] = deselect
    write_json(record_path, record)
    if not record["passed"]:
        failed = record["failed_tests"]
        what = f"failed: {', '.join(failed)}" if failed else "no test passed"
        raise SmokeFailedError(f"smoke level {level} of {image} {what} (record: {record_path})")
    return record


def remove_run_containers(run_id: str) -> list[str]:
    """Remove the containers labelled with this run's id (whatever stage started them). Returns their ids."""
    if not run_id:
        raise UsageError("ci cleanup needs the run id: set GRACECTL_RUN_ID (Jenkins: BUILD_TAG) or --run-id")
    found = docker.run(["ps", "--all", "--quiet", "--filter", f"label={RUN_LABEL}={run_id}"])
    ids = found.stdout.split()
    if ids:
        docker.run(["rm", "--force", "--volumes", *ids])
    return ids
