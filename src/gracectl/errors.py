"""Typed errors. Each carries the exit code the CLI returns and a one-line message that says what to do.

The CLI prints `error: <message>` on one line and exits with `exit_code`; nothing else is printed for
an expected failure (no traceback), so Jenkins logs and operators see the cause at once.
"""

from __future__ import annotations


class GraceError(Exception):
    exit_code = 1

    def __init__(self, message: str):
        # One line, always: a multi-line cause is folded so the operator sees it whole.
        super().__init__(" ".join(str(message).split()))


class UsageError(GraceError):
    """Bad input: unknown release, malformed manifest or mirror file, bad argument."""

    exit_code = 2


class ManifestError(UsageError):
    pass


class ToolMissingError(GraceError):
    """A program the step needs is not installed."""

    exit_code = 3


class CommandFailedError(GraceError):
    """An external tool (docker, skopeo, git...) exited non-zero."""

    exit_code = 4

    def __init__(self, message: str, returncode: int | None = None, output: str = ""):
        super().__init__(message)
        self.returncode = returncode
        self.output = output


class RegistryError(GraceError):
    """The registry cannot be reached, refused the credentials, or answered something unexpected."""

    exit_code = 5
    sent = True  # False when the request provably never reached the registry (no connection was made)
    transient = False  # a busy registry's answer (500, 502, 503, 504, 429, a connection reset): worth a retry


class ReadOnlyRegistryError(RegistryError):
    """The registry is in read-only mode (maintenance): it refuses every write with 405."""


class DeadlineError(RegistryError):
    """The operation ran past its overall deadline (--deadline / GRACECTL_DEADLINE_S)."""


class SmokeFailedError(GraceError):
    exit_code = 6


class PromotionRefusedError(GraceError):
    """The gate said no: no passing smoke record, or a benchmark regression."""

    exit_code = 7


class ConflictError(GraceError):
    """Somebody else changed the tag (or holds its lock) while we worked: nothing was moved."""

    exit_code = 8


class NoHistoryError(GraceError):
    exit_code = 9


class OutcomeUnknownError(GraceError):
    """A tag move was sent but its answer was lost, and reading the tag back failed too: whether it moved
    is not known. The message says how to check (`gracectl history` reads the tag and settles the entry)."""

    exit_code = 11


class NotFoundError(GraceError):
    """The image (tag or digest) named does not exist in the registry."""

    exit_code = 12


class Interrupted(BaseException):
    """Ctrl-C (SIGINT), a Jenkins abort (SIGTERM) or a hang-up (SIGHUP), raised by gracectl.interrupts: clean-up
    ran, the message says what was changed. Not a GraceError (like KeyboardInterrupt, it is not an error a
    caller may catch and carry on from)."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130, *, outcome_said: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.outcome_said = outcome_said  # the message already ends with what was changed (else the CLI adds it)


class TestbedError(GraceError):
    """A test-bed component (dockerd, registry, binfmt) failed to start."""

    __test__ = False  # not a pytest test class, despite the name

    exit_code = 10


class UpstreamError(GraceError):
    """A release's upstream truth cannot be read or does not hold: an index that cannot be reached, a file it
    does not have, a requirement set that does not resolve."""

    exit_code = 13


class IndexUnreachableError(UpstreamError):
    """The package index answers nothing (connection refused, DNS, timeout): an operational failure, which
    `release watch` tells apart from a release it refuses."""


class ReleaseCheckError(GraceError):
    """A manifest differs from what its release's own sources say (drift), or its triton_kernels pairing would
    fail: found before any build."""

    exit_code = 14
