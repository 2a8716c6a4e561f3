"""Interrupts (Ctrl-C, a Jenkins abort, a closed terminal) handled by gracectl itself, never by the CLI framework.

`install()` (the entry point does it first) turns SIGINT, SIGTERM and SIGHUP into `Interrupted` (exit 130, 143,
129), raised where the program is, so every `with` block unwinds: temporary files go, locks are released.
ONE signal is raised: from then on (as inside `deferred()` and after `hold()`) a signal is only noted, so a second
Ctrl-C never cuts the unwinding, a lock's release or the read-back of a tag write short, and never replaces the
outcome already on its way with another. Inside `deferred()` (a tag write's read-back and record, a lock's
release) and after `hold()` (the outcome is decided) nothing is raised either; the owner `take()`s a noted
signal and reports it with the outcome, and `finish()` - the process's last act - reports one still noted.
The handlers stay until the last byte is written: `finish()` blocks the signals, writes, and exits at once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading

from gracectl.errors import Interrupted

SIGNALS = {signal.SIGINT: ("interrupted (SIGINT)", 130), signal.SIGTERM: ("terminated (SIGTERM)", 143),
           signal.SIGHUP: ("hung up (SIGHUP)", 129)}
_depth = 0
_held = 0  # how much of _depth is hold()s: ended with their operation() (or by restore() at the CLI's end)
_noted: list[int] = []
_unsaid: list[int] = []  # the raised interrupt until its report is written (said()): where a library swallowed
# it (raised inside a __del__ or a garbage-collection callback: "Exception ignored"), finish() still says it


def _raise(signum: int) -> None:
    """Raise the one Interrupted of this run: from here every further signal is noted (see the docstring)."""
    global _depth, _held
    _depth += 1
    _held += 1
    _unsaid[:] = [signum]
    raise Interrupted(*SIGNALS[signum])


def within(exc: BaseException) -> Interrupted | None:
    """The Interrupted an exception carries as its cause or context (one rewrapped on its way up), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Interrupted):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def said() -> None:
    """The raised interrupt has been reported (an error line, or a warning with the outcome)."""
    _unsaid.clear()


def _handler(signum, frame) -> None:
    if _depth:
        _noted.append(signum)
        return
    _raise(signum)


def install(early: list[int] = ()) -> dict:
    """gracectl's handlers in; returns the ones they replace (for `restore`). `early`: signals a bootstrap handler
    noted before these existed (the entry point's first lines): the first is raised now."""
    previous = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    if early:
        _raise(early[0])
    return previous


def restore(previous: dict) -> None:
    """The handlers `install` replaced back (a CLI run inside another program, e.g. a test, leaves no trace)."""
    global _depth, _held
    for signum, handler in previous.items():
        if handler is not _handler:
            signal.signal(signum, handler)
    _depth = _held = 0
    _noted.clear()
    _unsaid.clear()


def start_thread(thread: threading.Thread) -> None:
    """Start a helper thread that never receives these signals (a thread inherits its creator's mask): the kernel
    then delivers them to the main thread alone, so a blocking call there is woken at once (EINTR), and a signal
    that comes while finish() has them blocked stays pending where finish() looks."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def deferred():
    """Signals arriving in the block are noted, not raised (main thread only; nested blocks are one)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


@contextlib.contextmanager
def shielded():
    """A step never cut in the middle: a registry write whose answer, once abandoned, cannot be told from a write
    that lands later (after the clean-up has read the registry). A signal in it is noted, and raised as it ends,
    even over an error of its own (each request is bounded by its timeout, so the wait is too), unless an
    outer block defers or holds it."""
    try:
        with deferred():
            yield
    finally:
        if _noted and not _depth and threading.current_thread() is threading.main_thread():
            signum = _noted[0]
            _noted.clear()
            _raise(signum)


def hold() -> None:
    """From here on, note signals instead of raising them: the operation's outcome is decided and only its
    report remains (the CLI says a late signal as a warning)."""
    global _depth, _held
    if threading.current_thread() is threading.main_thread():
        _depth += 1
        _held += 1


@contextlib.contextmanager
def operation():
    """One operation of a run of several in one process (the rehearsal's stages). A signal noted before it (while
    the one before reported its outcome) is raised at its start, before new work; the holds it makes end with it,
    so every hold() is undone by construction. Unwinding an interrupt keeps them: a second signal never cuts
    the clean-up short."""
    global _depth, _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _noted and not _depth:  # nothing deferred or held around us: the noted signal stops the run here
        signum = _noted[0]
        _noted.clear()
        _raise(signum)
    held = _held
    yield
    _depth -= _held - held
    _held = held


def take() -> Interrupted | None:
    """The first signal noted in a deferred block (None if none), as the Interrupted it would have raised."""
    if not _noted:
        return None
    signum = _noted[0]
    _noted.clear()
    return Interrupted(*SIGNALS[signum])


def finish(code: int) -> None:
    """The process's last act: flush what was written, report a signal that came after the outcome was decided
    (noted, or still pending at the kernel), and exit with `code` at once. The signals are blocked from the last
    look onwards, so none can kill the process between its last byte and its exit (the interpreter's own
    shutdown would put the default handlers back)."""
    hold()
    atexit._run_exitfuncs()  # what libraries registered (temporary files' finalizers) runs while signals are noted
    _flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
    late = take()
    lost = _unsaid + [s for s in SIGNALS if s in signal.sigpending()]
    if late is None and lost:
        late = Interrupted(*SIGNALS[lost[0]])
    if late is not None:
        with contextlib.suppress(Exception):
            say_late(late)
        _flush()
    os._exit(code)


def say_late(late: Interrupted) -> None:
    print(f"warning: {late} came after the outcome was decided: the result above stands", file=sys.stderr)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
