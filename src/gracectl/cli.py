"""`gracectl`: one CLI over the build system. Each command module (gracectl.commands.<area>) declares its commands
at module level on its own `app`; this file adds them to the one CLI.

Every expected failure is a GraceError: printed as one line `error: ...` on stderr, exit code per error type.
"""

from __future__ import annotations

import sys

import typer

from gracectl.commands import bench, build, ci, doctor, plan, release, release_train, smoke, testbed
from gracectl import interrupts
from gracectl.errors import GraceError, Interrupted
from gracectl.image_ref import printable

app = typer.Typer(
    name="gracectl",
    help="Build, verify, publish and roll back vLLM images for NVIDIA GH200 (linux/arm64, sm_90a).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.add_typer(plan.app)
app.add_typer(release_train.app, name="release")
app.add_typer(release.app)
app.add_typer(smoke.app)
app.add_typer(bench.app)
app.add_typer(testbed.app)
app.add_typer(build.app)
app.add_typer(ci.app, name="ci")
app.add_typer(doctor.app)


def run(argv: list[str] | None = None) -> int:
    """One command, its failure said in one line; returns the exit code. The handlers stay in: the entry point
    (gracectl.__main__) ends the process with interrupts.finish, which reports a signal that came late."""
    # Ctrl-C, a Jenkins abort (SIGTERM) and SIGHUP unwind as Interrupted, so locks are released, temporary files
    # removed and a tag move in flight is read back and reported (gracectl.interrupts), not by the CLI framework.
    try:
        try:
            rc = app(args=argv, standalone_mode=False)
        finally:
            interrupts.hold()  # the outcome is decided: a signal from here on is a late warning, never a new error
    except (GraceError, Interrupted) as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)  # a name read from a registry never drives the tty
        interrupts.said()
        return exc.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # SIGINT is gracectl's; this is a KeyboardInterrupt raised by a library itself
        print("error: interrupted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # usage errors (unknown option, missing argument) in non-standalone mode
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # an Interrupted the interpreter or a library rewrapped (raised inside __set_name__)
        cause = interrupts.within(exc)
        if cause is None:
            raise
        print(f"error: {printable(str(cause))}", file=sys.stderr)
        interrupts.said()
        return cause.exit_code
    return rc if isinstance(rc, int) else 0


def main(argv: list[str] | None = None) -> None:
    """`run` inside another program (a test): gracectl's handlers in, then put back; SystemExit with the code."""
    previous = interrupts.install()
    try:
        code = run(argv)
        late = interrupts.take()
    finally:
        interrupts.restore(previous)
    if late:
        interrupts.say_late(late)
    sys.exit(code)
