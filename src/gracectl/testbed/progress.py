"""Progress lines of the test bed's long steps (debootstrap under qemu takes minutes): time since start."""

from __future__ import annotations

import contextlib
import sys
import time

_t0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - _t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(title: str):
    say(f"{title} ...")
    start = time.monotonic()
    yield
    say(f"{title}: done in {time.monotonic() - start:.1f}s")


def now_and_then(prefix: str, every: float = 20.0):
    """An on_line callback that shows a long command's latest output line at most every `every` seconds."""
    last = time.monotonic()

    def on_line(line: str) -> None:
        nonlocal last
        if line.strip() and time.monotonic() - last >= every:
            last = time.monotonic()
            say(f"{prefix}: {line.strip()[:100]}")

    return on_line
