"""The one log line a run ends with (``run_finished``): its level follows what the outcome asks of a person."""

from __future__ import annotations

from typing import Any

import structlog

from drwatch.core.logs import printable
from drwatch.core.model import Outcome, Result, Severity

log = structlog.get_logger("drwatch.engine.runner")  # the runner's logger: the line is the runner's

LOGGED_FINDINGS = 5  # findings named (code:subject) on a run's log line, worst first; the rest are counted
_SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


def log_finished(result: Result, bug: Exception | None, warn: bool,
                  warned: frozenset[str] | None = None) -> frozenset[str]:
    """One line per run: info when it proved something (or was cancelled); warning (``warn``) when the backup
    is bad or could not be checked (``failed``, ``error``, ``timeout``), naming the worst findings; error,
    with the traceback, when the validator crashed (a drwatch bug). An ``ok`` run with warning findings names
    them too, at warning level when their codes differ from ``warned`` (those of the last such line), else at
    info. Info findings are counted, never named. asset, validator and run_id come from the bound context.
    Returns the warning codes now logged (for the next call's ``warned``)."""
    fields: dict[str, Any] = {"kind": result.kind, "outcome": result.outcome.value,
                              "duration": round(result.duration, 3), "findings": len(result.findings)}
    notable = sorted((f for f in result.findings if f.severity != Severity.INFO),
                     key=lambda f: _SEVERITY_RANK[f.severity])
    if notable:
        fields["problems"] = [printable(f.code, 64) + (f":{printable(f.subject)}" if f.subject else "")
                              for f in notable[:LOGGED_FINDINGS]]
        fields["problems_more"] = max(0, len(notable) - LOGGED_FINDINGS)
    codes = frozenset(f.code for f in notable)
    if result.outcome == Outcome.CANCELLED:
        log.info("run_finished", **fields)
        return warned or frozenset()
    if result.outcome == Outcome.OK:
        if warn and codes and codes != warned:
            log.warning("run_finished", **fields)
            return codes
        log.info("run_finished", **fields)
        return codes if codes else frozenset()
    if bug is not None:
        log.error("run_finished", exc_info=bug, **fields)
    elif warn:
        log.warning("run_finished", **fields)
    else:
        log.info("run_finished", **fields)
    return warned or frozenset()
