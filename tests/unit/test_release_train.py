"""gracectl.releases.train's pure parts: comparing a manifest with what upstream derives (drift, overrides,
chosen values), the TOML it writes, and the one owner of the release list (releases/ -> the Jenkinsfile).
Deriving from real sdists and indexes: tests/integration/test_release_upstream.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gracectl.releases.manifest import load_manifest, load_release, release_names, releases_dir
from gracectl.releases.train import (Derived, compare, flatten, jenkins_release_choices, ordered_releases,
                                    sync_jenkinsfile, to_toml)


def derived_from(name: str) -> Derived:
    """What upstream would derive, taken from a shipped manifest (so that it matches it exactly)."""
    m = load_release(name)
    data = m.model_dump(mode="json")
    for key in ("release", "provenance", "extends"):
        data.pop(key, None)
    return Derived(m.sources.vllm.ref.removeprefix("v"), data, {p: "file:1" for p in flatten(data)},
                   sdist_naming(m))


def sdist_naming(m) -> Path:
    """A stand-in sdist (its member list only) holding every file the manifest's build-step decisions name."""
    import re
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="sdist-"))
    named = {n for s in m.build_steps.values() for n in re.findall(r"`([^`\s]+)`", s.done or s.excluded)}
    (root / ".members").write_text("".join(f"{n}\n" for n in sorted(named)))
    return root


@pytest.mark.parametrize("name", release_names())
def test_a_shipped_manifest_matches_itself(name):
    lines = compare(load_release(name), derived_from(name))
    assert lines and {line.status for line in lines} <= {"ok", "override"}


def test_a_changed_pin_is_drift_naming_both_values_and_the_origin(tmp_path):
    d = derived_from("v0.19.0-tfa")
    d.data["sources"]["flashmla"]["ref"] = "f" * 40
    d.provenance["sources.flashmla.ref"] = "cmake/external_projects/flashmla.cmake:19"
    drift = [line for line in compare(load_release("v0.19.0-tfa"), d) if line.status == "DRIFT"]
    assert [line.path for line in drift] == ["sources.flashmla.ref"]
    assert "upstream " + "f" * 40 in drift[0].text and "flashmla.cmake:19" in drift[0].text


def test_a_new_upstream_source_and_a_gone_one_are_drift():
    d = derived_from("v0.19.0-tfa")
    cmake = d.data["sources"]["cmake"]
    cmake["deepselect"] = {"repo": "https://github.com/vllm-project/DeepSelect.git", "ref": "a" * 40,
                           "env": "DEEPSELECT_SRC_DIR"}
    del cmake["qutlass"]
    drift = {line.path: line.text for line in compare(load_release("v0.19.0-tfa"), d) if line.status == "DRIFT"}
    assert "the manifest lacks it" in drift["sources.cmake.deepselect.ref"]
    assert "upstream no longer has it" in drift["sources.cmake.qutlass.ref"]


def test_chosen_values_never_drift_and_overrides_are_reported_not_failed():
    d = derived_from("v0.19.0-tfa")
    d.data["build"]["max_jobs"] = 2  # a site's choice (upstream's versions.json says MAX_JOBS=2)
    d.data["base"]["build"]["image"] = "nvidia/cuda"
    m = load_release("v0.19.0-tfa").model_copy(update={"provenance": {"torch.version": "override: test"}})
    d.data["torch"]["version"] = "9.9.9+cu129"
    statuses = {line.path: line.status for line in compare(m, d)}
    assert statuses["torch.version"] == "override"
    assert "build.max_jobs" not in statuses and "base.build.image" not in statuses


def test_to_toml_round_trips_what_release_new_writes(tmp_path):
    data = {"schema_version": 1, "release": {"name": "v9.9.9-tfa", "image": "a", "tag": "v9.9.9-tfa",
                                             "triton_kernels": "site-packages"},
            "torch": {"cuda_build_on_index": True, "version": "2.14.0"}, "cuda": {"runtime_packages": ["a", "b"]},
            "sources": {"cmake": {"tml_fa4": {"ref": "v1", "env": "TML_FA4_SRC_DIR"}}},
            "provenance": {"sources.cmake.tml_fa4.ref": 'cmake/x.cmake:3 ("quoted")'}}
    assert tomllib.loads(to_toml(data)) == data


def test_release_choices_are_ordered_newest_first_tfa_before_fallback():
    assert ordered_releases(["v0.19.0", "v0.25.0-tfa", "v0.19.0-tfa", "v0.25.0", "v0.9.0"]) == [
        "v0.25.0-tfa", "v0.25.0", "v0.19.0-tfa", "v0.19.0", "v0.9.0"]


def test_the_jenkinsfile_lists_exactly_releases(tmp_path):
    """releases/ owns the list; `gracectl release new` rewrites the Jenkinsfile's copy (sync_jenkinsfile)."""
    text = (releases_dir().parent / "Jenkinsfile").read_text()
    assert jenkins_release_choices(text) == ordered_releases(release_names())
    # A copy of the checkout: a release added to releases/ reaches the Jenkinsfile's choices.
    (tmp_path / "releases").mkdir()
    for name in release_names():
        (tmp_path / "releases" / f"{name}.toml").write_text((releases_dir() / f"{name}.toml").read_text())
    (tmp_path / "releases" / "v9.0.0.toml").write_text(
        (releases_dir() / "v0.19.0.toml").read_text().replace('"v0.19.0"', '"v9.0.0"'))
    (tmp_path / "Jenkinsfile").write_text(text)
    assert load_manifest(tmp_path / "releases" / "v9.0.0.toml").release.name == "v9.0.0"
    assert sync_jenkinsfile(tmp_path / "releases", tmp_path / "Jenkinsfile")
    assert jenkins_release_choices((tmp_path / "Jenkinsfile").read_text())[0] == "v9.0.0"
    assert not sync_jenkinsfile(tmp_path / "releases", tmp_path / "Jenkinsfile")  # already in step


def test_an_unknown_version_lists_the_newest_versions_as_versions_not_strings(tmp_path):
    """0.99.0 once listed "its newest vllm versions: 0.8.3 ... 0.9.2" (string order); an index page that is not
    PEP 700's list orders its sdists the same way."""
    import json

    from gracectl.adapters.package_index import PackageIndex
    from gracectl.errors import UpstreamError

    index = PackageIndex("https://index.example/simple", tmp_path, offline=True)
    page = tmp_path / "index" / "index.example_simple" / "vllm.json"
    page.parent.mkdir(parents=True)
    versions = ["0.10.0", "0.9.2", "0.8.3", "0.34.0", "0.19.0", "0.4.0.post1", "not-a-version"]
    for listed in (versions, None):
        files = [{"filename": f"vllm-{v}.tar.gz", "url": f"vllm-{v}.tar.gz"} for v in versions]
        page.write_text(json.dumps({"files": files, **({"versions": listed} if listed else {})}))
        assert index.versions("vllm") == ["0.4.0.post1", "0.8.3", "0.9.2", "0.10.0", "0.19.0", "0.34.0"]
        with pytest.raises(UpstreamError, match=r"its newest vllm versions: 0\.4\.0\.post1, 0\.8\.3, 0\.9\.2, "
                                                r"0\.10\.0, 0\.19\.0, 0\.34\.0\)"):
            index.sdist("vllm", "0.99.0")


def test_an_overridden_triton_kernels_ref_is_shown_as_an_override_with_upstreams_tag():
    """`release new 0.27.1 --triton-kernels-ref v3.6.0 --reason ...`: check derives with the manifest's own
    choices, so the override's value is what it derives; the line names the tag upstream implies instead."""
    d = derived_from("v0.25.0-tfa")
    d.upstream["sources.triton_kernels.ref"] = "v3.7.1"
    d.upstream_origin["sources.triton_kernels.ref"] = "the triton_kernels of triton 3.7.1, which torch requires"
    m = load_release("v0.25.0-tfa")
    m = m.model_copy(update={"provenance": {**m.provenance, "sources.triton_kernels.ref": "override: reviewed"}})
    [line] = [line for line in compare(m, d) if line.path == "sources.triton_kernels.ref"]
    assert line.status == "override"
    assert line.text == ("v3.6.0 (upstream: v3.7.1, the triton_kernels of triton 3.7.1, which torch requires; "
                         "override: reviewed)")


STANDINS = Path(__file__).resolve().parents[2] / "scripts" / "testbed" / "standins"


def test_a_pairing_failure_names_the_triton_release_of_the_tree_not_the_layout_vllm_detects(tmp_path):
    """A Triton 3.7.1 tree has no matmul_ogs (vLLM's get_triton_kernels_version() calls that layout "3.8"): the
    message names Triton 3.7.1 and its tag, and the names vLLM misses."""
    import shutil

    from gracectl.releases.train import pairing

    tree = tmp_path / "triton_kernels"
    shutil.copytree(STANDINS / "triton" / "python" / "triton_kernels" / "triton_kernels", tree)
    (tree / "matmul_ogs.py").unlink()
    line = pairing(STANDINS / "vllm", tree, "site-packages v3.7.1", "v3.7.1")
    assert line.status == "FAIL"
    assert "with the triton_kernels of Triton 3.7.1 (tag v3.7.1) from" in line.text
    assert "missing triton_kernels.matmul_ogs (no matmul_ogs.py" in line.text and "3.8" not in line.text
    ok = pairing(STANDINS / "vllm", STANDINS / "triton" / "python" / "triton_kernels" / "triton_kernels",
                 "site-packages v3.6.0", "v3.6.0")
    assert ok.status == "ok" and ok.text.startswith("the triton_kernels of Triton 3.6.0 (tag v3.6.0): all ")


def test_offline_without_the_tree_names_the_way_to_give_it(tmp_path):
    from gracectl.errors import UpstreamError
    from gracectl.releases.train import triton_kernels_tree

    with pytest.raises(UpstreamError, match=r"not in the cache .*--triton-kernels-tree v3\.7\.1=DIR"):
        triton_kernels_tree("https://github.com/triton-lang/triton.git", "v3.7.1", "python/triton_kernels",
                            tmp_path, offline=True)


def test_a_fallback_only_manifest_stands_alone_says_why_and_checks_clean(tmp_path):
    """Where vLLM cannot work with its Triton's triton_kernels, `release new` writes v<V>.toml alone: every pin
    (no tfa twin to extend), vendored only, the reason on top and in [provenance]; release check's comparison
    of it with upstream is clean."""
    from gracectl.releases.train import Choices, render_fallback_only
    from gracectl.releases.upstream import FetchSource

    d = derived_from("v0.25.0-tfa")
    d.data["sources"] = {k: v for k, v in d.data["sources"].items() if v is not None}  # as derive writes them
    d.vendored = FetchSource("triton_kernels", "https://github.com/triton-lang/triton.git", "v3.5.1", "", "", "x:1")
    why = "vLLM 0.25.0 imports triton_kernels.matmul_ogs; the triton_kernels of Triton 3.7.1 (tag v3.7.1) ..."
    path = tmp_path / "v0.25.0.toml"
    path.write_text(render_fallback_only(d, Choices(), why))
    assert path.read_text().startswith("# FALLBACK ONLY: vLLM 0.25.0 imports triton_kernels.matmul_ogs;")
    m = load_manifest(path)
    assert not m.extends and m.release.triton_kernels == "vendored" and not m.release.fallback
    assert m.provenance["release.triton_kernels"] == why
    assert {line.status for line in compare(m, d)} <= {"ok", "override"}
    shipped = load_release("v0.25.0")  # the same pins as the shipped fallback, which extends its tfa twin
    mine, theirs = ({k: v for k, v in x.model_dump().items() if k not in ("release", "provenance", "extends")}
                    for x in (m, shipped))
    assert mine == theirs


def test_release_watch_fails_only_when_the_index_answers_nothing_and_reports_it(tmp_path):
    """An unreachable index is the watch's one operational failure (exit 13, the report says so); a release it
    refuses is an outcome (tests/integration/test_release_watch.py)."""
    import json
    import os
    import subprocess
    import sys

    from gracectl.errors import UpstreamError

    releases = tmp_path / "releases"
    releases.mkdir()
    (releases / "v0.19.0.toml").write_text((releases_dir() / "v0.19.0-tfa.toml").read_text().replace(
        'name = "v0.19.0-tfa"', 'name = "v0.19.0"'))
    env = {**os.environ, "GRACECTL_RELEASES_DIR": str(releases), "GRACECTL_UPSTREAM_CACHE": str(tmp_path / "c")}
    report = tmp_path / "watch.json"
    done = subprocess.run([sys.executable, "-m", "gracectl", "release", "watch", "--index-url",
                           "http://127.0.0.1:9/simple", "--report", str(report)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == UpstreamError.exit_code, done.stdout + done.stderr
    assert "127.0.0.1:9/simple/vllm/ cannot be reached" in done.stderr
    data = json.loads(report.read_text())
    assert data["releases"] == [] and "cannot be reached" in data["error"] and data["newest_known"] == "0.19.0"


def test_the_watch_lists_new_releases_as_versions_from_the_newest_known_or_since(tmp_path):
    import json

    from gracectl.adapters.package_index import PackageIndex
    from gracectl.releases.watch import new_versions

    page = tmp_path / "index" / "index.example_simple" / "vllm.json"
    page.parent.mkdir(parents=True)
    page.write_text(json.dumps({"files": [], "versions": ["0.9.0", "0.19.0", "0.25.0", "0.26.0rc1", "0.27.1",
                                                          "0.100.0"]}))
    index = PackageIndex("https://index.example/simple", tmp_path, offline=True)
    releases = tmp_path / "releases"
    releases.mkdir()
    for name in ("v0.19.0-tfa", "v0.19.0", "v0.25.0"):  # 0.25.0 fallback only
        (releases / f"{name}.toml").write_text("")
    assert new_versions(index, releases) == ["0.27.1", "0.100.0"]  # no pre-releases; 0.100 after 0.27
    assert new_versions(index, releases, since="0.9.0") == ["0.9.0", "0.27.1", "0.100.0"]
