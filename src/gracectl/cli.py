"""`gracectl`: one CLI over the build system. Each command module (gracectl.commands.<area>) declares its commands
at module level on its own `app`; this file adds them to the one CLI.

Every expected failure is a GraceError: printed as one line `error: ...` on stderr, exit code per error type.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import typer

from gracectl.commands import bench, build, ci, doctor, plan, release, release_train, smoke, testbed
from gracectl import environment, interrupts
from gracectl.adapters import docker
from gracectl.releases import manifest
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


# What an interrupt leaves, said as the last words of its line where the command did not say it itself (a tag
# write, a push and a lock's claim say theirs). Release tags move only inside promote/rollback's write, which
# reports its own outcome, so "no release tag was moved" holds for every other instant. One entry per command:
# tests/unit/test_cli.py holds that a new command gets its own.
NOTHING = "nothing was changed"
NO_TAG = "no release tag was moved"
INTERRUPT_LEAVES = {
    **dict.fromkeys(["releases", "plan", "lint", "history", "records", "verify", "report", "doctor", "release check",
                     "ci stages", "ci archive", "testbed status"], NOTHING),
    **dict.fromkeys(["build", "smoke", "bench", "publish", "promote", "rollback", "sign", "ci plan", "ci build",
                     "ci smoke", "ci push", "ci promote", "ci rollback", "ci cleanup"],
                    NO_TAG + " (a record or image is written whole or not at all)"),
    "rehearse": "the stages the lines above passed stand (the test bed's tags they moved included)",
    "release new": "the manifests are written whole or not at all (`git status releases/` says which)",
    "release watch": "what the lines above said done stands; run it again for the rest",
    "keygen": f"{NO_TAG}; a half-written key pair may be left: remove it before keygen again",
    "unlock": f"{NO_TAG}; `gracectl history TAG` says whether the lock was released",
    **dict.fromkeys(["testbed up", "testbed down"], f"{NO_TAG}; the test bed may be partly changed: run it again"),
}


def interrupt_outcome(argv: list[str]) -> str:
    """The outcome an interrupt of the command `argv` names leaves; before a command was chosen, nothing."""
    return INTERRUPT_LEAVES.get(command_path(argv), NOTHING)


def command_path(argv: list[str]) -> str:
    """"ci build" for ["ci", "build", "--x"]: the words of argv that name a command or a command group."""
    group, words = typer.main.get_command(app), []
    for word in argv:
        sub = getattr(group, "commands", {}).get(word)
        if sub is None:
            break
        words.append(word)
        group = sub
    return " ".join(words)


def configure_process(env: Mapping[str, str]) -> None:
    """The process-wide locations the edge hands down once, before a command runs (nothing below reads the
    environment): the docker client and the folder of release manifests (the test bed's folders: its own
    command, gracectl.commands.testbed)."""
    docker.use_binary(environment.docker_binary(env))
    manifest.use_releases_dir(environment.releases_dir(env))


def run(argv: list[str] | None = None) -> int:
    """One command, its failure said in one line; returns the exit code. The handlers stay in: the entry point
    (gracectl.__main__) ends the process with interrupts.finish, which reports a signal that came late."""
    # Ctrl-C, a Jenkins abort (SIGTERM) and SIGHUP unwind as Interrupted, so locks are released, temporary files
    # removed and a tag move in flight is read back and reported (gracectl.interrupts), not by the CLI framework.
    words = sys.argv[1:] if argv is None else argv  # what an interrupt's outcome is looked up by
    try:
        try:
            configure_process(os.environ)
            rc = app(args=argv, standalone_mode=False)
        finally:
            interrupts.hold()  # the outcome is decided: a signal from here on is a late warning, never a new error
    except Interrupted as exc:
        return _say_interrupted(exc, words)
    except GraceError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)  # a name read from a registry never drives the tty
        interrupts.said()
        return exc.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # SIGINT is gracectl's; this is a KeyboardInterrupt raised by a library itself
        print(f"error: interrupted; {interrupt_outcome(words)}", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # usage errors (unknown option, missing argument) in non-standalone mode
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # an Interrupted the interpreter or a library rewrapped (raised inside __set_name__)
        cause = interrupts.within(exc)
        if cause is None:
            raise
        return _say_interrupted(cause, words)
    return rc if isinstance(rc, int) else 0


def _say_interrupted(exc: Interrupted, argv: list[str]) -> int:
    said = str(exc) if exc.outcome_said else f"{exc}; {interrupt_outcome(argv)}"
    print(f"error: {printable(said)}", file=sys.stderr)
    interrupts.said()
    return exc.exit_code


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
