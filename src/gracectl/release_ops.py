"""Release operations by digest: publish, promote (with the smoke and performance gates), rollback, history.

All state lives in the registry, next to the images, so any machine with registry access can roll back:
- the moving tag itself (e.g. gh200-vllm-tfa:v0.19.0-tfa), moved BY DIGEST (manifest bytes re-PUT, no pull);
- `<tag>.gracectl-history`: an OCI artifact holding the JSON log of every promotion and rollback;
- `<tag>.gracectl-lock`: an OCI artifact naming who changes the tag right now;
- records (records.py): `sha256-<hex>.smoke` / `.bench` next to each image digest.

Order of writes in a move (promote or rollback), all under the tag's lock:
  1. re-read the tag: it must still point where the operator's checks saw it (compare-and-swap by
     digest), else ConflictError and nothing is written;
  2. append the history entry with status "pending";
  3. move the tag;  4. mark the entry "done" (or "failed" when the move failed).
If the process or the registry dies between 2 and 4, the entry stays "pending"; every reader settles it
against the registry: "done" if the tag points at the entry's target digest, else "failed". So the
history never claims a move that did not happen, and a move that did happen is never lost.

Concurrency. distribution v2 has no conditional PUT (no If-Match on tags), so the lock is best effort,
made of three layers:
  - a local flock per tag (GRACECTL_LOCK_DIR, default /tmp/gracectl-locks): two gracectl processes on
    one host never overlap, the second fails at once with ConflictError;
  - the registry lock tag: claimed by writing an artifact with a unique nonce, then read back after a
    settle delay (GRACECTL_LOCK_SETTLE_S, default 1 s): of writers that overlap, only the last PUT
    reads back its own nonce; the others fail with ConflictError. A lock older than its TTL (120 s) is
    stale and may be taken over; so may a lock written from this host and lock directory once we hold
    the local flock (its holder is provably gone);
  - the compare-and-swap check of the tag's digest just before the move, and a second read-back of the
    lock right before the tag PUT.
Residual risk: a writer that stalls for longer than the settle delay between reading a free lock and
writing its claim (or past the TTL while holding it) can overlap another holder; both CAS checks could
then pass and the later tag PUT wins. The history would still record both. That is why Jenkins also
wraps promote/rollback in `lock("<registry>/<repo>:<tag>")`: on one Jenkins the overlap cannot occur.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gracectl.adapters.registry import Registry, open_registry
from gracectl.adapters.registry_auth import Credentials
from gracectl.adapters.skopeo import skopeo_copy, skopeo_inspect_raw, transport_ref
from gracectl.errors import (
    ConflictError,
    GraceError,
    NoHistoryError,
    PromotionRefusedError,
    RegistryError,
    UsageError,
)
from gracectl.image_ref import DIGEST_RE, ImageRef
from gracectl.records import artifact_type, get_records, put_record, utc_now

HISTORY_SUFFIX = ".gracectl-history"
LOCK_SUFFIX = ".gracectl-lock"
DEFAULT_MAX_REGRESSION = 0.05  # 5 %: a candidate's median may be this much slower than the current one
LOCK_TTL_S = 120.0


def short(digest: str | None) -> str:
    return digest[:19] if digest else "(none)"


def actor() -> str:
    """Who does it: GRACECTL_ACTOR, else user@host; a Jenkins build adds its URL."""
    who = os.environ.get("GRACECTL_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"
    return f"{who} ({os.environ['BUILD_URL']})" if os.environ.get("BUILD_URL") else who


def moving_tag_name(tag: str) -> str:
    """Check a moving tag leaves room for its companion tags (<tag>.gracectl-history must fit 128)."""
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", tag) or len(tag) + len(HISTORY_SUFFIX) > 128:
        raise UsageError(f"{tag!r} is not a tag gracectl can promote to (letters, digits, _.-; "
                         f"at most {128 - len(HISTORY_SUFFIX)} characters)")
    if tag.endswith((HISTORY_SUFFIX, LOCK_SUFFIX)) or tag.startswith("sha256-"):
        raise UsageError(f"{tag!r} is one of gracectl's own bookkeeping tags")
    return tag


# -- history model (pure) -------------------------------------------------------------------------------
@dataclass
class Entry:
    action: str  # "promote" | "rollback"
    to: str  # the digest the tag is moved to
    from_: str | None  # the digest it pointed at before (None: the move created the tag)
    who: str = ""
    when: str = ""
    reason: str = ""
    forced: bool = False
    source: str = ""  # what the operator named (IMAGE:BUILD_TAG, a digest, a tag)
    undoes: str = ""  # for a rollback: the id of the move it reverts ("" for rollback --to)
    gate: list[str] = field(default_factory=list)  # gate findings (overridden ones when forced)
    status: str = "pending"  # "pending" -> "done" | "failed"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["from"] = d.pop("from_")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Entry:
        d = dict(d)
        d["from_"] = d.pop("from", None)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def settle(entries: list[Entry], current: str | None) -> list[Entry]:
    """Resolve a "pending" last entry against where the tag points now (see the module docstring)."""
    if entries and entries[-1].status == "pending":
        last = entries[-1]
        last.status = "done" if current == last.to else "failed"
    return entries


def undo_target(entries: list[Entry], tag: str) -> Entry:
    """The move a plain rollback reverts: the latest done move not already reverted (a stack, so repeated
    rollbacks walk back through the promotions)."""
    stack: list[Entry] = []
    for e in entries:
        if e.status != "done":
            continue
        if e.action == "rollback" and e.undoes:
            stack = [s for s in stack if s.id != e.undoes]
        else:  # promotions and explicit `rollback --to` moves can both be undone
            stack.append(e)
    if not stack:
        raise NoHistoryError(f"tag {tag} has no promotion to roll back (see `gracectl history {tag}`); "
                             "name a target with --to DIGEST|TAG")
    return stack[-1]


# -- performance gate (pure) ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchRow:
    name: str
    current_ms: float
    candidate_ms: float

    @property
    def change(self) -> float:
        """Relative change of the median: +0.10 = the candidate is 10 % slower."""
        return (self.candidate_ms - self.current_ms) / self.current_ms


@dataclass(frozen=True)
class BenchComparison:
    gpu: str
    rows: tuple[BenchRow, ...]
    max_regression: float
    note: str = ""  # why nothing was compared

    @property
    def compared(self) -> bool:
        return bool(self.rows)

    @property
    def regressions(self) -> list[BenchRow]:
        return [r for r in self.rows if r.change > self.max_regression]


def _gpu(record: dict) -> str:
    return str((record.get("gpu") or {}).get("name") or "")


def _medians(record: dict) -> dict[str, float]:
    out = {}
    for r in record.get("results") or []:
        value = r.get("median_ms")
        if isinstance(value, (int, float)) and value > 0 and r.get("name"):
            out[r["name"]] = float(value)
    return out


def compare_bench(candidate: dict, current: dict, max_regression: float = DEFAULT_MAX_REGRESSION
                  ) -> BenchComparison:
    """Compare two bench records by result name (lower median_ms is better); only on the same GPU model."""
    gpu_new, gpu_old = _gpu(candidate), _gpu(current)
    if not gpu_new or gpu_new != gpu_old:
        return BenchComparison(gpu_new, (), max_regression,
                               f"not compared: different GPU models ({gpu_new or '?'} vs {gpu_old or '?'})")
    new, old = _medians(candidate), _medians(current)
    rows = tuple(BenchRow(name, old[name], new[name]) for name in sorted(new.keys() & old.keys()))
    return BenchComparison(gpu_new, rows, max_regression, "" if rows else "not compared: no result in common")


def bench_gate(candidate_records: list[dict], current_records: list[dict],
               max_regression: float = DEFAULT_MAX_REGRESSION) -> list[BenchComparison]:
    """One comparison per GPU model that both images were benchmarked on (the latest record of each)."""
    latest_new = {_gpu(r): r for r in candidate_records if _gpu(r)}
    latest_old = {_gpu(r): r for r in current_records if _gpu(r)}
    return [compare_bench(latest_new[g], latest_old[g], max_regression) for g in sorted(latest_new.keys()
                                                                                        & latest_old.keys())]


def smoke_passed(record: dict) -> bool:
    return record.get("passed") is True


def gate_findings(smoke: list[dict], comparisons: list[BenchComparison], candidate: str) -> list[str]:
    """What stops a promotion: no passing smoke record, or a benchmark slower beyond the limit."""
    findings = []
    if not any(smoke_passed(r) for r in smoke):
        findings.append(f"no passing smoke record for {short(candidate)} "
                        f"({len(smoke)} smoke record(s), none with passed=true)")
    for c in comparisons:
        for r in c.regressions:
            findings.append(f"{r.name} on {c.gpu} is {r.change:+.1%} slower ({r.current_ms:.3f} -> "
                            f"{r.candidate_ms:.3f} ms; limit {c.max_regression:.0%})")
    return findings


# -- registry-side state -----------------------------------------------------------------------------------
def load_history(registry: Registry, repository: str, tag: str) -> list[Entry]:
    found = registry.read_artifact(repository, tag + HISTORY_SUFFIX)
    return [Entry.from_dict(e) for e in json.loads(found[2])["entries"]] if found else []


def save_history(registry: Registry, repository: str, tag: str, entries: list[Entry]) -> None:
    payload = json.dumps({"schema": 1, "repository": repository, "tag": tag,
                          "entries": [e.to_dict() for e in entries]}, indent=2).encode()
    registry.push_artifact(repository, tag + HISTORY_SUFFIX, artifact_type("history"), payload)


class TagLock:
    """The lock for one tag: local flock + registry lock artifact (see the module docstring)."""

    def __init__(self, registry: Registry, repository: str, tag: str):
        self.registry, self.repository, self.tag = registry, repository, tag
        self.lock_tag = tag + LOCK_SUFFIX
        self.lock_dir = Path(os.environ.get("GRACECTL_LOCK_DIR") or Path(tempfile.gettempdir()) / "gracectl-locks")
        self.settle_s = float(os.environ.get("GRACECTL_LOCK_SETTLE_S", "1.0"))
        self.host_id = f"{socket.gethostname()}:{self.lock_dir.resolve()}"
        self.nonce = secrets.token_hex(16)
        self.digest = ""
        self._file = None

    def __enter__(self) -> TagLock:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.registry.host}/{self.repository}:{self.tag}")
        self._file = open(self.lock_dir / f"{name}.lock", "w")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise ConflictError(f"another gracectl on this host is changing tag {self.tag} right now; "
                                "nothing was changed: retry when it has finished") from None
        try:
            self._claim()
        except BaseException:
            self._file.close()
            raise
        return self

    def _read(self) -> tuple[str, dict] | None:
        found = self.registry.read_artifact(self.repository, self.lock_tag)
        return (found[0].digest, json.loads(found[2])) if found else None

    def _claim(self) -> None:
        held = self._read()
        if held:
            lock = held[1]
            free = lock.get("released") or lock.get("expires", 0) < time.time() or lock.get("host_id") == self.host_id
            if not free:
                raise ConflictError(f"tag {self.tag} is locked by {lock.get('owner')} since {lock.get('since')}: "
                                    "another promotion or rollback is running; nothing was changed, retry later")
        claim = {"nonce": self.nonce, "owner": actor(), "host_id": self.host_id, "pid": os.getpid(),
                 "since": utc_now(), "expires": time.time() + LOCK_TTL_S, "released": False}
        self.digest = self.registry.push_artifact(self.repository, self.lock_tag, artifact_type("lock"),
                                                  json.dumps(claim, sort_keys=True).encode()).digest
        time.sleep(self.settle_s)  # let an overlapping claimer's PUT land: only the last writer keeps the tag
        self.check()

    def check(self) -> None:
        """Raise ConflictError unless the lock tag still holds our claim."""
        held = self._read()
        if not held or held[0] != self.digest:
            other = held[1].get("owner") if held else "nobody (the lock vanished)"
            raise ConflictError(f"lost the lock of tag {self.tag} to {other}: another promotion or rollback "
                                "is running; nothing was changed, retry later")

    def __exit__(self, *exc) -> None:
        try:
            held = self._read()
            if held and held[0] == self.digest:
                released = {"nonce": self.nonce, "owner": actor(), "released": True, "since": utc_now()}
                self.registry.push_artifact(self.repository, self.lock_tag, artifact_type("lock"),
                                            json.dumps(released, sort_keys=True).encode())
        except GraceError as e:  # the registry went away: the lock expires (or this host takes it over)
            print(f"warning: could not release the lock of {self.tag}: {e}", file=sys.stderr)
        finally:
            self._file.close()


def _apply(registry: Registry, repository: str, tag: str, entry: Entry, lock: TagLock) -> Entry:
    """Steps 1-4 of the module docstring. Called with the lock held."""
    current = registry.head_manifest(repository, tag)
    current_digest = current.digest if current else None
    if current_digest != entry.from_:
        raise ConflictError(f"tag {tag} moved from {short(entry.from_)} to {short(current_digest)} while this "
                            f"{entry.action} was being checked; nothing was changed (see `gracectl history`)")
    entries = settle(load_history(registry, repository, tag), current_digest)
    save_history(registry, repository, tag, entries + [entry])
    # Lost the lock? Then write nothing more (the winner owns the history now); our pending entry is
    # settled as failed by every reader, since the tag never points at it through us.
    lock.check()
    try:
        registry.tag_digest(repository, entry.to, tag)
    except GraceError:
        entry.status = "failed"
        try:
            save_history(registry, repository, tag, entries + [entry])
        except GraceError:
            pass  # still "pending" in the registry: readers settle it as failed (the tag did not move)
        raise
    entry.status = "done"
    try:
        save_history(registry, repository, tag, entries + [entry])
    except GraceError as e:  # the tag did move; readers settle the pending entry as done
        print(f"warning: {tag} moved, but the history entry stays pending until the next read: {e}",
              file=sys.stderr)
    return entry


# -- operations ---------------------------------------------------------------------------------------------
def resolve(registry: Registry, ref: ImageRef) -> str:
    """The manifest digest `ref` names (checked to exist)."""
    if not ref.reference:
        raise UsageError(f"{ref} names neither a tag nor a digest")
    found = registry.head_manifest(ref.repository, ref.reference)
    if found is None:
        raise RegistryError(f"{ref} does not exist in {ref.registry}")
    return found.digest


@dataclass(frozen=True)
class Published:
    ref: str
    digest: str
    image_id: str
    already: bool  # the tag already held this very image (a retried push): nothing was pushed

    def to_dict(self) -> dict:
        return asdict(self)


def publish(local_image: str, dest: str, *, credentials: Credentials | None = None,
            attach: list[dict] = ()) -> Published:
    """Push `local_image` (a dockerd image name, or a skopeo transport ref such as oci:DIR:TAG) to the
    IMMUTABLE tag `dest`; refuse (ConflictError) if the tag already holds another image. Each dict in
    `attach` is stored as a record of the pushed digest (its "kind" says which)."""
    ref = ImageRef.parse(dest)
    if not ref.tag or ref.digest:
        raise UsageError(f"--to must be REGISTRY/REPO:TAG (an immutable build tag), got {dest!r}")
    registry = open_registry(ref, credentials)
    source = transport_ref(local_image)
    image_id = (skopeo_inspect_raw(source).get("config") or {}).get("digest", "")
    for record in attach:  # checked before anything is pushed
        if record.get("image_id") and record["image_id"] != image_id:
            raise UsageError(f"the {record.get('kind')} record is of image {short(record['image_id'])}, but "
                             f"{local_image} is {short(image_id)}: attach records of this image only")
    existing = registry.head_manifest(ref.repository, ref.tag)
    if existing:
        remote = json.loads(registry.get_manifest(ref.repository, existing.digest)[0])
        if not image_id or (remote.get("config") or {}).get("digest") != image_id:
            raise ConflictError(f"{dest} already exists ({short(existing.digest)}) and holds another image: build "
                                "tags are immutable, publish under a new build number")
        digest, already = existing.digest, True
    else:
        digest, already = skopeo_copy(source, ref, registry.credentials), False
    for record in attach:
        put_record(ref, digest, record.get("kind", ""), {**record, "digest": digest}, registry=registry)
    return Published(str(ref), digest, image_id, already)


def promote(source: str, tag: str, *, force: bool = False, reason: str = "",
            max_regression: float = DEFAULT_MAX_REGRESSION, credentials: Credentials | None = None
            ) -> Entry | None:
    """Move `tag` (in the source's repository) to the digest `source` names, if the gates pass.

    Returns the history entry, or None when the tag already points there. Raises PromotionRefusedError
    (gate), ConflictError (lock or concurrent move), UsageError (--force without --reason).
    """
    ref = ImageRef.parse(source)
    moving_tag_name(tag)
    if force and not reason.strip():
        raise UsageError("--force needs --reason TEXT: the reason is recorded in the tag's history")
    registry = open_registry(ref, credentials)
    candidate = resolve(registry, ref)
    current = registry.head_manifest(ref.repository, tag)
    current_digest = current.digest if current else None
    if current_digest == candidate:
        return None
    smoke = get_records(ref, candidate, "smoke", registry=registry)
    comparisons = []
    if current_digest:
        comparisons = bench_gate(get_records(ref, candidate, "bench", registry=registry),
                                 get_records(ref, current_digest, "bench", registry=registry), max_regression)
    findings = gate_findings(smoke, comparisons, candidate)
    if findings and not force:
        raise PromotionRefusedError(f"refusing to promote {ref} to {tag}: " + "; ".join(findings)
                                    + " (override: --force --reason TEXT)")
    entry = Entry("promote", candidate, current_digest, who=actor(), when=utc_now(), reason=reason.strip(),
                  forced=bool(findings) and force, source=str(ref), gate=findings)
    with TagLock(registry, ref.repository, tag) as lock:
        return _apply(registry, ref.repository, tag, entry, lock)


def rollback(target: str, *, to: str = "", reason: str = "", credentials: Credentials | None = None
             ) -> Entry | None:
    """Move REGISTRY/REPO:TAG back to the digest it held before its last promotion (or to `to`, a digest
    or a tag of the same repository). Returns the history entry, or None when already there."""
    ref = ImageRef.parse(target)
    if not ref.tag or ref.digest:
        raise UsageError(f"rollback needs REGISTRY/REPO:TAG, got {target!r}")
    tag = moving_tag_name(ref.tag)
    registry = open_registry(ref, credentials)
    explicit = ""
    if to:
        explicit = resolve(registry, ref.with_digest(to) if DIGEST_RE.match(to) else ref.with_tag(to))
    with TagLock(registry, ref.repository, tag) as lock:
        # Decided under the lock, from the settled history, so no concurrent move can slip in between.
        current = registry.head_manifest(ref.repository, tag)
        current_digest = current.digest if current else None
        undoes = ""
        if explicit:
            dest = explicit
        else:
            last = undo_target(settle(load_history(registry, ref.repository, tag), current_digest), tag)
            if current_digest != last.to:
                raise ConflictError(f"{tag} points at {short(current_digest)}, not at {short(last.to)} where its last "
                                    "recorded promotion put it (moved outside gracectl?): roll back with --to DIGEST")
            if not last.from_:
                raise NoHistoryError(f"the last promotion of {tag} created the tag: there is no earlier digest "
                                     "to roll back to; name one with --to DIGEST|TAG")
            dest, undoes = last.from_, last.id
        if dest == current_digest:
            return None
        entry = Entry("rollback", dest, current_digest, who=actor(), when=utc_now(), reason=reason.strip(),
                      source=to or f"undo of {undoes}", undoes=undoes)
        return _apply(registry, ref.repository, tag, entry, lock)


def history(target: str, *, credentials: Credentials | None = None) -> list[Entry]:
    """Every promotion and rollback of REGISTRY/REPO:TAG, oldest first (a pending last entry settled)."""
    ref = ImageRef.parse(target)
    if not ref.tag or ref.digest:
        raise UsageError(f"history needs REGISTRY/REPO:TAG, got {target!r}")
    registry = open_registry(ref, credentials)
    current = registry.head_manifest(ref.repository, ref.tag)
    return settle(load_history(registry, ref.repository, ref.tag), current.digest if current else None)
