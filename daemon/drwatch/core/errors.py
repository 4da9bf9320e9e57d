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
EXIT_USAGE = 2  # argparse's status for a wrong command line (shared with EXIT_UNCHECKED: argparse fixes it)

# What each command's exit statuses mean: the epilog of its `--help` is generated from this table (and a test
# provokes each status for real and finds it there). Every command also exits 2 on a wrong command line.
COMMAND_EXITS: dict[str, tuple[tuple[int, str], ...]] = {
    "run": (
        (EXIT_OK, "stopped cleanly (SIGTERM, SIGINT)"),
        (EXIT_UNAVAILABLE, "a service it needs is unavailable at start: the store, the listen port, cluster mode's "
                           "job engine"),
        (EXIT_CONFIG, "invalid configuration (every problem with its field path), a secret the store needs is "
                      "missing, or no --config under systemd"),
    ),
    "check": (
        (EXIT_OK, "compliant and every check ok"),
        (EXIT_NONCOMPLIANT, "a rule fails or a check failed (a bad backup)"),
        (EXIT_UNCHECKED, "something could not be checked (error, timeout, unknown), or a result could not be "
                         "stored"),
        (EXIT_UNAVAILABLE, "the store is unavailable"),
        (EXIT_CONFIG, "invalid configuration, no --config, or no validator matches --asset/--validator"),
    ),
    "check-config": (
        (EXIT_OK, "valid (warnings on stderr, such as a secret or a path missing here, keep it 0)"),
        (EXIT_CONFIG, "invalid: each problem with its field path (at most 50, then a count of the rest)"),
    ),
    "status": (
        (EXIT_OK, "compliant and every stored check ok"),
        (EXIT_NONCOMPLIANT, "a rule fails or a stored check failed (a bad backup)"),
        (EXIT_UNCHECKED, "something could not be checked (error, timeout, unknown, stale)"),
        (EXIT_UNAVAILABLE, "no store yet (drwatch has not run with this configuration) or it is unreachable"),
        (EXIT_CONFIG, "invalid configuration or no --config"),
    ),
    "seal": (
        (EXIT_OK, "the seal is written"),
        (EXIT_NONCOMPLIANT, "a wrong argument (--meta/--stamp, an s3:// URL without --config and --location)"),
        (EXIT_DATAERR, "nothing to seal but entries that are not regular files (nothing written)"),
        (EXIT_NOINPUT, "a file or directory under DIR (or the --sign key) cannot be read (nothing written)"),
        (EXIT_UNAVAILABLE, "the S3 location is unavailable, or a secret it needs"),
        (EXIT_CANTCREAT, "the seal cannot be written (nothing written)"),
        (EXIT_CONFIG, "DIR is not a directory, or invalid --config"),
    ),
    "seal-keygen": (
        (EXIT_OK, "the key pair is written"),
        (EXIT_CANTCREAT, "the private key file exists already, or the pair cannot be written (nothing written)"),
    ),
    "ack": (
        (EXIT_OK, "the acknowledgement is recorded"),
        (EXIT_UNAVAILABLE, "the store is unavailable"),
        (EXIT_CONFIG, "invalid configuration, no --config, unknown asset or validator, or an empty --by/--reason"),
    ),
    "attest": (
        (EXIT_OK, "the attestation is recorded"),
        (EXIT_UNAVAILABLE, "the store is unavailable"),
        (EXIT_CONFIG, "invalid configuration, unknown asset or copy, or a wrong --recovery-point"),
    ),
    "demo": (
        (EXIT_OK, "the demo estate is written"),
        (EXIT_NONCOMPLIANT, "refused: DIR holds something else (or a demo, without --force), or the S3 keys are "
                            "not set"),
    ),
    "report": (
        (EXIT_OK, "the report is written, the store's result chain intact"),
        (EXIT_NONCOMPLIANT, "the report is written, but the store's result chain is broken (a result edited, "
                            "deleted or reordered): the report and stderr say so"),
        (EXIT_NOINPUT, "reports.signing_key_file cannot be used"),
        (EXIT_UNAVAILABLE, "the store, or its result chain, cannot be read"),
        (EXIT_CANTCREAT, "the report cannot be written"),
        (EXIT_CONFIG, "invalid configuration, no --config, an unknown --asset or a wrong --since"),
    ),
    "verify-report": (
        (EXIT_OK, "the report and every result it lists are as the store holds them (pruned ones noted)"),
        (EXIT_NONCOMPLIANT, "tampered: the report was edited or its signature fails, or a result was edited, "
                            "deleted or reordered in the store, or the chain was rewritten"),
        (EXIT_NOINPUT, "the report or a key cannot be read"),
        (EXIT_UNAVAILABLE, "the store is unavailable"),
        (EXIT_CONFIG, "invalid configuration or no --config"),
    ),
    "golden": (
        (EXIT_OK, "the goldens are recorded"),
        (EXIT_NONCOMPLIANT, "the copy is not known-good (it does not match its seal)"),
        (EXIT_UNCHECKED, "could not record (engine, memory, location)"),
        (EXIT_CONFIG, "invalid configuration, no --config, or a wrong --asset/--copy/--validator"),
    ),
}


def exit_codes_epilog(command: str) -> str:
    """The "exit status" section of a command's ``--help``."""
    lines = [f"  {code:>3}  {meaning}" for code, meaning in COMMAND_EXITS[command]]
    if all(code != EXIT_USAGE for code, _ in COMMAND_EXITS[command]):
        lines.append(f"  {EXIT_USAGE:>3}  a wrong command line (unknown option, missing argument)")
    else:
        lines.append(f"  (also {EXIT_USAGE} for a wrong command line: unknown option, missing argument)")
    return "exit status:\n" + "\n".join(lines)


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


# Problems of one configuration shown to a person (check-config, the daemon's log, a reload's answer); the
# rest are counted ("... and N more problems"): a generated file with 200k bad keys must not print 200k lines.
SHOWN_PROBLEMS = 50


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` lists each one with its field path; ``omitted`` counts
    further problems that were not even itemised (a file with more than the parser keeps)."""

    def __init__(self, source: str, problems: Sequence[ConfigProblem], omitted: int = 0) -> None:
        self.source = source
        self.problems = tuple(problems)
        self.omitted = omitted
        lines = "".join(f"\n  {p}" for p in self.shown)
        more = f"\n  {self.more_text}" if self.more else ""
        super().__init__(f"invalid configuration {source}:{lines}{more}")

    @property
    def count(self) -> int:
        """Every problem found, itemised or not."""
        return len(self.problems) + self.omitted

    @property
    def shown(self) -> tuple[ConfigProblem, ...]:
        return self.problems[:SHOWN_PROBLEMS]

    @property
    def more(self) -> int:
        """Problems beyond those shown."""
        return self.count - len(self.shown)

    @property
    def more_text(self) -> str:
        return f"... and {self.more} more problem{'s' if self.more != 1 else ''}"


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
