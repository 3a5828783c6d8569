"""One error root and the documented exit codes.

Every expected failure raises a subclass of :class:`MlflowCiError`; the CLI's single handler
prints its one-paragraph message and exits with its code.  Anything else is a bug: the handler
says so, writes the traceback to a log file and exits with :data:`EXIT_BUG`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_CONFIG = 2
EXIT_INFRA = 3
EXIT_BUG = 4
EXIT_HANGUP = 129
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "every check passed",
    EXIT_CHECK_FAILED: "a check or gate failed (the report says which)",
    EXIT_CONFIG: "usage or configuration error (bad flag, invalid mlflow-ci.yaml)",
    EXIT_INFRA: "infrastructure error (tracking server unreachable, process or engine failure)",
    EXIT_BUG: "internal error in mlflow-ci (a bug: the traceback is in the log file named)",
    EXIT_HANGUP: "stopped by SIGHUP (the terminal closed)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_TERMINATED: "stopped by SIGTERM (a cancelled CI job, `timeout`, a container stop)",
}


class MlflowCiError(Exception):
    """Root of every expected failure. ``str(err)`` is a complete, one-paragraph message."""

    exit_code = EXIT_INFRA

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(MlflowCiError):
    """Bad usage or configuration: exit 2."""

    exit_code = EXIT_CONFIG


class PolicyError(ConfigError):
    """An invalid ``mlflow-ci.yaml``; the message names file, line, key and expectation."""


class CheckFailed(MlflowCiError):
    """A check or gate failed: exit 1."""

    exit_code = EXIT_CHECK_FAILED


class InfraError(MlflowCiError):
    """A server, process or engine failed underneath us: exit 3."""

    exit_code = EXIT_INFRA


class ServerUnreachable(InfraError):
    """The tracking server did not answer."""


class CommandFailed(InfraError):
    """A subprocess exited non-zero."""

    def __init__(self, message: str, *, returncode: int, output_tail: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.returncode = returncode
        self.output_tail = output_tail


class ConcurrentChange(CheckFailed):
    """Another registry change won a race; ours was not applied."""


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so that
    every ``finally`` and context manager stops what it started (servers, entry points, workers,
    deployments) on the way out. The exit code is 128 + the signal's number, as a shell reports it."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(name)
        self.signum = signum
        self.name = name
        self.exit_code = 128 + signum
