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


class TestbedError(GraceError):
    """A test-bed component (dockerd, registry, binfmt) failed to start."""

    __test__ = False  # not a pytest test class, despite the name

    exit_code = 10
