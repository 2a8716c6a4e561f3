"""Release operations by digest: promote (with the smoke, performance and signature gates), rollback,
history (and its repair), unlock; publish is tags/publish.py (re-exported here).

All state lives in the registry, next to the images, so any machine with registry access can roll back:
- the moving tag itself (e.g. gh200-vllm-tfa:v0.19.0-tfa), moved BY DIGEST (manifest bytes re-PUT, no pull);
- the tag's history, one immutable artifact per entry state `<tag>.gch-<id>-<status>` (tags/history.py),
  and `<tag>.gracectl-lock` (tags/lock.py);
- records (records.py): `sha256-<hex>.smoke` / `.bench` next to each image digest.

A move (promote or rollback), all under the tag's lock:
  1. re-read the tag: it must still point where the operator's checks saw it (compare-and-swap by
     digest), else ConflictError and nothing is written;
  2. append the history entry "pending";  3. fencing check of the lock, then move the tag;
  4. record the outcome. When the tag write errs (answer lost, timeout, registry gone, interrupted), the
     tag is READ BACK: "done" if it points at the target (the move happened: exit 0 with a warning),
     "failed" if not (the error's exit code, the message says "was NOT moved"), "unknown" if it cannot be
     read (OutcomeUnknownError, exit 11: "could not tell", with the command to check). Readers settle
     "pending"/"unknown" entries against the registry, so the history never lies either.
Every operation takes its registry settings as one RegistryAccess value (adapters.registry_access: credentials,
TLS, the per-request timeout, the overall deadline (default 180 s), the lock's timings, who acts); clean-up
(reading the tag back, releasing the lock) gets a few seconds past the deadline.
Jenkins also wraps promote/rollback in `lock("<registry>/<repo>:<tag>")`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator

from gracectl import interrupts

from gracectl.adapters.registry import DOCKER_LIST, OCI_INDEX, Registry, open_registry
from gracectl.adapters.registry_access import RegistryAccess
from gracectl.errors import (
    ConflictError,
    GraceError,
    Interrupted,
    NoHistoryError,
    NotFoundError,
    OutcomeUnknownError,
    PromotionRefusedError,
    UsageError,
)
from gracectl.image_ref import DIGEST_RE, TAG_RE, ImageRef, control_free
from gracectl.record_files import utc_now
from gracectl.tags.records import get_records
from gracectl.tags.history import (
    COMPANION_LEN,
    DAMAGED_SUFFIX,
    MOVES,
    DamagedHistory,
    Entry,
    append,
    contradicted,
    is_bookkeeping_tag,
    load,
    set_aside_document,
    settle,
    short,
    undo_target,
)
from gracectl.tags.publish import Published, publish  # noqa: F401  (the API: publish, then move)
from gracectl.tags.trust import resolve, signature_findings
from gracectl.tags.gates import DEFAULT_MAX_REGRESSION, bench_gate, check_max_regression, figure_findings, gate_findings
from gracectl.tags.lock import TagLock, describe, unlock as unlock_lock



def moving_tag_name(tag: str) -> str:
    """Check a moving tag leaves room for its companion tags (<tag>.gracectl-history must fit 128)."""
    if not TAG_RE.match(tag) or len(tag) + COMPANION_LEN > 128:
        raise UsageError(f"{tag[:200]!r} is not a tag gracectl can promote to (letters, digits, _.-; "
                         f"at most {128 - COMPANION_LEN} characters)")
    if is_bookkeeping_tag(tag):
        raise UsageError(f"{tag!r} is one of gracectl's own bookkeeping tags")
    return tag


# -- the move ------------------------------------------------------------------------------------------------
def _read_back(registry: Registry, repository: str, tag: str, target: str) -> str:
    """After a tag write that did not answer cleanly: "done" if the tag points at `target`, "failed" if not,
    "unknown" if it cannot be read - read until the answer holds still (Registry.settled_head)."""
    try:
        found = registry.settled_head(repository, tag)
    except GraceError:
        return "unknown"
    return "done" if found and found.digest == target else "failed"


def _record(registry: Registry, repository: str, tag: str, entry: Entry, lock: TagLock) -> bool:
    try:
        append(registry, repository, tag, entry, lock.check)
        return True
    except GraceError as e:  # the registry settles the entry from the tag on the next read
        print(f"warning: could not record this {entry.action} as {entry.status} in the history (every reader "
              f"settles it from the tag): {e}", file=sys.stderr)
        return False


def _settled_history(registry: Registry, repository: str, tag: str, current: str | None,
                     lock: TagLock | None = None) -> list[Entry]:
    """The tag's history settled against `current`. A move recorded "failed" that the tag's next state says
    happened (a write the registry applied after its read-back) is said as a warning and, under the lock,
    recorded done: the record never stays in the way of the next rollback."""
    entries = settle(load(registry, repository, tag), current)
    for e in contradicted(entries, current):
        e.status = "done"
        print(f"warning: the history said the {e.action} of {tag} to {short(e.to)} failed, but the tag was at "
              f"{short(e.to)} right after it: it happened" + (" (record repaired: done)" if lock else ""),
              file=sys.stderr)
        if lock:
            _record(registry, repository, tag, e, lock)
    return entries


def _apply(registry: Registry, repository: str, tag: str, entry: Entry, lock: TagLock) -> Entry:
    """Steps 1-4 of the module docstring. Called with the lock held."""
    lock.check()
    current = registry.head_manifest(repository, tag)
    current_digest = current.digest if current else None
    if current_digest != entry.from_:
        raise ConflictError(f"tag {tag} moved from {short(entry.from_)} to {short(current_digest)} while this "
                            f"{entry.action} was being checked; nothing was changed (see `gracectl history`)")
    append(registry, repository, tag, entry, lock.check)
    lock.check()  # fencing: a holder whose lock was taken over writes nothing more
    cut_short = _write_tag(registry, repository, tag, entry)
    if cut_short is not None:
        with interrupts.deferred():  # (held already) the read-back and the record always finish
            return _after_failed_write(registry, repository, tag, entry, lock, cut_short)
    entry.status = "done"
    _record(registry, repository, tag, entry, lock)
    return entry


def _write_tag(registry: Registry, repository: str, tag: str, entry: Entry) -> BaseException | None:
    """Move the tag: None when the registry answered, else what cut the write short (an error, or THE interrupt:
    interrupts raises one). Either way the outcome is decided here, so signals are only noted from here on."""
    try:
        try:
            registry.tag_digest(repository, entry.to, tag)
            interrupts.hold()
            return None
        except Exception as exc:
            interrupts.hold()
            return exc
    except Interrupted as exc:  # during the write, or while its error was being caught: read back all the same
        return exc


def _after_failed_write(registry: Registry, repository: str, tag: str, entry: Entry, lock: TagLock,
                        exc: BaseException) -> Entry:
    """The tag write was cut short: read the tag back, record the outcome, and say it - by the exit code too:
    0 (a warning line) when the tag is at the target, the error's or the signal's when it is not, 11 unknown."""
    ref = f"{registry.host}/{repository}:{tag}"
    entry.status = _read_back(registry, repository, tag, entry.to)
    if entry.status == "unknown" and getattr(exc, "sent", True) is False:
        entry.status = "failed"  # the failing request never reached the registry, so the PUT did not either
    _record(registry, repository, tag, entry, lock)
    signal = exc if isinstance(exc, Interrupted) else interrupts.take()  # one that came meanwhile is said too
    cause = "; ".join(dict.fromkeys(str(x) for x in (exc, signal) if x is not None and str(x)))
    if entry.status == "done":
        print(f"warning: {cause}; but {tag} reads back at {short(entry.to)}: the {entry.action} happened "
              "(recorded done)", file=sys.stderr)
        interrupts.said()
        return entry
    if entry.status == "unknown":
        raise OutcomeUnknownError(f"{cause}; could not tell whether {tag} moved to {short(entry.to)}: the tag "
                                  f"could not be read back. Check with `gracectl history {ref}` (it reads the "
                                  "tag and settles the entry) before retrying") from None
    outcome = f"{cause}; {tag} was NOT moved (it does not point at {short(entry.to)}; recorded failed)"
    if signal is None:
        exc.args = (outcome,)
        raise exc
    raise Interrupted(outcome, signal.exit_code, outcome_said=True) from None


@contextlib.contextmanager
def _nothing_moved_if_interrupted(tag: str) -> Iterator[None]:
    """An interrupt before the tag write says so: the tag was not moved."""
    try:
        yield
    except Interrupted as exc:
        if exc.outcome_said:
            raise
        raise Interrupted(f"{exc}; {tag} was NOT moved (nothing was changed)", exc.exit_code,
                          outcome_said=True) from None


# -- checks ---------------------------------------------------------------------------------------------
IMAGE_CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")


def check_image(registry: Registry, ref: ImageRef, digest: str, what: str = "") -> None:
    """Refuse to point a release tag at anything but an image of this repository: an image manifest (its config
    an image config), or an index / manifest list of platform images. gracectl's records (and their indexes),
    locks and histories, and any other artifact, are refused."""
    found = registry.get_manifest(ref.repository, digest)
    if found is None:
        raise NotFoundError(f"{ref.repo}@{digest} does not exist")
    try:
        manifest = json.loads(found[0])
    except ValueError:
        manifest = None
    media_type = (manifest.get("mediaType") if isinstance(manifest, dict) else "") or found[1].media_type
    if not isinstance(manifest, dict) or manifest.get("artifactType"):
        ok = False
    elif media_type in (OCI_INDEX, DOCKER_LIST):
        entries = manifest.get("manifests")
        ok = isinstance(entries, list) and bool(entries) and all(
            isinstance(e, dict) and isinstance(e.get("platform"), dict) and not e.get("artifactType")
            for e in entries)
    else:
        ok = (manifest.get("config") or {}).get("mediaType") in IMAGE_CONFIG_TYPES
    if not ok:
        raise UsageError(f"{what or ref.repo + '@' + short(digest)} is not an image (a record, lock, history or "
                         "other artifact): a release tag can only point at an image, even with --force")


def target_ref(ref: ImageRef, to: str) -> ImageRef:
    """A --to value: a digest or a tag of the SAME repository, never one of gracectl's bookkeeping tags."""
    if DIGEST_RE.match(to):
        return ref.with_digest(to)
    if not TAG_RE.match(to):
        raise UsageError(f"--to {to[:200]!r} is neither a digest (sha256:<64 hex>) nor a tag of {ref.repo} "
                         "(letters, digits, _.-; no slashes)")
    if is_bookkeeping_tag(to):
        raise UsageError(f"--to {to!r} is one of gracectl's own bookkeeping tags, not an image")
    return ref.with_tag(to)


def gates(registry: Registry, ref: ImageRef, candidate: str, current: str | None, max_regression: float,
          floors: dict[str, float] | None = None) -> list[str]:
    """The signature, smoke and bench gate findings for moving a tag of `ref`'s repository from `current` to
    `candidate`; `floors` ({figure: floor}, gates.GATE_FIGURES): absolute floors on the candidate's latest bench."""
    smoke = get_records(ref, candidate, "smoke", registry=registry)
    benches = get_records(ref, candidate, "bench", registry=registry)
    comparisons = []
    if current:
        comparisons = bench_gate(benches, get_records(ref, current, "bench", registry=registry), max_regression)
    findings = signature_findings(registry, ref, candidate) + gate_findings(smoke, comparisons, candidate)
    if floors:
        findings += (figure_findings(benches[-1], floors) if benches else
                     [f"no bench record for {short(candidate)}: the floors {floors} cannot be checked"])
    return findings


def _check_force(force: bool, reason: str) -> None:
    control_free(reason, "--reason")
    if force and not reason.strip():
        raise UsageError("--force needs --reason TEXT: the reason is recorded in the tag's history")


# -- operations ---------------------------------------------------------------------------------------------
def promote(source: str, tag: str, *, force: bool = False, reason: str = "",
            access: RegistryAccess, max_regression: float = DEFAULT_MAX_REGRESSION,
            floors: dict[str, float] | None = None) -> Entry | None:
    """Move `tag` (in the source's repository) to the digest `source` names, if the gates pass.

    Returns the history entry, or None when the tag already points there. Raises PromotionRefusedError
    (gate), ConflictError (lock or concurrent move), UsageError (--force without --reason).
    """
    ref = ImageRef.parse(source)
    moving_tag_name(tag)
    _check_force(force, reason)
    check_max_regression(max_regression)
    with _nothing_moved_if_interrupted(tag):  # a signal before the tag write: nothing moved, and said so
        registry = open_registry(ref, access)
        candidate = resolve(registry, ref)
        check_image(registry, ref, candidate)
        current = registry.head_manifest(ref.repository, tag)
        current_digest = current.digest if current else None
        if current_digest == candidate:
            return None
        findings = gates(registry, ref, candidate, current_digest, max_regression, floors)
        _refuse_unless_forced(f"promote {ref} to {tag}", findings, force)
        entry = Entry("promote", candidate, current_digest, who=registry.access.who, when=utc_now(),
                      reason=reason.strip(), forced=bool(findings) and force, source=str(ref), gate=findings)
        with TagLock(registry, ref.repository, tag) as lock:
            _settled_history(registry, ref.repository, tag, current_digest, lock)  # a contradicted record repaired
            return _apply(registry, ref.repository, tag, entry, lock)


def _moving_ref(target: str, command: str) -> ImageRef:
    ref = ImageRef.parse(target)
    if not ref.tag or ref.digest:
        raise UsageError(f"{command} needs REGISTRY/REPO:TAG, got {target[:200]!r}")
    moving_tag_name(ref.tag)
    return ref


def rollback(target: str, *, to: str = "", reason: str = "", force: bool = False,
             access: RegistryAccess, max_regression: float = DEFAULT_MAX_REGRESSION) -> Entry | None:
    """Move REGISTRY/REPO:TAG back to the digest it held before its last promotion, or to `to` (a digest or
    tag of the same repository, which must pass the same gates as a promotion, or --force --reason).
    Returns the history entry, or None when already there."""
    ref = _moving_ref(target, "rollback")
    tag = ref.tag
    _check_force(force, reason)
    check_max_regression(max_regression)
    named = target_ref(ref, to) if to else None
    with _nothing_moved_if_interrupted(tag):  # a signal before the tag write: nothing moved, and said so
        registry = open_registry(ref, access)
        findings: list[str] = []
        explicit = ""
        if named:
            explicit = resolve(registry, named)
            check_image(registry, ref, explicit)
            current = registry.head_manifest(ref.repository, tag)
            findings = gates(registry, ref, explicit, current.digest if current else None, max_regression)
            _refuse_unless_forced(f"roll {tag} back to {named}", findings, force)
        with TagLock(registry, ref.repository, tag) as lock:
            # Decided under the lock, from the settled history, so no concurrent move can slip in between.
            current = registry.head_manifest(ref.repository, tag)
            current_digest = current.digest if current else None
            entries = _settled_history(registry, ref.repository, tag, current_digest, lock)
            undoes = ""
            if explicit:
                dest = explicit
            else:
                # A plain rollback returns to an image this tag already held: it passed the gates (or was forced,
                # and recorded so) when it was promoted.
                last = undo_target(entries, tag)
                if current_digest != last.to:
                    raise ConflictError(f"{tag} points at {short(current_digest)}, not at {short(last.to)} where "
                                        "its last recorded move put it (moved outside gracectl?): roll back with "
                                        "--to DIGEST")
                if not last.from_:
                    raise NoHistoryError(f"the last promotion of {tag} created the tag: there is no earlier digest "
                                         "to roll back to; name one with --to DIGEST|TAG")
                check_image(registry, ref, last.from_, f"the history's previous digest {short(last.from_)} of {tag}")
                dest, undoes = last.from_, last.id
                findings = signature_findings(registry, ref, dest)  # an image the site did not sign never returns
                _refuse_unless_forced(f"roll {tag} back to {short(dest)}", findings, force)
            if dest == current_digest:
                return None
            entry = Entry("rollback", dest, current_digest, who=registry.access.who, when=utc_now(),
                          reason=reason.strip(), forced=bool(findings) and force,
                          source=to or f"undo of {undoes}", undoes=undoes, gate=findings)
            return _apply(registry, ref.repository, tag, entry, lock)


def history(target: str, *, access: RegistryAccess) -> list[Entry]:
    """Every promotion, rollback and unlock of REGISTRY/REPO:TAG, oldest first (unsettled entries settled)."""
    return history_report(target, access=access)[0]


def history_report(target: str, *, access: RegistryAccess) -> tuple[list[Entry], str]:
    """The history, and "" or one line saying the tag disagrees with its last completed move (moved outside
    gracectl, or a move whose record was lost)."""
    ref = ImageRef.parse(target)
    if not ref.tag or ref.digest:
        raise UsageError(f"history needs REGISTRY/REPO:TAG, got {target[:200]!r}")
    registry = open_registry(ref, access)
    current = registry.head_manifest(ref.repository, ref.tag)
    digest = current.digest if current else None
    entries = _settled_history(registry, ref.repository, ref.tag, digest)
    done = [e for e in entries if e.status == "done" and e.action in MOVES]
    if done and done[-1].to != digest:
        return entries, (f"{ref.tag} points at {short(digest)}, but its last recorded move put it at "
                         f"{short(done[-1].to)}: moved outside gracectl? (roll back with --to DIGEST)")
    return entries, ""


def _refuse_unless_forced(what: str, findings: list[str], force: bool) -> None:
    if findings and not force:
        raise PromotionRefusedError(f"refusing to {what}: {'; '.join(findings)} (override: --force --reason TEXT)")


def repair_history(target: str, *, reason: str, access: RegistryAccess) -> Entry | None:
    """Start a damaged history of REGISTRY/REPO:TAG anew, under the tag's lock: the damaged artifact is kept
    under <tag>.gracectl-damaged (nothing is deleted), the entries that still read are carried over, and a
    "repair" entry says who did it and why. None when the history reads fine (nothing to repair)."""
    ref = _moving_ref(target, "history --repair")
    if not control_free(reason, "--reason").strip():
        raise UsageError("history --repair needs --reason TEXT: it is recorded in the repaired history")
    registry = open_registry(ref, access)
    with _nothing_moved_if_interrupted(ref.tag), TagLock(registry, ref.repository, ref.tag) as lock:
        try:
            load(registry, ref.repository, ref.tag)
            return None
        except DamagedHistory:
            pass
        lock.check()
        damaged, kept = set_aside_document(registry, ref.repository, ref.tag)
        for old in kept:  # carried over as entries of their own, in their order
            append(registry, ref.repository, ref.tag, old, lock.check)
        current = registry.head_manifest(ref.repository, ref.tag)
        digest = current.digest if current else None
        entry = Entry("repair", digest or "", digest, who=registry.access.who, when=utc_now(), reason=reason.strip(),
                      source=f"damaged history kept as {ref.tag}{DAMAGED_SUFFIX} ({short(damaged or None)}); "
                             f"{len(kept)} entries carried over", status="done")
        append(registry, ref.repository, ref.tag, entry, lock.check)
        interrupts.hold()
        return entry


def unlock(target: str, *, reason: str, access: RegistryAccess) -> tuple[str, Entry | None]:
    """Release the lock of REGISTRY/REPO:TAG whoever holds it (a dead holder on another host); recorded in
    the history. Returns (the holder as text, the history entry); ("", None) when it was not locked."""
    ref = _moving_ref(target, "unlock")
    if not control_free(reason, "--reason").strip():
        raise UsageError("unlock needs --reason TEXT: it is recorded in the tag's history")
    registry = open_registry(ref, access)
    holder = unlock_lock(registry, ref.repository, ref.tag, reason.strip())
    if holder is None:
        return "", None
    current = registry.head_manifest(ref.repository, ref.tag)
    digest = current.digest if current else None
    entry = Entry("unlock", digest or "", digest, who=registry.access.who, when=utc_now(), reason=reason.strip(),
                  source=describe(holder), status="done")
    append(registry, ref.repository, ref.tag, entry)
    return describe(holder), entry
