"""`gracectl release watch` end to end: the site's index (a PEP 691 index on 127.0.0.1 listing the vllm versions
this test chooses, the REAL sdists from the test bed's upstream cache, every other page PyPI's), its Triton git
mirror (a bare repository with the real triton_kernels trees vLLM's wheels vendor), and the site's git server (a
bare repository the watch pushes each release's branch to). A release added to the index comes out as manifests on
a branch; the 0.27-style release as a fallback-only record naming the missing names; 0.34.0 as refused.

STAND-IN: the triton_kernels of Triton 3.7.1 (GitHub is not reachable here, and no wheel vendors it) is the real
v3.6.0 tree with matmul_ogs renamed matmul, the layout Triton 3.7 moved to (vLLM 0.27.1 imports matmul_ogs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gracectl.releases.manifest import load_manifest, releases_dir
from gracectl.releases.train import jenkins_release_choices, with_release_choices
from gracectl.testbed.standins import GIT_ENV, commit_tree
from gracectl.testbed.upstream import upstream_cache
from index_standins import VllmIndex, serve, standin_index

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TRITON = "https://github.com/triton-lang/triton.git"


def triton_mirror(bed, tmp_path: Path) -> Path:
    """The site's Triton mirror: tags v3.5.1 and v3.6.0 (the real trees vLLM 0.25.0 / 0.19.0 wheels vendor) and a
    STAND-IN v3.7.1 (module docstring)."""
    vendored = upstream_cache(bed.root) / "triton_kernels"
    bare = tmp_path / "triton.git"
    for tag, tree in (("v3.5.1", vendored / "vllm-0.25.0-vendored" / "triton_kernels"),
                      ("v3.6.0", vendored / "vllm-0.19.0-vendored" / "triton_kernels"),
                      ("v3.7.1", None)):
        work = tmp_path / f"triton-{tag}"
        package = work / "python" / "triton_kernels" / "triton_kernels"
        shutil.copytree(tree or vendored / "vllm-0.19.0-vendored" / "triton_kernels", package)
        if tree is None:
            (package / "matmul_ogs.py").rename(package / "matmul.py")
            (package / "matmul_ogs_details").rename(package / "matmul_details")
        commit_tree(bare, work, f"triton_kernels {tag}", tag=tag)
    return bare


def site_repo(tmp_path: Path, names: tuple[str, ...] = ("v0.19.0-tfa", "v0.19.0")) -> Path:
    """The project's repository on the site's git server: main holds the pair `names` and the Jenkinsfile."""
    work = tmp_path / "main-tree"
    (work / "releases").mkdir(parents=True)
    for name in names:
        shutil.copy(releases_dir() / f"{name}.toml", work / "releases")
    (work / "Jenkinsfile").write_text(with_release_choices((REPO / "Jenkinsfile").read_text(), list(names)))
    bare = tmp_path / "site.git"
    commit_tree(bare, work, "main")
    return bare


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout


def watch(bed, tmp_path: Path, name: str, site: Path, url: str, mirror: Path, cache: Path, *more: str):
    """One run of the job: a clean checkout of main, then `gracectl release watch ... --push` (+ `more`)."""
    checkout = tmp_path / name
    git("clone", "-q", f"file://{site}", str(checkout))
    report = tmp_path / f"{name}.json"
    env = {**os.environ, "GRACECTL_UPSTREAM_CACHE": str(cache), "GRACECTL_RELEASES_DIR": str(checkout / "releases")}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "gracectl", "release", "watch", "--index-url", url, "--mirror",
                           str(mirror), "--report", str(report), "--push", f"file://{site}", *more],
                          capture_output=True, text=True, env=env, timeout=900)
    print(f"{name}: {time.monotonic() - start:.1f} s\n{done.stdout}")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done, json.loads(report.read_text())


def watch_cache(bed, tmp_path: Path) -> Path:
    """The watch's upstream cache: uv's is safe to share (the other release tests' resolutions); sdists and trees
    come from the site's index and Triton mirror, into this test's own cache."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "uv").symlink_to(upstream_cache(bed.root) / "uv")
    return cache


def site_index(bed, tmp_path: Path, versions: list[str]) -> VllmIndex:
    return VllmIndex(versions, upstream_cache(bed.root) / "index" / "pypi.org_simple" / "files", tmp_path / "index")


def watch_mirror(tmp_path: Path, triton: Path, url: str, flashinfer_url: str = "") -> Path:
    """The site's mirror as the watch reads it: Triton from its git mirror; resolution through PyPI itself (the
    site's index lists and serves what the watch reads; uv needs every project); FlashInfer's wheel site (0.27.1
    adds it): a STAND-IN."""
    mirror = tmp_path / "mirror.toml"
    mirror.write_text(f'[repos]\n"{TRITON}" = "file://{triton}"\n\n[indexes]\n"{url}" = "https://pypi.org/simple"\n'
                      + (f'"https://flashinfer.ai/whl/" = "{flashinfer_url}"\n' if flashinfer_url else ""))
    return mirror


def test_release_watch_writes_new_releases_to_branches_and_says_what_it_refused(bed, tmp_path):
    cache = watch_cache(bed, tmp_path)
    index = site_index(bed, tmp_path, ["0.19.0", "0.25.0"])
    flashinfer = standin_index(tmp_path / "flashinfer-whl", "flashinfer-cubin", "0.6.16.post3")
    site, triton = site_repo(tmp_path), triton_mirror(bed, tmp_path)
    with index.serve() as url, serve(flashinfer) as flashinfer_url:
        mirror = watch_mirror(tmp_path, triton, url, flashinfer_url)

        # Run 1: the index serves 0.25.0, which main lacks: written, checked, pushed to its own branch.
        done, report = watch(bed, tmp_path, "run1", site, url, mirror, cache)
        [first] = report["releases"]
        assert first["version"] == "0.25.0" and first["outcome"] == "written", first
        assert first["manifests"] == ["v0.25.0-tfa", "v0.25.0"] and first["check"] == "passed"
        assert first["branch"] == "release-watch/v0.25.0" and report["newest_known"] == "0.19.0"
        assert done.stdout.startswith("0.25.0: written v0.25.0-tfa, v0.25.0 on release-watch/v0.25.0 (")
        branch = "release-watch/v0.25.0"
        assert git("--git-dir", str(site), "rev-parse", branch).strip() == first["commit"]
        for name in ("v0.25.0-tfa", "v0.25.0"):  # what release new 0.25.0 writes from PyPI, but for the index
            pushed = git("--git-dir", str(site), "show", f"{branch}:releases/{name}.toml")
            assert pushed.replace(url, "https://pypi.org/simple") == (releases_dir() / f"{name}.toml").read_text()
        jenkinsfile = git("--git-dir", str(site), "show", f"{branch}:Jenkinsfile")
        assert jenkins_release_choices(jenkinsfile) == ["v0.25.0-tfa", "v0.25.0", "v0.19.0-tfa", "v0.19.0"]
        assert git("--git-dir", str(site), "log", "--format=%s", "-1", branch).startswith(
            "releases: vLLM 0.25.0 (tfa + fallback)")
        assert "/files/vllm-0.25.0.tar.gz" in index.requests  # the real sdist, from the index

        # Run 2, six hours later: upstream published 0.27.1 and 0.34.0; main still lacks 0.25.0 (unreviewed).
        index.versions += ["0.27.1", "0.34.0"]
        done, report = watch(bed, tmp_path, "run2", site, url, mirror, cache)
    by = {r["version"]: r for r in report["releases"]}
    assert list(by) == ["0.25.0", "0.27.1", "0.34.0"]
    assert by["0.25.0"]["outcome"] == "pending" and "already on release-watch/v0.25.0" in by["0.25.0"]["reason"]
    fallback = by["0.27.1"]
    assert fallback["outcome"] == "fallback-only" and fallback["manifests"] == ["v0.27.1"], fallback
    assert fallback["missing"] == ["triton_kernels.matmul_ogs", "triton_kernels.matmul_ogs_details.opt_flags"]
    assert fallback["triton_kernels"] == "the triton_kernels of Triton 3.7.1 (tag v3.7.1)"
    assert "--triton-kernels-ref REF --reason" in fallback["reason"]
    pushed = git("--git-dir", str(site), "ls-tree", "--name-only", "release-watch/v0.27.1", "releases/").split()
    assert pushed == ["releases/v0.19.0-tfa.toml", "releases/v0.19.0.toml", "releases/v0.27.1.toml"]
    written = tmp_path / "v0.27.1.toml"
    written.write_text(git("--git-dir", str(site), "show", "release-watch/v0.27.1:releases/v0.27.1.toml"))
    m = load_manifest(written)
    assert m.release.triton_kernels == "vendored" and not m.extends and "matmul_ogs" in m.provenance[
        "release.triton_kernels"]
    refused = by["0.34.0"]
    assert refused["outcome"] == "refused" and not refused["branch"], refused
    # Its first failure (a build step of its own image nothing here reviewed yet); nothing written or pushed.
    assert refused["reason"].startswith("vllm 0.34.0: ") and refused["reason"].endswith("(nothing written)")
    assert "release-watch/v0.34.0" not in git("--git-dir", str(site), "branch", "--list")
    message = git("--git-dir", str(site), "log", "--format=%B", "-1", "release-watch/v0.27.1")
    assert message.startswith("releases: vLLM 0.27.1 (fallback only: no tfa image)\n") and fallback["reason"] in message
    lines = done.stdout.splitlines()
    assert lines[0].startswith("0.25.0: pending: already on release-watch/v0.25.0")
    assert lines[1].startswith("0.27.1: tfa impossible, fallback only: v0.27.1 on release-watch/v0.27.1")
    assert "missing triton_kernels.matmul_ogs, triton_kernels.matmul_ogs_details.opt_flags in the triton_kernels of" \
           " Triton 3.7.1 (tag v3.7.1)" in lines[1]
    assert lines[2].startswith("0.34.0: refused: vllm 0.34.0: ")
    assert lines[3].startswith("release watch: 3 new release(s)")
