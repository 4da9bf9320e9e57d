"""Validator ``postgres_replica_lag``: how far a streaming PostgreSQL standby is behind its primary.

Measured on the standby alone (read-only session): lag = ``now() - pg_last_xact_replay_timestamp()``, the
age of the last transaction it replayed. On an idle primary that age grows although nothing is missing,
so when the WAL receiver is streaming and everything received has been replayed
(``pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()``) the lag is 0: there is nothing to replay. The
shortcut needs the receiver's status (visible to superusers and ``pg_monitor``/``pg_read_all_stats``);
without it, or when the receiver is not streaming (disconnected, or replaying from an archive), the lag is
the age of the last replayed transaction and a finding says why. A streaming standby that is behind at the
first sample is sampled twice more (0.25 s apart): WAL without transactions (standby snapshots,
checkpoints) keeps an idle pair apart for milliseconds only.

Outcomes: ``failed`` when the lag exceeds ``max_lag`` (default: the asset's RPO); ``error`` when the
server cannot be reached, has replayed nothing yet, or is not a standby (``not_a_standby``: a primary or
a promoted replica - the DSN or the topology needs a person; that is not a bad backup). A replica is not
a backup (it replays deletions too), so no recovery point is reported: it never masks stale dumps in the
asset's RPO. The primary's commit timestamps are compared with the standby's clock: keep both in sync.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import model_validator

from drwatch.core.durations import Duration, format_duration
from drwatch.core.errors import ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.core.secrets import redact
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.plugin import Family, Latest, Plugin, Sample
from drwatch.validators.postgres import pgtools

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView

_STATE_SQL = """
SELECT pg_is_in_recovery() AS standby,
       pg_last_wal_receive_lsn() AS received,
       pg_last_wal_replay_lsn() AS replayed,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) AS pending_bytes,
       pg_last_xact_replay_timestamp() AS replayed_at,
       now() AS now,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS paused,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver,
       (SELECT count(*) FROM pg_stat_wal_receiver) AS receivers
"""
QUERY_LIMIT = 30.0
RESAMPLES = 2
RESAMPLE_PAUSE = 0.25


class PostgresReplicaLagConfig(ValidatorConfigBase):
    kind: Literal["postgres_replica_lag"] = "postgres_replica_lag"
    dsn_env: str | None = None  # the standby's DSN (never inline)
    dsn_file: str | None = None
    max_lag: Duration | None = None  # default: the asset's RPO

    @model_validator(mode="after")
    def _dsn(self) -> PostgresReplicaLagConfig:
        if (self.dsn_env is None) == (self.dsn_file is None):
            raise ValueError("set exactly one of dsn_env (environment variable) or dsn_file (file path)")
        return self

    def locations(self, asset: AssetView) -> list[str]:
        return []  # reads no location: only the standby


class PostgresReplicaLagValidator:
    kind: ClassVar[str] = "postgres_replica_lag"

    def __init__(self, cfg: PostgresReplicaLagConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        ref = pgtools.DsnRef(dsn_env=self.cfg.dsn_env, dsn_file=self.cfg.dsn_file)
        params = await asyncio.to_thread(ref.params, "dsn", ctx.config)
        conn = await pgtools.connect(params, code="replica_unavailable", what="replica", read_only=True,
                                     statement_timeout=QUERY_LIMIT, connect_limit=10.0)
        ctx.exit_stack.push_async_callback(pgtools.close_connection, conn)
        try:
            row = await conn.fetchrow(_STATE_SQL, timeout=QUERY_LIMIT)
            # WAL without transactions (standby snapshots, checkpoints) is replayed within milliseconds of being
            # received: a standby behind by such a moment is sampled again before its lag counts.
            for _ in range(RESAMPLES):
                if row["receiver"] != "streaming" or row["received"] == row["replayed"]:
                    break
                await asyncio.sleep(RESAMPLE_PAUSE)
                row = await conn.fetchrow(_STATE_SQL, timeout=QUERY_LIMIT)
        except pgtools.CONNECT_ERRORS as exc:
            raise ValidatorError("replica_unavailable", redact(f"replica: {type(exc).__name__}: {exc}")) from None
        if not row["standby"]:
            raise ValidatorError("not_a_standby", "the server is not in recovery (a primary, or a promoted replica): "
                                 "there is no replication lag to measure; check the DSN and the topology")
        max_lag = (self.cfg.max_lag or ctx.asset.rpo).total_seconds()
        findings: list[Finding] = []
        receiver = row["receiver"]
        caught_up = row["received"] is not None and row["received"] == row["replayed"]
        figures = {"replay_pending_bytes": float(row["pending_bytes"] or 0)}
        if receiver == "streaming" and caught_up:
            lag = 0.0  # everything received is replayed: an idle primary, not a lagging standby
        else:
            if receiver is None and row["receivers"]:
                findings.append(Finding(Severity.INFO, "receiver_status_hidden",
                                        "the WAL receiver's status is not visible to this role (grant pg_monitor): "
                                        "lag is the age of the last replayed transaction"))
            elif receiver != "streaming":
                findings.append(Finding(Severity.WARNING, "not_streaming",
                                        f"WAL receiver is {receiver or 'not running'}: the standby is disconnected "
                                        "or replays from an archive; lag is the age of the last replayed transaction"))
            if row["replayed_at"] is None:
                raise ValidatorError("lag_unknown", "the standby has not replayed any transaction yet")
            lag = max(0.0, (row["now"] - row["replayed_at"]).total_seconds())
        if row["paused"]:
            findings.append(Finding(Severity.WARNING, "replay_paused", "WAL replay is paused on the standby"))
        figures["lag_seconds"] = lag
        if lag > max_lag:
            findings.append(Finding(Severity.CRITICAL, "replica_lag_exceeded",
                                    f"the standby is {format_duration(lag)} behind (max {format_duration(max_lag)})"))
            return Report(Outcome.FAILED, tuple(findings), figures)
        return Report(Outcome.OK, tuple(findings), figures)


LAG = Family("drwatch_replica_lag_seconds", "Replication lag of the asset's standby at the latest check (the largest "
             "when several are checked).", ("asset",))


def project(latest: Sequence[Latest]) -> Iterator[Sample]:
    """The largest lag among the asset's standbys (one series per asset)."""
    lags: dict[str, float] = {}
    for asset, _vcfg, result in latest:
        if "lag_seconds" in result.figures:
            lags[asset] = max(lags.get(asset, 0.0), result.figures["lag_seconds"])
    for asset, lag in lags.items():
        yield LAG.name, (asset,), lag


PLUGIN = Plugin(PostgresReplicaLagConfig, PostgresReplicaLagValidator, (LAG,), project)
