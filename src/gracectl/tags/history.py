"""The history of a moving tag: every promotion, rollback, forced unlock and repair, kept in the registry next
to the tag, APPEND-ONLY: each state of each entry is its own immutable artifact, tagged
`<tag>.gch-<entry id>-<status>`, and the history is their union, ordered by when each entry began. Nothing is ever
rewritten, so no write - however late it lands, whoever lost a lock meanwhile - can erase another's entry.
(Histories written before this, one `<tag>.gracectl-history` document, are still read and unioned in.)

Statuses. A move is written "pending" before the tag is touched, then "done", "failed" or "unknown" (the
tag write's answer was lost and the tag could not be read back); an entry's most settled state counts. Every
reader settles "pending" and "unknown" entries against the registry (settle()): an entry is done when the tag
pointed at its target right after it - at the next entry's `from`, or now for the last one - else failed. So
the history never claims a move that did not happen, and a move that did happen is never lost. A "failed"
entry that the same test says happened (a write applied after its read-back: contradicted()) is repaired by
the next move, which records it done (a "done" state outranks "failed").

The lock's fencing check (tags.lock.TagLock.check) still runs right before every write, so a holder that
lost its lock adds nothing more; what it wrote before stays, settled against the tag like any entry.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from gracectl.adapters.registry import DamagedArtifact, Registry
from gracectl.errors import NoHistoryError, RegistryError
from gracectl.image_ref import DIGEST_RE
from gracectl.tags.records import artifact_type

HISTORY_SUFFIX = ".gracectl-history"  # the one-document history of earlier versions: read, never written
LOCK_SUFFIX = ".gracectl-lock"
DAMAGED_SUFFIX = ".gracectl-damaged"  # a damaged history document, kept aside by `gracectl history --repair`
ENTRY_INFIX = ".gch-"  # <tag>.gch-<entry id>-<status>: one immutable artifact per state of an entry
MOVES = ("promote", "rollback")
ACTIONS = (*MOVES, "unlock", "repair")
STATUSES = ("pending", "unknown", "failed", "done")  # later in this list: more settled
UNSETTLED = ("pending", "unknown")
ID_RE = re.compile(r"^[A-Za-z0-9]{1,12}\Z")
ENTRY_TAG_RE = re.compile(r"\.gch-([A-Za-z0-9]{1,12})-(pending|unknown|failed|done)\Z")
# The longest companion tag of a moving tag (a moving tag leaves room for it within the 128 a tag may have).
COMPANION_LEN = len(ENTRY_INFIX) + 12 + 1 + len("unknown")


def is_bookkeeping_tag(tag: str) -> bool:
    """gracectl's own tags: a tag's history entries (and old history document) and lock, and the records'
    `sha256-<hex>.<kind>` indexes."""
    return (tag.endswith((HISTORY_SUFFIX, LOCK_SUFFIX, DAMAGED_SUFFIX)) or tag.startswith("sha256-")
            or bool(ENTRY_TAG_RE.search(tag)))


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
    began: float = field(default_factory=time.time)  # orders the history (moves are serialized by the lock)

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
        began = entry.began
        damaged = (
            not ID_RE.match(str(entry.id)),  # it names the entry's tags
            isinstance(began, bool) or not isinstance(began, (int, float)) or not math.isfinite(began),
            entry.action not in ACTIONS or entry.status not in STATUSES,
            not all(isinstance(t, str) for t in texts) or not isinstance(entry.forced, bool)
            or not isinstance(entry.gate, list),
            not (DIGEST_RE.match(str(entry.to)) or entry.action in ("unlock", "repair") and entry.to == ""),
            not (entry.from_ is None or DIGEST_RE.match(str(entry.from_))),  # never a path to follow
        )
        if any(damaged):
            raise ValueError(f"entry {str(d.get('id'))[:20]!r} has a field gracectl never writes")
        return entry


def _with_after(entries: list[Entry], current: str | None):
    """Each entry with where the tag pointed right after it: the next entry's `from`, or now for the last."""
    return zip(entries, [e.from_ for e in entries[1:]] + [current])


def settle(entries: list[Entry], current: str | None) -> list[Entry]:
    """Resolve "pending" and "unknown" moves against where the tag pointed right after each (see above)."""
    for e, after in _with_after(entries, current):
        if e.status in UNSETTLED:
            e.status = "done" if after == e.to else "failed"
    return entries


def contradicted(entries: list[Entry], current: str | None) -> list[Entry]:
    """Moves recorded "failed" that happened all the same: the tag pointed at the target right after them (and
    not before). A write the registry applied after gracectl had read the tag back; the record is repaired."""
    return [e for e, after in _with_after(entries, current)
            if e.status == "failed" and e.action in MOVES and after == e.to != e.from_]


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
    """The old history document is not what gracectl wrote; `gracectl history --repair` sets it aside."""


def _read(registry: Registry, repository: str, tag: str) -> tuple[str | None, list[Entry]]:
    """The old one-document history (digest, entries); (None, []) when there is none."""
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


def entry_tag(tag: str, entry: Entry) -> str:
    return f"{tag}{ENTRY_INFIX}{entry.id}-{entry.status}"


def _entries(registry: Registry, repository: str, tag: str) -> list[Entry]:
    """Every entry-state artifact of `tag`; one that does not read is said and skipped (it holds no entry)."""
    found = []
    prefix = tag + ENTRY_INFIX
    for name in registry.tags(repository):
        match = ENTRY_TAG_RE.search(name)
        if not name.startswith(prefix) or not match or len(name) != len(tag) + match.end() - match.start():
            continue
        try:
            artifact = registry.read_artifact(repository, name)
            entry = Entry.from_dict(json.loads(artifact[2])["entry"]) if artifact else None
        except (DamagedArtifact, ValueError, KeyError, TypeError):
            entry = None
        if entry is None or (entry.id, entry.status) != match.groups():
            print(f"warning: {registry.host}/{repository}:{name} is not a history entry gracectl wrote: ignored",
                  file=sys.stderr)
            continue
        found.append(entry)
    return found


def load(registry: Registry, repository: str, tag: str) -> list[Entry]:
    """The tag's history, oldest first: the old document's entries, then every entry's most settled state."""
    old = _read(registry, repository, tag)[1]
    latest: dict[str, Entry] = {}
    for e in [*old, *_entries(registry, repository, tag)]:
        have = latest.get(e.id)
        if have is None or STATUSES.index(e.status) > STATUSES.index(have.status):
            latest[e.id] = e
    first_seen = {e.id: i for i, e in enumerate(old)}
    return sorted(latest.values(), key=lambda e: (e.id not in first_seen, first_seen.get(e.id, 0), e.began, e.id))


def append(registry: Registry, repository: str, tag: str, entry: Entry,
           fence: Callable[[], None] = lambda: None) -> None:
    """Record `entry` in its present status: one new immutable artifact, never a rewrite of anything.
    `fence` runs right before the write (the lock's check: raises when the lock is no longer ours)."""
    fence()
    payload = json.dumps({"schema": 2, "repository": repository, "tag": tag, "entry": entry.to_dict()},
                         indent=2, sort_keys=True).encode()
    registry.push_artifact(repository, entry_tag(tag, entry), artifact_type("history-entry"), payload)


def set_aside_document(registry: Registry, repository: str, tag: str) -> tuple[str, list[Entry]]:
    """For `gracectl history --repair`: keep the damaged old document under <tag>.gracectl-damaged, put a valid
    empty one in its place, and return (its digest, the entries that still read)."""
    damaged = registry.get_manifest(repository, tag + HISTORY_SUFFIX)
    if damaged is None:
        return "", []
    registry.tag_digest(repository, damaged[1].digest, tag + DAMAGED_SUFFIX)
    kept: list[Entry] = []
    try:
        artifact = registry.read_artifact(repository, damaged[1].digest)
        kept = salvage(artifact[2]) if artifact else []
    except DamagedArtifact:
        pass
    empty = json.dumps({"schema": 1, "repository": repository, "tag": tag, "entries": []}).encode()
    registry.push_artifact(repository, tag + HISTORY_SUFFIX, artifact_type("history"), empty)
    return damaged[1].digest, kept
