"""The exception family. The CLI turns each into a message and an exit code, never a traceback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3     # LSB init-script convention: the service is not running


class BaremetalError(Exception):
    """An error the operator can act on; `str()` is the whole message."""

    exit_code = EXIT_FAILURE


class UsageError(BaremetalError):
    """Bad command-line input (unknown program, conflicting flags)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Issue:
    """One problem in a stack file: the field path (`model[2].tensor_parallel`) and what is wrong."""

    path: str
    message: str
    line: int | None = None

    def format(self, file: Path | str) -> str:
        where = f"{file}:{self.line}" if self.line else str(file)
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(BaremetalError):
    """A stack file that cannot be used; carries every issue found, not only the first."""

    exit_code = EXIT_USAGE

    def __init__(self, file: Path | str, issues: list[Issue]):
        self.file = file
        self.issues = list(issues)
        count = len(self.issues)
        head = f"{file}: {count} error{'s' if count != 1 else ''} in the stack file"
        super().__init__("\n".join([head] + ["  " + issue.format(file) for issue in self.issues]))


class SupervisorError(BaremetalError):
    """supervisord could not do what was asked (fault, not running, socket unreachable)."""


class NotRunningError(SupervisorError):
    """supervisord for this stack does not answer: nothing to talk to (exit 3, as init scripts do)."""

    exit_code = EXIT_NOT_RUNNING


class EnvironmentBuildError(BaremetalError):
    """Building a runtime environment failed; the message names the env and the failed step."""
