"""Level `upstream` (GPU): a bounded selection of triton_kernels' own test suite (Triton's
python/triton_kernels/tests at the pinned ref, shipped in the image) against the triton_kernels vLLM loads.

One test per group of upstream_selection.GROUPS: it collects the group's files in a pytest subprocess that
reports every case's parameters, selects by them (upstream_selection.select), runs the selection in another
pytest subprocess (their own conftest.py, their own references) and fails when any selected test fails or
errors, or when fewer than the group's min_ran passed (upstream_selection.verdict). Per-group counts go into
the JUnit properties (`upstream:<group>`), which gracectl puts into the smoke record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import triton_kernels_contract as tkc
import upstream_selection as sel

pytestmark = pytest.mark.upstream

COLLECT_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def suite_dir(expected) -> Path:
    path = Path(os.environ.get(sel.SUITE_ENV) or sel.SUITE_IN_IMAGE)
    if (path / "conftest.py").exists():
        return path
    if expected.get("triton_kernels") == "site-packages":
        pytest.fail(f"triton_kernels' test suite is missing at {path}: the build-triton-kernels stage keeps it "
                    "for site-packages releases", pytrace=False)
    pytest.skip(f"no triton_kernels test suite at {path} (shipped only with a site-packages triton_kernels; "
                f"this image's mode: {expected.get('triton_kernels', 'unknown')})")


@pytest.fixture(scope="module")
def tk_env() -> dict[str, str]:
    """Environment for the upstream pytest: the triton_kernels vLLM loads must be the one importable there."""
    module = tkc.load_triton_kernels()
    env = dict(os.environ)
    if tkc.loaded_mode(module) == "vendored":
        # The upstream tests import `triton_kernels`; in a fallback image only vLLM's alias provides it.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tkc.package_dir(module).parent), env.get("PYTHONPATH")) if p)
    return env


def _pytest(suite: Path, args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    # Their own rootdir and conftest.py; our pytest.ini (strict markers, our addopts) does not apply there.
    return subprocess.run([sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(suite),
                           "-p", "no:cacheprovider", *args], cwd=suite, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _collect(suite: Path, files: tuple[str, ...], env: dict, tmp: Path) -> list[dict]:
    """[{"nodeid", "params"}] of the files' tests, from pytest itself (upstream_selection as its plugin)."""
    out = tmp / "params.json"
    env = {**env, sel.PARAMS_ENV: str(out),
           "PYTHONPATH": os.pathsep.join(p for p in (str(Path(sel.__file__).parent), env.get("PYTHONPATH")) if p)}
    done = _pytest(suite, ["--collect-only", "-q", "-p", "upstream_selection", *files], env, COLLECT_TIMEOUT_S)
    assert done.returncode == 0 and out.exists(), (
        f"collecting {' '.join(files)} failed (exit {done.returncode}): {(done.stdout + done.stderr)[-1500:]}")
    return json.loads(out.read_text())


@pytest.mark.parametrize("group", sel.GROUPS, ids=[g.name for g in sel.GROUPS])
def test_upstream_group(gpu, suite_dir, tk_env, group, record_testsuite_property, tmp_path):
    absent = [f for f in group.files if not (suite_dir / f).exists()]
    if absent:
        record_testsuite_property(sel.PROPERTY_PREFIX + group.name, "absent")
        pytest.skip(f"{', '.join(absent)} is not in this triton_kernels test suite ({suite_dir})")
    collected = _collect(suite_dir, group.files, tk_env, tmp_path)
    try:
        chosen = sel.select(group, collected)
    except sel.SelectionError as exc:
        pytest.fail(f"upstream {group.name}: {exc}", pytrace=False)
    junit = tmp_path / "junit.xml"
    started = time.monotonic()
    try:
        ran = _pytest(suite_dir, ["-q", f"--junitxml={junit}", *chosen], tk_env, group.timeout_s)
        tail = (ran.stdout + ran.stderr)[-1500:]
    except subprocess.TimeoutExpired as exc:
        tail = f"timed out after {group.timeout_s} s: {str(exc.stdout or '')[-1000:]}"
    took = time.monotonic() - started
    results = sel.count_junit(str(junit)) if junit.exists() else {}
    c = sel.counts([results[n]["outcome"] for n in chosen if n in results])
    record_testsuite_property(sel.PROPERTY_PREFIX + group.name,
                              f"{sel.format_counts(c)} selected={len(chosen)} of={len(collected)} "
                              f"min_ran={group.min_ran} seconds={round(took)}")
    print(f"upstream {group.name}: {len(chosen)} of {len(collected)} collected ({group.why}): "
          f"{sel.format_counts(c)} in {took:.0f} s")
    for name in chosen:
        r = results.get(name, {"outcome": "no result", "message": ""})
        print(f"  {r['outcome']:8} {name} {r['message'][:160]}")
    problems = sel.verdict(group, chosen, results)
    assert not problems, (f"upstream {group.name}: {len(problems)} problem(s): " + " | ".join(problems[:5]) +
                          (f" | pytest output: {tail}" if not results else ""))
