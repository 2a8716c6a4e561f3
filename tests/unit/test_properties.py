"""Property-based (hypothesis): whatever an operator types or a manifest file holds, only a typed one-line
error with a documented exit code comes out - never a traceback. Registry-free: the registry named here
(127.0.0.1:9) refuses connections, so an input that passes validation ends in exit 5, and nothing is
written anywhere. tests/integration/test_release_faults.py tries --to values against the real registry.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gracectl.cli import main
from gracectl.errors import ManifestError, UsageError
from gracectl.image_ref import ImageRef
from gracectl.releases.manifest import load_manifest, load_release

NO_REGISTRY = "127.0.0.1:9"
DOCUMENTED = {0, 2, 5, 7, 8, 9, 11, 12}  # the release operations' codes in CLAWMINE.md's exit-code table
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)
hostile = st.one_of(text, st.sampled_from(["../../other/manifests/x", "a b", "127.0.0.1:abc/x:b1", "x" * 5000,
                                           "sha256-" + "0" * 64 + ".smoke", "t.gracectl-lock", "-", "@", ":"]))


def run_cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as e:
        main(list(argv))
    return e.value.code, err.getvalue()


def assert_one_line_error(code: int, err: str) -> None:
    assert code in DOCUMENTED, (code, err)
    lines = [line for line in err.splitlines() if not line.startswith("+ ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


@SETTINGS
@given(hostile)
def test_image_refs_parse_or_raise_usage_error(value):
    try:
        ref = ImageRef.parse(value)
    except UsageError:
        return
    assert ImageRef.parse(str(ref)) == ref  # whatever parses, round-trips


@SETTINGS
@given(hostile)
def test_promote_source_is_validated_before_anything_else(monkeypatch, value):
    monkeypatch.delenv("GRACECTL_REGISTRY", raising=False)
    assert_one_line_error(*run_cli("promote", value, "--to", "v1"))


@SETTINGS
@given(hostile)
def test_rollback_to_values_give_one_line_errors(monkeypatch, value):
    code, err = run_cli("rollback", f"{NO_REGISTRY}/x:v1", "--to", value, "--deadline", "5")
    assert_one_line_error(code, err)
    assert code in (2, 5)  # refused as input, or valid and then the (absent) registry is not reachable


@SETTINGS
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_thresholds_outside_0_to_1000_percent_are_usage_errors(value):
    code, err = run_cli("promote", f"{NO_REGISTRY}/x@sha256:{'0' * 64}", "--to", "v1",
                        "--max-regression", repr(value))
    assert_one_line_error(code, err)
    valid = math.isfinite(value) and 0 <= value / 100 <= 10
    assert code == (5 if valid else 2), (value, err)


@SETTINGS
@given(hostile)
def test_release_names_never_leave_the_releases_folder(tmp_path, value):
    (tmp_path / "releases").mkdir(exist_ok=True)
    with contextlib.suppress(ManifestError):
        load_release(value, tmp_path / "releases")
        pytest.fail(f"{value!r} loaded")  # no release exists there, so nothing may load


@SETTINGS
@given(st.one_of(st.binary(max_size=400), text.map(lambda t: t.encode("utf-16")),
                 st.dictionaries(st.sampled_from(["release", "sources", "base", "name", "tag"]),
                                 st.text(max_size=20), max_size=4).map(
                     lambda d: "\n".join(f'{k} = "{v}"' for k, v in d.items()).encode())))
def test_manifest_files_load_or_raise_manifest_error(tmp_path, data):
    path = tmp_path / "x.toml"
    path.write_bytes(data)
    with contextlib.suppress(ManifestError):
        load_manifest(Path(path))
