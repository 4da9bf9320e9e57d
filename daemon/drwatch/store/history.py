"""What a report reads from the store: the results of a period, the state just before it, every attestation
and acknowledgement, and the chain head (statements shared by both backends; ``?`` placeholders)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The results table's columns as both backends write and read them (store/base.py result_params, result_from_row).
RESULT_COLUMNS = (
    "run_id, asset, validator, kind, outcome, started_at, finished_at, recovery_point, figures, findings, copies"
)

PERIOD = (f"SELECT id, {RESULT_COLUMNS}, config_hash, digest FROM results "
          "WHERE finished_at >= ? AND finished_at <= ? ORDER BY id")
# The newest stored result of each validator before the period (the state the period starts from).
BEFORE = (f"SELECT id, {RESULT_COLUMNS}, config_hash, digest FROM results WHERE id IN "
          "(SELECT MAX(id) FROM results WHERE finished_at < ? GROUP BY asset, validator)")
# The last success and failure of each validator before the period (restore_errors looks back a window).
STAMPS = ("SELECT asset, validator, outcome, MAX(finished_at) FROM results WHERE finished_at < ? "
          "AND outcome IN ('ok', 'failed') GROUP BY asset, validator, outcome")
ATTESTATIONS = ("SELECT asset, copy, note, created_at, recovery_point FROM attestations WHERE created_at <= ? "
                "ORDER BY id")
ACKS = "SELECT asset, validator, acked_by, reason, created_at FROM acks WHERE created_at <= ? ORDER BY id"


@dataclass(frozen=True)
class HistoryRows:
    """Rows as both backends return them (tuples); ``period`` and ``before`` rows are
    ``(id, *RESULT_COLUMNS, config_hash, digest)``."""

    period: list[tuple[Any, ...]] = field(default_factory=list)
    before: list[tuple[Any, ...]] = field(default_factory=list)
    stamps: list[tuple[Any, ...]] = field(default_factory=list)
    attestations: list[tuple[Any, ...]] = field(default_factory=list)
    acks: list[tuple[Any, ...]] = field(default_factory=list)
    head: tuple[int, str] = (0, "0" * 64)
