"""`gracectl`: one CLI over the build system. Commands live in gracectl.commands.<area>; this file wires them.

Every expected failure is a GraceError: printed as one line `error: ...` on stderr, exit code per error type.
"""

from __future__ import annotations

import signal
import sys

import typer

from gracectl.commands import plan as plan_commands
from gracectl.errors import GraceError, Interrupted

app = typer.Typer(
    name="gracectl",
    help="Build, verify, publish and roll back vLLM images for NVIDIA GH200 (linux/arm64, sm_90a).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# command modules (one line each: module.register(app))
plan_commands.register(app)
from gracectl.commands import release as release_commands; release_commands.register(app)  # noqa: E402,E702
from gracectl.commands import bench, smoke; smoke.register(app); bench.register(app)  # noqa: E402,E702
from gracectl.commands import testbed as testbed_commands; testbed_commands.register(app)  # noqa: E402,E702
from gracectl.commands import build as build_commands; build_commands.register(app)  # noqa: E402,E702
from gracectl.commands import ci as ci_commands; ci_commands.register(app)  # noqa: E402,E702


def _terminated(signum, frame) -> None:
    # A Jenkins abort sends SIGTERM: unwind like Ctrl-C, so locks are released, temporary files removed and
    # a tag move in flight is read back and reported.
    raise Interrupted("terminated (SIGTERM)", 143)


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        rc = app(args=argv, standalone_mode=False)
    except GraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
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
    sys.exit(rc if isinstance(rc, int) else 0)
