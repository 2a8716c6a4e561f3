"""Level `upstream` (GPU): a bounded selection of triton_kernels' own test suite (Triton's
python/triton_kernels/tests at the pinned ref, shipped in the image) against the triton_kernels vLLM loads.

One test per group of upstream_selection.GROUPS; each runs its selected upstream tests in a pytest subprocess
(their own conftest.py, their own references) and fails when any of them fails. Per-group counts go into the
JUnit properties (`upstream:<group>`), which gracectl puts into the smoke record.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import triton_kernels_contract as tkc
import upstream_selection as sel

pytestmark = pytest.mark.upstream

GROUP_TIMEOUT_S = 150


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


@pytest.mark.parametrize("group", sel.GROUPS, ids=[g.name for g in sel.GROUPS])
def test_upstream_group(gpu, suite_dir, tk_env, group, record_testsuite_property):
    file_path = suite_dir / group.path.split("::")[0]
    if not file_path.exists():
        record_testsuite_property(sel.PROPERTY_PREFIX + group.name, "absent")
        pytest.skip(f"{group.path} is not in this triton_kernels test suite ({suite_dir})")
    k_args = ["-k", group.keyword] if group.keyword else []
    collected = _pytest(suite_dir, ["--collect-only", "-q", group.path, *k_args], tk_env, GROUP_TIMEOUT_S)
    node_ids = sel.parse_collect_only(collected.stdout)
    assert collected.returncode == 0 and node_ids, (
        f"collecting {group.path} {' '.join(k_args)} failed (exit {collected.returncode}): "
        f"{(collected.stdout + collected.stderr)[-1500:]}")
    chosen = sel.thin(node_ids, group.limit)
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        ran = _pytest(suite_dir, ["-q", f"--junitxml={junit}", *chosen], tk_env,
                      GROUP_TIMEOUT_S)
        results = sel.count_junit(str(junit)) if junit.exists() else {}
    c = sel.counts([r["outcome"] for r in results.values()])
    record_testsuite_property(sel.PROPERTY_PREFIX + group.name,
                              f"{sel.format_counts(c)} selected={len(chosen)} of={len(node_ids)}")
    print(f"upstream {group.name}: {len(chosen)} of {len(node_ids)} collected ({group.why}): {sel.format_counts(c)}")
    bad = [f"{name}: {r['message']}" for name, r in results.items() if r["outcome"] in ("failed", "error")]
    assert results, f"upstream {group.name} wrote no results (exit {ran.returncode}): {(ran.stdout + ran.stderr)[-1500:]}"
    assert not bad, f"upstream {group.name}: {len(bad)} of {len(results)} failed: " + " | ".join(bad[:5])
    assert c["passed"] > 0, f"upstream {group.name}: none of {len(results)} passed (all skipped?)"
