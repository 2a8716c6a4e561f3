"""`gracectl` and `python -m gracectl`: interrupts are gracectl's from the first instruction, before the CLI's
imports (about half a second), so a Ctrl-C at any moment gives one line and a true exit code, never a traceback;
and until the last byte (interrupts.finish ends the process)."""

import _signal  # the C module alone (signal.py imports enum): a handler exists a few milliseconds sooner

_early: list[int] = []  # signals that came before gracectl.interrupts' handlers: the first is raised by install()
for _signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
    _signal.signal(_signum, lambda signum, frame: _early.append(signum))

import sys  # noqa: E402

from gracectl import interrupts  # noqa: E402


def run() -> None:
    try:
        # the CLI's imports (~0.5 s) run while signals are only noted: one raised inside an import can come out as
        # another error (Python 3.11 rewraps it as RuntimeError inside a class's __set_name__); install() raises it
        from gracectl.cli import run as run_command
        interrupts.install(_early)
    except interrupts.Interrupted as exc:
        print(f"error: {exc} while starting: nothing was done", file=sys.stderr)
        interrupts.said()
        interrupts.finish(exc.exit_code)
    interrupts.finish(run_command())


if __name__ == "__main__":
    run()
