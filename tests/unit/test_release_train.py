"""gracectl.release_train's pure parts: comparing a manifest with what upstream derives (drift, overrides,
chosen values), the TOML it writes, and the one owner of the release list (releases/ -> the Jenkinsfile).
Deriving from real sdists and indexes: tests/integration/test_release_upstream.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gracectl.manifest import load_manifest, load_release, release_names, releases_dir
from gracectl.release_train import (Derived, compare, flatten, jenkins_release_choices, ordered_releases,
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
