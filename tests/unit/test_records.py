"""Record naming (the tag-schema fallback) and the checks put_record makes before touching the registry."""

from __future__ import annotations

import pytest

from gracectl.adapters.registry import Registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import UsageError
from gracectl.tags.records import artifact_type, put_record, record_tag

NOWHERE = Registry("127.0.0.1:9", RegistryAccess())  # 127.0.0.1:9 (discard): no registry answers there

DIGEST = "sha256:" + "ab" * 32


def test_record_tag_follows_the_tag_schema_fallback():
    assert record_tag(DIGEST, "smoke") == "sha256-" + "ab" * 32 + ".smoke"
    assert len(record_tag(DIGEST, "bench")) <= 128
    assert artifact_type("bench") == "application/vnd.gracectl.bench.v1+json"


@pytest.mark.parametrize("digest,kind", [("sha256:abc", "smoke"), ("latest", "smoke"), (DIGEST, "Smoke"),
                                         (DIGEST, "smoke/x"), (DIGEST, "")])
def test_bad_digest_or_kind_is_a_usage_error(digest, kind):
    with pytest.raises(UsageError):
        record_tag(digest, kind)


def test_a_record_that_names_another_kind_or_digest_is_refused_before_any_request():
    # 127.0.0.1:9 (discard) has no registry: reaching the network would raise RegistryError instead.
    with pytest.raises(UsageError, match="kind='bench'"):
        put_record("127.0.0.1:9/repo", DIGEST, "smoke", {"kind": "bench"}, registry=NOWHERE)
    with pytest.raises(UsageError, match="digest="):
        put_record("127.0.0.1:9/repo", DIGEST, "smoke", {"kind": "smoke", "digest": "sha256:" + "0" * 64},
                   registry=NOWHERE)
