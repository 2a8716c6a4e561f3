"""The one way gracectl runs an external program.

List arguments only (no shell), the command echoed to stderr before it runs, secrets redacted from the
echo and from any error text, a missing program turned into ToolMissingError with an install hint and a
non-zero exit into CommandFailedError. Every adapter (docker, skopeo, git, registry) goes through here;
which package provides which program is gracectl.adapters.tools' table.

A child dies with gracectl: it runs in its own process group (a Ctrl-C or a Jenkins abort reaches gracectl,
which ends the child's whole group itself, and waits for it, before it reports), with the kernel's parent-death
signal set (PR_SET_PDEATHSIG: SIGKILL when gracectl dies, SIGKILL included), and no terminal to read from.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence

from gracectl.adapters import tools
from gracectl.errors import CommandFailedError, ToolMissingError

REDACTED = "***"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_libc = ctypes.CDLL(None, use_errno=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def which(program: str) -> str:
    """Absolute path of `program`, or ToolMissingError naming what to install."""
    path = program if os.path.isabs(program) else shutil.which(program)
    if not path or not os.access(path, os.X_OK):
        name = os.path.basename(program)
        raise ToolMissingError(f"`{name}` is not installed or not on PATH: {tools.hint(name)}")
    return path


def format_command(args: Sequence[str], secrets: Iterable[str] = ()) -> str:
    return redact(shlex.join(args), secrets)


def run(
    args: Sequence[str],
    *,
    input: str | None = None,
    secrets: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    echo: bool = True,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[str]:
    """Run `args` and return the completed process (stdout and stderr as text).

    `secrets` are values that must never be printed (passwords given via `input`, tokens in env).
    `on_line`, when given, receives each output line as it arrives (stdout and stderr merged), for
    progress on long work such as builds; the merged text is then in `.stdout`. `pass_fds`: descriptors
    the program inherits (as /dev/fd/N: how secrets reach it without a file on disk).
    """
    secrets = [s for s in secrets if s]
    args = [str(a) for a in args]
    args[0] = which(args[0])
    if echo:
        # stderr, so that --json output on stdout stays parseable.
        print(f"+ {format_command(args, secrets)}", file=sys.stderr, flush=True)
    full_env = {**os.environ, **env} if env is not None else None
    try:
        if on_line is None:
            with _child(args, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd,
                        pass_fds=tuple(pass_fds)) as p:
                stdout, stderr = p.communicate(input, timeout=timeout)
            proc = subprocess.CompletedProcess(args, p.returncode, stdout, stderr)
        else:
            proc = _run_streaming(args, input, full_env, cwd, timeout, on_line)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailedError(
            f"{os.path.basename(args[0])} did not finish within {timeout:.0f}s: {format_command(args, secrets)}"
        ) from exc
    if check and proc.returncode != 0:
        raise CommandFailedError(
            f"{os.path.basename(args[0])} exited {proc.returncode}: "
            f"{redact(last_line(proc.stderr) or last_line(proc.stdout), secrets)}",
            returncode=proc.returncode,
            output=redact((proc.stdout or "") + (proc.stderr or ""), secrets),
        )
    return proc


def start_daemon(args: Sequence[str], log: str | os.PathLike[str],
                 env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start `args` in its own session (it outlives gracectl), output appended to `log`; not waited for.
    `env`: variables added to this process's environment. The test bed's daemons (gracectl.testbed.processes)
    start here."""
    args = [str(a) for a in args]
    args[0] = which(args[0])
    print(f"+ {format_command(args)}", file=sys.stderr, flush=True)
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                env={**os.environ, **env} if env else None)


def _die_with_parent(parent: int):
    """The child's last step before the program: the kernel SIGKILLs it when gracectl dies (no ctypes lookup
    here: the function is resolved before the fork)."""
    prctl, sigkill = _libc.prctl, int(signal.SIGKILL)

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:  # gracectl died before that took effect: nobody else would end this child
            os._exit(1)
    return setup


@contextlib.contextmanager
def _child(args, **popen):
    """A running child (see the module docstring); whatever ends the wait early (an interrupt, a timeout, an
    error) kills its whole process group and waits for it, so nothing it started runs on unseen."""
    with subprocess.Popen(args, process_group=0, preexec_fn=_die_with_parent(os.getpid()), **popen) as p:
        try:
            yield p
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise


def _run_streaming(args, input, env, cwd, timeout, on_line) -> subprocess.CompletedProcess[str]:
    lines: list[str] = []
    with _child(
        args,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
    ) as p:
        if input is not None:
            p.stdin.write(input)
            p.stdin.close()
        for line in p.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            on_line(line)
        p.wait(timeout=timeout)
    text = "\n".join(lines)
    return subprocess.CompletedProcess(args, p.returncode, stdout=text, stderr=text)


def last_line(text: str | None) -> str:
    for line in reversed((text or "").strip().splitlines()):
        if line.strip():
            return line.strip()
    return ""
