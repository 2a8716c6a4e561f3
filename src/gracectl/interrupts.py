"""Interrupts (Ctrl-C, a Jenkins abort, a closed terminal) handled by gracectl itself, never by the CLI framework.

`install()` (the CLI does it first) turns SIGINT, SIGTERM and SIGHUP into `Interrupted` (exit 130, 143, 129),
raised where the program is, so every `with` block unwinds: temporary files go, locks are released.
Inside `deferred()` a signal is only noted: a tag write, its read-back and its record, and a lock's release,
always finish, so what gracectl then says about the tag is what the registry holds. The block's owner asks
`take()` for a noted signal and reports it with the outcome; the CLI reports one still noted at the end.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from gracectl.errors import Interrupted

SIGNALS = {signal.SIGINT: ("interrupted (SIGINT)", 130), signal.SIGTERM: ("terminated (SIGTERM)", 143),
           signal.SIGHUP: ("hung up (SIGHUP)", 129)}
_depth = 0
_held = 0  # how much of _depth is hold()s: ended by resume() (or by restore() at the CLI's end)
_noted: list[int] = []


def _handler(signum, frame) -> None:
    if _depth:
        _noted.append(signum)
        return
    raise Interrupted(*SIGNALS[signum])


def install() -> dict:
    """gracectl's handlers in; returns the ones they replace (for `restore`)."""
    return {signum: signal.signal(signum, _handler) for signum in SIGNALS}


def restore(previous: dict) -> None:
    """The handlers `install` replaced back (a CLI run inside another program, e.g. a test, leaves no trace)."""
    global _depth, _held
    for signum, handler in previous.items():
        if handler is not _handler:
            signal.signal(signum, handler)
    _depth = _held = 0
    _noted.clear()


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


def hold() -> None:
    """From here on, note signals instead of raising them: the operation's outcome is decided and only its
    report remains (the CLI says a late signal as a warning)."""
    global _depth, _held
    if threading.current_thread() is threading.main_thread():
        _depth += 1
        _held += 1


def resume() -> None:
    """Before the next operation of a run of several in one process (the rehearsal's stages): the holds of the
    operations before end, and a signal noted meanwhile is raised now, before new work starts."""
    global _depth, _held
    if threading.current_thread() is not threading.main_thread():
        return
    _depth -= _held
    _held = 0
    noted = take()
    if noted:
        raise noted


def take() -> Interrupted | None:
    """The first signal noted in a deferred block (None if none), as the Interrupted it would have raised."""
    if not _noted:
        return None
    signum = _noted[0]
    _noted.clear()
    return Interrupted(*SIGNALS[signum])
