"""Pure logic of release operations: the benchmark gate, the smoke gate, the history model, names and refs."""

from __future__ import annotations

import base64
import json

import pytest

from gracectl import settings
from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.adapters.registry_auth import Credentials, credentials_for
from gracectl.image_ref import ImageRef
from gracectl.errors import NoHistoryError, UsageError
from gracectl.tags.gates import BenchRow, bench_gate, check_max_regression, compare_bench, gate_findings
from gracectl.tags.history import Entry, contradicted, settle, undo_target
from gracectl.tags.moves import moving_tag_name

GH200, H100 = "NVIDIA GH200 480GB", "NVIDIA H100 80GB HBM3"
A, B, C = ("sha256:" + c * 64 for c in "abc")


def bench(gpu: str, **medians: float) -> dict:
    return {"kind": "bench", "gpu": {"name": gpu},
            "results": [{"name": n, "median_ms": v, "unit": "ms"} for n, v in medians.items()]}


# -- benchmark comparison ----------------------------------------------------------------------------------
def test_faster_candidate_passes():
    c = compare_bench(bench(GH200, gemm1=9.0), bench(GH200, gemm1=10.0))
    assert c.compared and c.regressions == []
    assert c.rows[0].change == pytest.approx(-0.10)


def test_equal_medians_pass():
    c = compare_bench(bench(GH200, gemm1=10.0), bench(GH200, gemm1=10.0))
    assert c.compared and c.regressions == []


def test_slower_beyond_the_limit_is_a_regression_and_within_it_is_not():
    worse = compare_bench(bench(GH200, gemm1=10.6, gemm2=5.0), bench(GH200, gemm1=10.0, gemm2=5.0))
    assert [r.name for r in worse.regressions] == ["gemm1"]
    within = compare_bench(bench(GH200, gemm1=10.4), bench(GH200, gemm1=10.0))
    assert within.regressions == []
    assert compare_bench(bench(GH200, gemm1=10.6), bench(GH200, gemm1=10.0), max_regression=0.10).regressions == []


def test_other_gpu_model_is_not_compared():
    c = compare_bench(bench(H100, gemm1=100.0), bench(GH200, gemm1=1.0))
    assert not c.compared and c.regressions == [] and "different GPU models" in c.note


def test_only_results_in_common_with_valid_medians_are_compared():
    c = compare_bench(bench(GH200, new_case=1.0, gemm1=10.0, broken=0.0), bench(GH200, gemm1=10.0, old_case=1.0,
                                                                                 broken=1.0))
    assert [r.name for r in c.rows] == ["gemm1"]
    assert not compare_bench(bench(GH200, x=1.0), bench(GH200, y=1.0)).compared


def test_bench_gate_pairs_the_latest_record_per_gpu_model():
    candidate = [bench(GH200, gemm1=20.0), bench(GH200, gemm1=10.0), bench(H100, gemm1=99.0)]  # rerun: 10.0
    current = [bench(GH200, gemm1=10.0)]
    [c] = bench_gate(candidate, current)
    assert c.gpu == GH200 and c.regressions == []
    assert bench_gate([bench(H100, gemm1=1.0)], current) == []


def test_gate_findings_name_the_missing_smoke_record_and_each_regression():
    regression = bench_gate([bench(GH200, gemm1=11.0)], [bench(GH200, gemm1=10.0)])
    findings = gate_findings([{"kind": "smoke", "passed": False}], regression, A)
    assert len(findings) == 2
    assert "no passing smoke record" in findings[0]
    assert "gemm1" in findings[1] and "+10.0%" in findings[1] and GH200 in findings[1]
    assert gate_findings([{"passed": False}, {"passed": True}], [], A) == []
    assert gate_findings([{"passed": "yes"}], [], A)  # only a real boolean true passes


def test_bench_row_change_sign():
    assert BenchRow("x", 10.0, 12.0).change == pytest.approx(0.2)


# -- history model ---------------------------------------------------------------------------------------------
def entry(action, frm, to, status="done", undoes="") -> Entry:
    return Entry(action, to, frm, status=status, undoes=undoes)


def test_entry_round_trips_through_json_with_from_and_to():
    e = Entry("promote", B, A, who="ci", reason="r", forced=True, gate=["g"])
    d = json.loads(json.dumps(e.to_dict()))
    assert d["from"] == A and d["to"] == B
    assert Entry.from_dict({**d, "future_field": 1}) == e


def test_settle_resolves_a_pending_last_entry_against_the_tag():
    assert settle([entry("promote", A, B, "pending")], B)[-1].status == "done"
    assert settle([entry("promote", A, B, "pending")], A)[-1].status == "failed"
    assert settle([entry("promote", A, B, "failed")], B)[-1].status == "failed"  # only pending is settled
    assert settle([], A) == []


def test_settle_resolves_earlier_unsettled_entries_by_where_the_next_one_started():
    # A fenced-out holder's pending entry landed before the winner's move: the winner started from A, so the
    # pending A->B never happened; an "unknown" (answer lost) A->B followed by a move from B did.
    fenced = settle([entry("promote", A, B, "pending"), entry("promote", A, C, "done")], C)
    assert [e.status for e in fenced] == ["failed", "done"]
    lost = settle([entry("promote", A, B, "unknown"), entry("rollback", B, A, "done")], A)
    assert [e.status for e in lost] == ["done", "done"]


def test_a_failed_move_the_tag_then_held_is_contradicted_and_no_other():
    """A write the registry applied after its read-back: recorded failed, but the tag was at its target right
    after it (the next entry started there, or it is there now). The next move repairs it (records done)."""
    late = entry("promote", A, B, "failed")
    assert contradicted([entry("promote", None, A, "done"), late], B) == [late]
    assert contradicted([late, entry("rollback", B, A, "done")], A) == [late]
    assert contradicted([late], A) == []  # it really failed
    assert contradicted([entry("promote", A, B, "failed"), entry("promote", A, C, "done")], C) == []
    assert contradicted([entry("unlock", B, B, "failed")], B) == []  # not a move


def test_thresholds_must_be_finite_and_in_range():
    assert check_max_regression(0.05) == 0.05 and check_max_regression(0) == 0
    for bad in (float("nan"), float("inf"), -0.01, 10.5):
        with pytest.raises(UsageError, match="--max-regression"):
            check_max_regression(bad)


def test_the_latest_smoke_record_decides():
    assert gate_findings([{"passed": True}], [], A) == []
    assert "latest smoke record" in gate_findings([{"passed": True}, {"passed": False}], [], A)[0]
    assert gate_findings([{"passed": False}, {"passed": True}], [], A) == []
    assert "never smoke-tested" in gate_findings([], [], A)[0]


def test_rollbacks_walk_back_through_promotions():
    p1, p2 = entry("promote", None, A), entry("promote", A, B)
    history = [p1, p2]
    assert undo_target(history, "t") is p2
    history.append(entry("rollback", B, A, undoes=p2.id))
    assert undo_target(history, "t") is p1
    history.append(entry("rollback", A, None, undoes=p1.id))
    with pytest.raises(NoHistoryError, match="--to"):
        undo_target(history, "t")


def test_failed_moves_are_never_undone_and_explicit_moves_are():
    p1 = entry("promote", A, B)
    failed = entry("promote", B, C, "failed")
    assert undo_target([p1, failed], "t") is p1
    explicit = entry("rollback", B, C)  # rollback --to: a move that can itself be undone
    assert undo_target([p1, explicit], "t") is explicit
    with pytest.raises(NoHistoryError):
        undo_target([], "t")


# -- names and references -------------------------------------------------------------------------------------
def test_image_refs_always_name_the_registry(monkeypatch):
    monkeypatch.delenv("GRACECTL_REGISTRY", raising=False)
    ref = ImageRef.parse(f"127.0.0.1:5000/gh200-vllm-tfa@{A}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("127.0.0.1:5000", "gh200-vllm-tfa", "", A)
    ref = ImageRef.parse("registry.example.org/ml/gh200-vllm:v0.19.0-b7-abc1234")
    assert (ref.registry, ref.repository, ref.tag) == ("registry.example.org", "ml/gh200-vllm", "v0.19.0-b7-abc1234")
    assert str(ref.with_digest(B)) == f"registry.example.org/ml/gh200-vllm@{B}"
    with pytest.raises(UsageError, match="names no registry"):
        ImageRef.parse("gh200-vllm-tfa:v0.19.0-tfa")
    # GRACECTL_REGISTRY is put in front at the edge (gracectl.settings), never read by the parser
    monkeypatch.setenv("GRACECTL_REGISTRY", "127.0.0.1:5000/site")
    with pytest.raises(UsageError, match="names no registry"):
        ImageRef.parse("gh200-vllm-tfa:v0.19.0-tfa")
    given = settings.image_reference("gh200-vllm-tfa:v0.19.0-tfa", {"GRACECTL_REGISTRY": "127.0.0.1:5000/site"})
    assert ImageRef.parse(given).repo == "127.0.0.1:5000/site/gh200-vllm-tfa"
    assert settings.image_reference("reg.example/x:t", {"GRACECTL_REGISTRY": "other:5000"}) == "reg.example/x:t"
    for bad in ("127.0.0.1:5000/UPPER:t", "127.0.0.1:5000/x@sha256:short", "127.0.0.1:5000/x:bad$tag"):
        with pytest.raises(UsageError):
            ImageRef.parse(bad)


def test_moving_tag_names_leave_room_for_bookkeeping_tags():
    assert moving_tag_name("v0.19.0-tfa") == "v0.19.0-tfa"
    for bad in ("a" * 112, "v1.gracectl-history", "sha256-abc.smoke", "-x", "a/b"):
        with pytest.raises(UsageError):
            moving_tag_name(bad)


def test_loopback_registries_use_http_others_https():
    assert Registry("127.0.0.1:5000", RegistryAccess()).scheme == "http"
    assert Registry("localhost:5000", RegistryAccess()).scheme == "http"
    assert Registry("registry.example.org", RegistryAccess()).scheme == "https"


def test_credentials_from_docker_config_and_never_in_repr(tmp_path):
    assert credentials_for("127.0.0.1:5000", config_dir=tmp_path) is None
    token = base64.b64encode(b"ci:s3cret:with:colons").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "http://127.0.0.1:5000": {"auth": token}, "other:5000": {"username": "u", "password": "p"}}}))
    assert credentials_for("127.0.0.1:5000", config_dir=tmp_path) == Credentials("ci", "s3cret:with:colons")
    assert credentials_for("other:5000", config_dir=tmp_path) == Credentials("u", "p")
    assert credentials_for("127.0.0.1:5000", "me", "pw", config_dir=tmp_path) == Credentials("me", "pw")  # explicit wins
    assert "s3cret" not in repr(credentials_for("127.0.0.1:5000", config_dir=tmp_path))
    with pytest.raises(UsageError, match="--password-stdin"):
        credentials_for("127.0.0.1:5000", "me", "", config_dir=tmp_path)
