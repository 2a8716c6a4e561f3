"""The history of a moving tag: `<tag>.gracectl-history`, an OCI artifact holding the JSON log of every
promotion, rollback and forced unlock, kept in the registry next to the tag.

Statuses. A move is written "pending" before the tag is touched, then "done", "failed" or "unknown" (the
tag write's answer was lost and the tag could not be read back). Every reader settles "pending" and
"unknown" entries against the registry (settle()): an entry is done when the tag pointed at its target
right after it - at the next entry's `from`, or now for the last one - else failed. So the history never
claims a move that did not happen, and a move that did happen is never lost.

Writes are a compare-and-swap on the history artifact's digest (append()): read it (digest D), merge the
entry in by id, check the tag still holds D, write, read back; when another writer slipped in, merge again
and retry. An entry is only ever added or updated, never dropped, whoever writes at the same time.
Distribution has no conditional PUT, so the swap is checked by reading back; the lock's fencing check
(release_lock.TagLock.check) runs right before every write.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from gracectl.adapters.registry import DamagedArtifact, Registry
from gracectl.errors import NoHistoryError, RegistryError
from gracectl.image_ref import DIGEST_RE
from gracectl.records import artifact_type

HISTORY_SUFFIX = ".gracectl-history"
LOCK_SUFFIX = ".gracectl-lock"
DAMAGED_SUFFIX = ".gracectl-damaged"  # a damaged history, kept aside by `gracectl history --repair`
MOVES = ("promote", "rollback")
ACTIONS = (*MOVES, "unlock", "repair")
STATUSES = ("pending", "done", "failed", "unknown")
UNSETTLED = ("pending", "unknown")
APPEND_ATTEMPTS = 8
READ_BACK_DELAY_S = 0.2


def is_bookkeeping_tag(tag: str) -> bool:
    """gracectl's own tags: a tag's history and lock, and the records' `sha256-<hex>.<kind>` indexes."""
    return tag.endswith((HISTORY_SUFFIX, LOCK_SUFFIX, DAMAGED_SUFFIX)) or tag.startswith("sha256-")


def short(digest: str | None) -> str:
    return digest[:19] if digest else "(none)"


@dataclass
class Entry:
    action: str  # "promote" | "rollback" | "unlock"
    to: str  # the digest the tag is moved to (an unlock: where the tag pointed)
    from_: str | None  # the digest it pointed at before (None: the move created the tag)
    who: str = ""
    when: str = ""
    reason: str = ""
    forced: bool = False
    source: str = ""  # what the operator named (IMAGE:BUILD_TAG, a digest, a tag; an unlock: the holder)
    undoes: str = ""  # for a rollback: the id of the move it reverts ("" for rollback --to)
    gate: list[str] = field(default_factory=list)  # gate findings (overridden ones when forced)
    status: str = "pending"  # "pending" -> "done" | "failed" | "unknown"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["from"] = d.pop("from_")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Entry:
        """An entry as stored; ValueError when any field is not what gracectl writes (a damaged history)."""
        if not isinstance(d, dict):
            raise ValueError("an entry is not an object")
        d = dict(d)
        d["from_"] = d.pop("from", None)
        entry = cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        texts = (entry.who, entry.when, entry.reason, entry.source, entry.undoes, entry.id)
        if entry.action not in ACTIONS or entry.status not in STATUSES or not all(isinstance(t, str) for t in texts) \
                or not isinstance(entry.forced, bool) or not isinstance(entry.gate, list) \
                or not (DIGEST_RE.match(str(entry.to)) or entry.action in ("unlock", "repair") and entry.to == "") \
                or not (entry.from_ is None or DIGEST_RE.match(str(entry.from_))):
            raise ValueError(f"entry {str(d.get('id'))[:20]!r} has a field gracectl never writes")
        return entry


def settle(entries: list[Entry], current: str | None) -> list[Entry]:
    """Resolve "pending" and "unknown" moves against where the tag pointed right after each (see above)."""
    for i, e in enumerate(entries):
        if e.status in UNSETTLED:
            after = entries[i + 1].from_ if i + 1 < len(entries) else current
            e.status = "done" if after == e.to else "failed"
    return entries


def undo_target(entries: list[Entry], tag: str) -> Entry:
    """The move a plain rollback reverts: the latest done move not already reverted (a stack, so repeated
    rollbacks walk back through the promotions)."""
    stack: list[Entry] = []
    for e in entries:
        if e.status != "done" or e.action not in MOVES:
            continue
        if e.action == "rollback" and e.undoes:
            stack = [s for s in stack if s.id != e.undoes]
        else:  # promotions and explicit `rollback --to` moves can both be undone
            stack.append(e)
    if not stack:
        raise NoHistoryError(f"tag {tag} has no promotion to roll back (see `gracectl history {tag}`); "
                             "name a target with --to DIGEST|TAG")
    return stack[-1]


class DamagedHistory(RegistryError):
    """The history artifact is not what gracectl writes; `gracectl history --repair` starts it anew."""


def _read(registry: Registry, repository: str, tag: str) -> tuple[str | None, list[Entry]]:
    try:
        found = registry.read_artifact(repository, tag + HISTORY_SUFFIX)
        if found is None:
            return None, []
        return found[0].digest, [Entry.from_dict(e) for e in json.loads(found[2])["entries"]]
    except (DamagedArtifact, ValueError, KeyError, TypeError) as e:
        where = f"{registry.host}/{repository}:{tag}"
        raise DamagedHistory(f"{where}{HISTORY_SUFFIX} is damaged ({str(e)[:80] or type(e).__name__}): repair it "
                             f"with `gracectl history {where} --repair --reason TEXT` (the damaged one is kept "
                             "aside; entries that still read are carried over)") from None


def salvage(payload: bytes) -> list[Entry]:
    """The entries of a damaged history document that still read as entries."""
    try:
        raw = json.loads(payload).get("entries")
    except (ValueError, AttributeError):
        return []
    kept = []
    for item in raw if isinstance(raw, list) else []:
        try:
            kept.append(Entry.from_dict(item))
        except (ValueError, TypeError):
            continue
    return kept


def rewrite(registry: Registry, repository: str, tag: str, entries: list[Entry]) -> None:
    """Write the history anew (only `gracectl history --repair`, under the tag's lock; moves use append)."""
    payload = json.dumps({"schema": 1, "repository": repository, "tag": tag,
                          "entries": [e.to_dict() for e in entries]}, indent=2).encode()
    registry.push_artifact(repository, tag + HISTORY_SUFFIX, artifact_type("history"), payload)


def load(registry: Registry, repository: str, tag: str) -> list[Entry]:
    return _read(registry, repository, tag)[1]


def _merge(entries: list[Entry], entry: Entry) -> list[Entry]:
    """`entry` in place of the one with its id, or appended."""
    if any(e.id == entry.id for e in entries):
        return [entry if e.id == entry.id else e for e in entries]
    return entries + [entry]


def append(registry: Registry, repository: str, tag: str, entry: Entry,
           fence: Callable[[], None] = lambda: None) -> None:
    """Add or update `entry` (by id) in the tag's history: compare-and-swap on the artifact digest, retried.
    `fence` runs right before each write (the lock's check: raises when the lock is no longer ours)."""
    history_tag = tag + HISTORY_SUFFIX
    for _ in range(APPEND_ATTEMPTS):
        digest, entries = _read(registry, repository, tag)
        merged = _merge(entries, entry)
        if merged == entries:
            return  # already there, as it is
        fence()
        head = registry.head_manifest(repository, history_tag)
        if (head.digest if head else None) != digest:
            continue  # changed since we read it: merge into the new one
        payload = json.dumps({"schema": 1, "repository": repository, "tag": tag,
                              "entries": [e.to_dict() for e in merged]}, indent=2).encode()
        written = registry.push_artifact(repository, history_tag, artifact_type("history"), payload).digest
        time.sleep(READ_BACK_DELAY_S)  # let a concurrent writer's PUT land, then see whose write stayed
        back = registry.head_manifest(repository, history_tag)
        if back and back.digest == written:
            if digest:
                registry.delete_manifest(repository, digest)  # superseded: leave no untagged artifact behind
            return
        if any(e.to_dict() == entry.to_dict() for e in load(registry, repository, tag)):
            return  # the later writer merged our entry in
    raise RegistryError(f"could not write the history of {tag}: it kept changing under "
                        f"{APPEND_ATTEMPTS} attempts (retry; `gracectl history` shows what is recorded)")
