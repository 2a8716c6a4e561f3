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


def main(argv: list[str] | None = None) -> None:
    # Ctrl-C, a Jenkins abort (SIGTERM) and SIGHUP unwind as Interrupted, so locks are released, temporary files
    # removed and a tag move in flight is read back and reported (gracectl.interrupts), not by the CLI framework.
    previous = interrupts.install()
    try:
        rc = app(args=argv, standalone_mode=False)
    except (GraceError, Interrupted) as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)  # a name read from a registry never drives the tty
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # outside a tag move (which reports what it changed as Interrupted)
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors (unknown option, missing argument) in non-standalone mode
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    finally:
        late = interrupts.take()
        interrupts.restore(previous)
    if late:  # arrived while the command's last write finished: its outcome, printed above, stands
        print(f"warning: {late} after the command had finished; its result above stands", file=sys.stderr)
    sys.exit(rc if isinstance(rc, int) else 0)
