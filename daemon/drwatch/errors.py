"""The few typed error roots of drwatch.

- ``ConfigError``: the configuration is invalid; carries every problem with its field path.
- ``DrillFailed``: the backup is bad (maps to outcome ``failed``).
- ``ValidatorError``: drwatch could not check (maps to outcome ``error``).
Anything else raised by a validator is a bug; the runner records it as ``error`` with code
``internal_error`` and logs the traceback, so a broken validator never takes the daemon down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EXIT_OK = 0
EXIT_NONCOMPLIANT = 1
EXIT_UNCHECKED = 2
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: a needed service (store, port) is unavailable at start
# `drwatch seal` refuses, writing nothing, with the sysexits.h status that says why:
EXIT_DATAERR = 65  # EX_DATAERR: nothing to seal but entries that are not regular files
EXIT_NOINPUT = 66  # EX_NOINPUT: a file or directory under DIR cannot be read
EXIT_CANTCREAT = 73  # EX_CANTCREAT: the seal cannot be written


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` lists each one with its field path."""

    def __init__(self, source: str, problems: Sequence[ConfigProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


class DrillFailed(Exception):
    """The backup under test is bad."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class ValidatorError(Exception):
    """The validator could not check (server down, permission denied, tool missing...)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")
