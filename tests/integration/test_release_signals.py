"""Signals at random instants, children that die with gracectl, and contention under a failing registry, against
the REAL docker-registry (issue 33's "done when").

Every outcome is judged from outside: the exit code and the last line against the tag, the history and the
records read back directly from the registry (not through the proxy gracectl talks to), never against what
gracectl says of itself.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fault_proxy import FaultProxy
from gracectl.tags import moves
from gracectl.errors import ConflictError, ReadOnlyRegistryError
from gracectl.image_ref import ImageRef
from gracectl.tags.records import get_records
from gracectl.adapters.registry import Registry
from gracectl.testbed.registry_server import RegistryServer
from test_release_faults import ReadOnlyRegistry, env_access, wait_for
from test_release_ops_integration import TAG, isolated_env, publish, registry_of, smoke, tag_digest  # noqa: F401

pytestmark = pytest.mark.integration

SIGNALS = {signal.SIGINT: ("interrupted (SIGINT)", 130), signal.SIGTERM: ("terminated (SIGTERM)", 143),
           signal.SIGHUP: ("hung up (SIGHUP)", 129)}
CASES = int(os.environ.get("GRACECTL_SIGNAL_CASES", "50"))


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gracectl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def read_status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""


def proc_state(pid: int, status: str | None = None) -> tuple[str, int, int]:
    """(state letter, the signals it catches, the signals it blocks, as masks); ("", 0, 0) once it is gone."""
    status = read_status(pid) if status is None else status
    if not status:
        return "", 0, 0
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fields["State"].split()[0], int(fields["SigCgt"], 16), int(fields["SigBlk"], 16)


def catches(mask: int, sig: int) -> bool:
    return bool(mask >> (sig - 1) & 1)


def history(direct: str) -> list:
    return moves.history(f"{direct}:{TAG}", access=env_access())


def lock_released(direct: str) -> bool:
    ref = ImageRef.parse(direct)
    found = Registry(ref.registry, env_access()).read_artifact(ref.repository, f"{TAG}.gracectl-lock")
    return found is None or json.loads(found[2]).get("released") is True


class Case:
    """One command under one signal at one instant, and what the registry says afterwards."""

    def __init__(self, op: str, sig: int, direct: str, target: str, before: str | None, tag: str = TAG):
        self.op, self.sig, self.direct, self.target, self.before, self.tag = op, sig, direct, target, before, tag
        self.history_before = {e.id for e in history(direct)} if op != "publish" else set()

    def run(self, args: list[str], proxy: FaultProxy, anchor: str | None, delay: float) -> None:
        """Start the command; send the signal `delay` s after the start (anchor None) or after the proxy has seen
        a request matching `anchor` (METHOD path-regex), i.e. around the tag write and what follows it."""
        seen_before = len(proxy.seen)
        p = start(*args)
        if anchor:
            method, path = anchor.split(" ", 1)
            pattern = re.compile(path)
            deadline = time.monotonic() + 60
            while p.poll() is None and time.monotonic() < deadline and not any(
                    m == method and pattern.search(u.split("?")[0]) for m, u, _ in proxy.seen[seen_before:]):
                time.sleep(0.002)
        time.sleep(delay)
        status = read_status(p.pid)  # read just before the signal, parsed after it
        os.kill(p.pid, self.sig)
        self.state, mask, blocked = proc_state(p.pid, status)
        self.alive = self.state not in ("", "Z")
        # gracectl's handlers are in place (its first lines set SIGINT, SIGTERM, then SIGHUP; Python's own SIGINT
        # handler comes earlier, so SIGHUP is the mark): before that only the interpreter runs, and no program
        # can say anything about a signal that kills it then
        self.handled = self.alive and catches(mask, signal.SIGHUP) and catches(mask, signal.SIGTERM)
        # interrupts.finish() blocks the three signals, looks once for one pending, and exits: a signal sent once
        # they are blocked comes after the last byte (as after the exit) unless it beat that last look
        self.exiting = self.alive and all(catches(blocked, s) for s in SIGNALS)
        self.out, self.err = p.communicate(timeout=120)
        self.rc = p.returncode

    def judge(self) -> str:
        """"" when the outcome was said truly and the signal not lost, else what was wrong."""
        said, code = SIGNALS[self.sig]
        last = (self.err.strip().splitlines() or [""])[-1]
        where = f"{self.op} {said} rc={self.rc} alive={self.alive} handled={self.handled} exiting={self.exiting}: {last[:300]}"
        moved = self.outcome_in_registry()
        if isinstance(moved, str):
            return f"{where}: {moved}"
        if self.rc == 0 and not moved:
            return f"{where}: exit 0 but the registry says it did not happen"
        if self.rc == code and moved:
            return f"{where}: exit {code} but the registry says it happened"
        if self.interpreter_start():
            return "" if moved is False else f"{where}: it never reached gracectl's code, yet the registry moved"
        if self.rc not in (0, code, -self.sig):
            return f"{where}: unexpected exit code"
        if self.rc == -self.sig and self.handled:
            return f"{where}: killed by the signal although its handlers were in place"
        if self.rc == code and not last.startswith(f"error: {said}"):
            return f"{where}: the last line does not name the signal"
        if self.rc == 0 and self.handled and not self.exiting and f"warning: {said}" not in self.err:
            return f"{where}: LOST SIGNAL (exit 0, no warning)"
        if self.op != "publish" and self.rc != -self.sig and not lock_released(self.direct):
            return f"{where}: the lock was left claimed"
        return ""

    def interpreter_start(self) -> bool:
        """Python's own start-up, before gracectl's first instruction: killed by the signal, or (SIGINT, whose
        handler Python installs before it imports `site`) a KeyboardInterrupt traceback and exit 1 from that
        import. No program can say anything there; the registry must show nothing done."""
        return not self.handled and (self.rc == -self.sig or (
            self.sig == signal.SIGINT and self.rc == 1 and self.err.strip().endswith("KeyboardInterrupt")))

    def outcome_in_registry(self) -> bool | str:
        if self.op == "publish":
            now = tag_digest(self.direct, self.tag)
            if now is None:
                return False
            if not get_records(self.direct, now, "smoke", registry=registry_of(self.direct)):
                return "the tag was pushed but its record is missing (a half-done publish)"
            return True
        now = tag_digest(self.direct)
        new = [e for e in history(self.direct) if e.id not in self.history_before]
        done = [e for e in new if e.status == "done"]
        if now == self.target:
            if [(e.action, e.from_, e.to) for e in done] != [(self.op, self.before, self.target)]:
                return f"the tag moved but the history says {[(e.action, e.status) for e in new]}"
            return True
        if now != self.before:
            return f"the tag is at {now}, neither before nor target"
        if done:
            return f"the tag did not move but the history says done: {[(e.action, e.status) for e in new]}"
        return False


def test_signals_at_random_instants_are_never_misreported_nor_lost(registry, oci_image, tmp_path):
    """CASES signals (SIGINT, SIGTERM, SIGHUP), spread over promote, rollback and publish: half at a uniformly
    random instant of the whole run (start-up and exit included), half in the 0-0.5 s after the tag write (or
    the push's manifest) reached the registry, whose answer is held 0.3 s: the write, its read-back, the record,
    the lock's release and the exit. Each run is judged against the registry read directly."""
    seed = int(os.environ.get("GRACECTL_SIGNAL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    path = f"signals/{uuid.uuid4().hex[:8]}"
    direct = f"{registry}/{path}"
    images = [publish(oci_image, direct, f"{n}-" + uuid.uuid4().hex, smoke()) for n in "ab"]
    moves.promote(f"{direct}@{images[0]}", TAG, access=env_access())
    record = tmp_path / "smoke.json"
    record.write_text(json.dumps(smoke()))
    misreported, counts, durations = [], {}, {}
    with FaultProxy(registry).start() as proxy:
        proxied = f"{proxy.address}/{path}"
        proxy.add("PUT", rf"/manifests/({TAG}|b-pub-[0-9a-f]+)$", "delay", 0.3)

        def prepare(op: str):
            """(args, the anchor request, target, before, the tag) for the next case of `op`."""
            now = tag_digest(direct)
            other = images[1] if now == images[0] else images[0]
            if op == "promote":
                return ["promote", f"{proxied}@{other}", "--to", TAG], f"PUT /manifests/{TAG}$", other, now, TAG
            if op == "rollback":  # a fresh promotion to undo, so a plain rollback always has one
                moves.promote(f"{direct}@{other}", TAG, access=env_access())
                return ["rollback", f"{proxied}:{TAG}"], f"PUT /manifests/{TAG}$", now, other, TAG
            tag = f"b-pub-{uuid.uuid4().hex[:8]}"
            return (["publish", oci_image(uuid.uuid4().hex), "--to", f"{proxied}:{tag}", "--attach", str(record)],
                    rf"PUT /manifests/{tag}$", None, None, tag)

        for op in ("promote", "rollback", "publish"):  # a clean run of each: how long the whole run takes
            args, _, target, before, tag = prepare(op)
            started = time.monotonic()
            clean = start(*args)
            out, err = clean.communicate(timeout=120)
            durations[op] = time.monotonic() - started
            assert clean.returncode == 0, err
        for i in range(CASES):
            op = ("promote", "rollback", "publish")[i % 3]
            sig = rng.choice(list(SIGNALS))
            args, anchor, target, before, tag = prepare(op)
            case = Case(op, sig, direct, target, before, tag)
            if rng.random() < 0.5:
                case.run(args, proxy, None, rng.uniform(0, durations[op] * 1.1))
                instant = "uniform"
            else:
                case.run(args, proxy, anchor, rng.uniform(0, 0.5))
                instant = "at the write"
            wrong = case.judge()
            if wrong:
                misreported.append(f"case {i} ({instant}): {wrong}")
            kind = ("before gracectl's first instruction" if case.interpreter_start() else
                    "after exit" if not case.alive or case.exiting else "exit 0 + warning" if case.rc == 0 else "interrupted")
            counts[kind] = counts.get(kind, 0) + 1
    print(f"\nsignal cases: {CASES}, seed {seed}, clean runs {durations}, outcomes {counts}, "
          f"misreported/lost {len(misreported)}")
    assert not misreported, f"seed {seed}:\n" + "\n".join(misreported)
    assert counts.get("interrupted", 0) and counts.get("exit 0 + warning", 0), counts  # both sides were reached


def test_a_signal_during_the_lock_claim_leaves_the_lock_released(registry, oci_image):
    """CI's seed 427238276: a SIGHUP while the lock's claim was on the wire left the lock claimed (exit 129, "nothing
    was changed"): the release read the lock before the abandoned PUT landed. The claim is held 1 s by the network
    here and then applied: the interrupt must wait for it, and the release find it and let it go."""
    path = f"claim/{uuid.uuid4().hex[:8]}"
    direct = f"{registry}/{path}"
    a, b = (publish(oci_image, direct, f"{n}-" + uuid.uuid4().hex, smoke()) for n in "ab")
    moves.promote(f"{direct}@{a}", TAG, access=env_access())
    with FaultProxy(registry).start() as proxy:
        proxy.add("PUT", rf"/manifests/{TAG}\.gracectl-lock$", "late", 1.0, times=1)
        p = start("promote", f"{proxy.address}/{path}@{b}", "--to", TAG)
        wait_for(lambda: proxy.count("late") == 1 or p.poll() is not None)
        time.sleep(0.2)
        os.kill(p.pid, signal.SIGHUP)
        out, err = p.communicate(timeout=60)
        wait_for(lambda: "late" in proxy.answered, timeout=10)
    last = err.strip().splitlines()[-1]
    assert p.returncode == 129 and last.startswith("error: hung up (SIGHUP)"), err
    assert tag_digest(direct) == a
    assert lock_released(direct), err


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def gone(pid: int) -> bool:
    return proc_state(pid)[0] in ("", "Z")  # a zombie has ended (its reaper collects it)


def test_a_sigkilled_publish_leaves_no_child_running_and_no_tag(registry, oci_image):
    """gracectl SIGKILLed (not its process group) while skopeo pushes: skopeo dies with it (its parent-death
    signal), so nothing pushes on unseen, and the tag is never half there."""
    path = f"killed/{uuid.uuid4().hex[:8]}"
    with FaultProxy(registry).start() as proxy:
        proxy.add("PATCH", r"/blobs/uploads/", "stall")  # skopeo is sending a layer, and hangs there
        p = start("publish", oci_image("killed-" + uuid.uuid4().hex), "--to", f"{proxy.address}/{path}:b1")
        wait_for(lambda: proxy.count("stall") >= 1 or p.poll() is not None)
        kids = children(p.pid)
        names = [Path(f"/proc/{k}/comm").read_text().strip() for k in kids]
        assert "skopeo" in names, (names, p.poll())
        assert all(os.getpgid(k) == k for k in kids)  # each in its own process group, not gracectl's
        p.kill()
        assert p.wait(timeout=10) == -signal.SIGKILL
        wait_for(lambda: all(gone(k) for k in kids), timeout=5)
        proxy.clear()
    time.sleep(0.5)
    assert tag_digest(f"{registry}/{path}", "b1") is None


def test_eight_way_races_give_contention_to_every_loser_while_lock_reads_fail(registry, oci_image, tmp_path):
    """Four promotions and four rollbacks (--to) of one tag at once from eight "hosts", the registry answering
    500 to one lock read in ten: every loser exits 8 (contention, never 5), the winners' moves form one chain
    that ends where the tag points. Two rounds."""
    path = f"race/{uuid.uuid4().hex[:8]}"
    direct = f"{registry}/{path}"
    base = publish(oci_image, direct, "base-" + uuid.uuid4().hex, smoke())
    moves.promote(f"{direct}@{base}", TAG, access=env_access())
    results, retried = [], 0
    with FaultProxy(registry).start() as proxy:
        proxy.add("GET", rf"/manifests/{TAG}\.gracectl-lock$", "error", status=500, every=10)
        proxied = f"{proxy.address}/{path}"
        for round_ in range(2):
            targets = [publish(oci_image, direct, f"r{round_}{i}-" + uuid.uuid4().hex, smoke()) for i in range(8)]
            procs = []
            for i, digest in enumerate(targets):
                args = (["promote", f"{proxied}@{digest}", "--to", TAG] if i % 2 == 0 else
                        ["rollback", f"{proxied}:{TAG}", "--to", digest])
                procs.append(start(*args, env={"GRACECTL_LOCK_DIR": str(tmp_path / f"host{i}"),
                                               "GRACECTL_LOCK_SETTLE_S": "1"}))
            for p, digest in zip(procs, targets):
                out, err = p.communicate(timeout=180)
                results.append((p.returncode, err.strip().splitlines()[-1] if err.strip() else "", digest))
                # the injected 500s; the registry's own, answered under the race, are retried too and not counted
                retried += len(re.findall(r"warning: reading the lock .* answered 500 Injected .*; trying again", err))
        errors = proxy.count("error")
    codes = [rc for rc, _, _ in results]
    print(f"\nrace results: exit codes {codes}, 500s injected on lock reads: {errors}, retried: {retried}")
    assert errors >= 2 and retried == errors, (errors, retried)  # each 500 was retried, none became the exit
    assert set(codes) <= {0, ConflictError.exit_code}, results
    assert codes[:8].count(0) >= 1 and codes[8:].count(0) >= 1, codes
    assert all("lock" in last or "moved from" in last for rc, last, _ in results if rc), results
    done = [e for e in history(direct) if e.status == "done"]
    assert len(done) == 1 + codes.count(0)
    for before, after in zip(done, done[1:]):
        assert after.from_ == before.to
    assert tag_digest(direct) == done[-1].to
    assert {e.to for e in done[1:]} == {d for rc, _, d in results if rc == 0}


def test_publish_to_a_read_only_registry_is_named_read_only(tmp_path, oci_image):
    with RegistryServer(tmp_path / "reg").start() as server:
        pass
    with ReadOnlyRegistry(tmp_path / "reg", server.port).start():
        result = subprocess.run([sys.executable, "-m", "gracectl", "publish", oci_image("ro"), "--to",
                                 f"{server.address}/ro:b1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == ReadOnlyRegistryError.exit_code, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "is read-only" in last and "nothing was pushed" in last, last
