"""What a failed ``pg_restore``/``psql`` run means: the backup's fault (``dump_corrupt``, ``restore_failed``:
failed) or the sandbox's or target's (a tool too old, no space, a missing extension or role: error)."""

from __future__ import annotations

import re

_ENVIRONMENT_ERRORS = (  # (pattern, code): the sandbox or target could not do it; not the backup's fault
    (r"unsupported version", "dump_newer_than_tools"),
    (r"could not connect|connection to server .* failed|server closed the connection|terminating connection|"
     r"the database system is (shutting down|starting up|in recovery mode)|Connection refused",
     "restore_target_unavailable"),
    (r"No space left on device|could not extend file", "sandbox_full"),
    (r'extension "[^"]+" is not available|could not open extension control file|could not load library',
     "extension_missing"),
    (r'role "[^"]+" does not exist', "role_missing"),
    (r"permission denied|must be owner|must be superuser", "restore_permission_denied"),
)
_CORRUPT = re.compile(r"corrupt|could not read (from )?input file|unexpected end of file|did not find magic string|"
                      r"input file is too short|could not find block ID|could not (uncompress|decompress)|"
                      r"invalid compressed|could not find file .* in archive|could not open input file", re.I)


def classify_restore_error(stderr: str) -> tuple[str, bool]:
    """(code, backup_fault) for a failed restore's stderr."""
    for pattern, code in _ENVIRONMENT_ERRORS:
        if re.search(pattern, stderr):
            return code, False
    return ("dump_corrupt" if _CORRUPT.search(stderr) else "restore_failed"), True


def error_lines(stderr: str) -> list[str]:
    lines = [ln.strip() for ln in stderr.splitlines() if re.search(r"error|ERROR|FATAL|PANIC", ln)]
    return lines or [ln.strip() for ln in stderr.splitlines() if ln.strip()][-3:] or ["(no error output)"]
