"""The store protocol and the state it hands back to build a snapshot.

Each result is written in one transaction together with the running counters it changes (runs per
outcome, duration histogram, last run/success/failure times), so counters survive restarts and history
pruning, and a crash never leaves a result without its counters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from drwatch.core.errors import ValidatorError
from drwatch.core.model import Ack, Attestation, CopyReport, Finding, Outcome, Result, bucket_for
from drwatch.store.rates import RateSample, SampleKey, from_rows
from drwatch.store.verify import counters, summaries
from drwatch.validators.base import LedgerWriter
from drwatch.validators.copies.ledger import CopySummary

if TYPE_CHECKING:
    from drwatch.store.chain import ChainCheck
    from drwatch.store.history import HistoryRows

SCHEMA_VERSION = 6


class StoreSchemaError(ValidatorError):
    """The store was written by a newer drwatch: its schema version is ahead of this code."""

    def __init__(self, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            "store_schema_newer",
            f"store schema version {found} is newer than this drwatch supports ({supported}): "
            "upgrade drwatch, or point it at another store",
        )


def newer(stored: float | None, new: float | None, now: float) -> float | None:
    """A last-run/success/failure stamp after recording ``new`` at wall-clock ``now``: the later of the two
    (a late-arriving older result moves nothing back), except that a stored stamp lying in the future (the
    wall clock was stepped back since it was written) gives way to the new one, so staleness and evidence
    age are measured from real runs again instead of waiting out the size of the step. The stores' upserts
    do the same in SQL (``stamp_sql``)."""
    if new is None:
        return stored
    if stored is None or stored > now:
        return new
    return max(stored, new)


def stamps(result: Result) -> tuple[float | None, float | None, float | None]:
    """The (last run, last success, last failure) stamps a result sets; None leaves a stamp as it is.

    A cancelled run (shutdown, drain timeout, lost cluster fence) did not finish: it is not a run for
    staleness or for scheduling, so a validator whose runs keep being cancelled goes stale and runs soon
    after the next start instead of a whole period later."""
    if result.outcome == Outcome.CANCELLED:
        return None, None, None
    return (result.finished_at, result.finished_at if result.outcome == Outcome.OK else None,
            result.finished_at if result.outcome == Outcome.FAILED else None)


def stamp_sql(column: str, now: str, greatest: str) -> str:
    """``newer`` as an upsert assignment (``now``: the parameter; ``greatest``: MAX or GREATEST)."""
    return (f"{column} = CASE WHEN excluded.{column} IS NULL THEN validator_state.{column} "
            f"WHEN validator_state.{column} IS NULL OR validator_state.{column} > {now} THEN excluded.{column} "
            f"ELSE {greatest}(validator_state.{column}, excluded.{column}) END")


@dataclass(frozen=True)
class ValidatorStats:
    asset: str
    validator: str
    last_run_at: float | None = None
    last_success_at: float | None = None
    last_failure_at: float | None = None
    duration_sum: float = 0.0
    duration_count: int = 0
    runs: dict[str, int] = field(default_factory=dict)  # outcome -> count
    buckets: dict[str, int] = field(default_factory=dict)  # bucket label -> count (non-cumulative)
    last_result: Result | None = None

    def with_result(self, result: Result, now: float) -> ValidatorStats:
        """The stats after ``result`` recorded at wall-clock ``now`` (mirrors the store's transaction)."""
        run, success, failure = stamps(result)
        runs = dict(self.runs)
        runs[result.outcome.value] = runs.get(result.outcome.value, 0) + 1
        buckets = dict(self.buckets)
        label = bucket_for(result.duration)
        buckets[label] = buckets.get(label, 0) + 1
        return ValidatorStats(
            asset=self.asset,
            validator=self.validator,
            last_run_at=newer(self.last_run_at, run, now),
            last_success_at=newer(self.last_success_at, success, now),
            last_failure_at=newer(self.last_failure_at, failure, now),
            duration_sum=self.duration_sum + result.duration,
            duration_count=self.duration_count + 1,
            runs=runs,
            buckets=buckets,
            last_result=result,
        )


@dataclass(frozen=True)
class StoredState:
    validators: dict[tuple[str, str], ValidatorStats] = field(default_factory=dict)
    attestations: dict[tuple[str, str], Attestation] = field(default_factory=dict)
    copy_bytes: dict[tuple[str, str], int] = field(default_factory=dict)  # (asset, copy) -> bytes verified
    # Verification economy (drwatch.validators.copies.ledger): per (asset, copy) the ledger summary of its latest
    # run, and the
    # persisted request/egress counters per (location, name) (name: "requests:<operation>" or "egress_bytes").
    verify: dict[tuple[str, str], CopySummary] = field(default_factory=dict)
    verify_counters: dict[tuple[str, str], int] = field(default_factory=dict)
    acks: dict[tuple[str, str], Ack] = field(default_factory=dict)  # (asset, validator) -> the newest ack
    rates: dict[SampleKey, tuple[RateSample, ...]] = field(default_factory=dict)  # restore-time inputs (rates.py)


class Store(LedgerWriter, Protocol):
    """Results, attestations, acks and their counters; and the verification ledger, which the engine hands to
    the replica validator as its :class:`drwatch.validators.base.LedgerWriter`."""

    backend: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def record(self, result: Result, config_hash: str = "") -> None: ...
    async def load_state(self) -> StoredState: ...
    async def add_attestation(self, attestation: Attestation) -> None: ...
    async def add_ack(self, ack: Ack) -> None: ...
    async def history(self, asset: str, validator: str | None = None, limit: int = 50) -> list[Result]: ...
    async def prune(self, before: float) -> int: ...
    async def ping(self) -> None: ...

    # --- reports and tamper evidence (drwatch.reporting; statements in store/history.py, store/chain.py) ---
    async def history_rows(self, since: float, until: float) -> HistoryRows: ...
    async def chain_check(self) -> ChainCheck: ...

    async def revision(self) -> tuple[int, int]:
        """(results ever recorded, attestations and acks ever added): changes exactly when ``load_state`` would
        return something new, whoever wrote it (``drwatch check``/``attest`` share the daemon's store);
        pruning and retried writes leave it unchanged."""
        ...


REVISION_QUERY = (
    "SELECT (SELECT COALESCE(SUM(duration_count), 0) FROM validator_state), "
    "(SELECT COUNT(*) FROM attestations) + (SELECT COUNT(*) FROM acks)"
)
# Schema 4: acknowledgements (drwatch ack), append-only; the newest per (asset, validator) counts.
ACKS_TABLE = """CREATE TABLE acks (
    id {id} PRIMARY KEY{auto}, asset TEXT NOT NULL, validator TEXT NOT NULL,
    acked_by TEXT NOT NULL, reason TEXT NOT NULL, created_at {real} NOT NULL)"""


def result_params(result: Result) -> tuple[Any, ...]:
    return (
        result.run_id,
        result.asset,
        result.validator,
        result.kind,
        result.outcome.value,
        result.started_at,
        result.finished_at,
        result.recovery_point,
        json.dumps(result.figures, sort_keys=True),
        json.dumps([f.to_dict() for f in result.findings]),
        json.dumps([c.to_dict() for c in result.copies]),
    )


def result_from_row(row: Any) -> Result:
    return Result(
        run_id=row[0],
        asset=row[1],
        validator=row[2],
        kind=row[3],
        outcome=Outcome(row[4]),
        started_at=float(row[5]),
        finished_at=float(row[6]),
        recovery_point=None if row[7] is None else float(row[7]),
        figures={str(k): float(v) for k, v in json.loads(row[8]).items()},
        findings=tuple(Finding.from_dict(d) for d in json.loads(row[9])),
        copies=tuple(CopyReport.from_dict(d) for d in json.loads(row[10])),
    )


def copy_byte_increments(result: Result) -> list[tuple[str, str, int]]:
    """(asset, copy, bytes) for each copy of a result that verified bytes."""
    return [(result.asset, c.copy, int(c.bytes_verified)) for c in result.copies if c.bytes_verified > 0]


def assemble_state(
    state_rows: list[Any], count_rows: list[Any], bucket_rows: list[Any], result_rows: list[Any],
    attestation_rows: list[Any], copy_rows: list[Any] | None = None,
    summary_rows: list[Any] | None = None, counter_rows: list[Any] | None = None,
    ack_rows: list[Any] | None = None, rate_rows: list[Any] | None = None,
) -> StoredState:
    """Build StoredState from rows shaped the same way by both backends."""
    runs: dict[tuple[str, str], dict[str, int]] = {}
    for asset, validator, outcome, count in count_rows:
        runs.setdefault((asset, validator), {})[outcome] = int(count)
    buckets: dict[tuple[str, str], dict[str, int]] = {}
    for asset, validator, le, count in bucket_rows:
        buckets.setdefault((asset, validator), {})[le] = int(count)
    results = {(r[1], r[2]): result_from_row(r) for r in result_rows}
    validators = {}
    for asset, validator, last_run, last_success, last_failure, dsum, dcount in state_rows:
        key = (asset, validator)
        validators[key] = ValidatorStats(
            asset=asset,
            validator=validator,
            last_run_at=last_run,
            last_success_at=last_success,
            last_failure_at=last_failure,
            duration_sum=float(dsum),
            duration_count=int(dcount),
            runs=runs.get(key, {}),
            buckets=buckets.get(key, {}),
            last_result=results.get(key),
        )
    attestations = {
        (a, c): Attestation(a, c, note, float(created), None if rp is None else float(rp))
        for a, c, note, created, rp in attestation_rows
    }
    copy_bytes = {(a, c): int(n) for a, c, n in (copy_rows or [])}
    acks = {(a, v): Ack(a, v, by, reason, float(created)) for a, v, by, reason, created in (ack_rows or [])}
    return StoredState(validators, attestations, copy_bytes, summaries(summary_rows or []),
                       counters(counter_rows or []), acks, from_rows(rate_rows or []))
