"""The validator plug-in protocol, its run context and the config fields every validator shares.

Validators see the rest of drwatch only through the small protocols here: the asset and configuration they run
for (:class:`AssetView`, :class:`ConfigView`, which the loaded configuration satisfies), a writer of the
verification ledger (:class:`LedgerWriter`, the store) and a read-only view of other validators' stored results
(:class:`ResultsView`, the snapshot). They import nothing from config loading, the store, the snapshot or the
engine (tests/test_import_graph.py; docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drwatch.core.durations import Duration
from drwatch.core.errors import ConfigProblem
from drwatch.core.model import CopyReport, Report, Result
from drwatch.storage.filesystem import HashPool

if TYPE_CHECKING:
    import structlog

    from drwatch.core.extras import Need
    from drwatch.core.sandbox import SandboxManager
    from drwatch.formats.sealsign import SealSignatureConfig
    from drwatch.storage.config import LocationConfig
    from drwatch.storage.s3 import S3Pool
    from drwatch.validators.copies.ledger import (
        CopySummary,
        LedgerBatch,
        LedgerEntry,
        LedgerRow,
        Totals,
        VerificationPolicy,
    )
    from drwatch.validators.groups import ConsistencyGroupConfig


# --- what validators see of the configuration (drwatch.config.model's Config and AssetConfig satisfy these) ---


class CopyView(Protocol):
    """One place of an asset (a copy, or production): a location and a prefix in it."""

    @property
    def location(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def label(self) -> str: ...


class ProductionView(CopyView, Protocol):
    @property
    def frozen(self) -> bool: ...  # production must stay equal to the seal (any change since it fails)


class AssetView(Protocol):
    """The asset a validator runs for."""

    @property
    def rpo(self) -> timedelta: ...
    @property
    def rto(self) -> timedelta | None: ...
    @property
    def production(self) -> ProductionView: ...
    @property
    def copies(self) -> Sequence[CopyView]: ...
    @property
    def manifest(self) -> str | None: ...
    @property
    def seal_signature(self) -> SealSignatureConfig | None: ...
    @property
    def validators(self) -> Sequence[ValidatorConfigBase]: ...
    @property
    def verification(self) -> VerificationPolicy | None: ...


class LimitsView(Protocol):
    @property
    def default_timeout(self) -> timedelta: ...
    @property
    def hash_workers(self) -> int: ...
    @property
    def sandbox_dir(self) -> str | None: ...


class ComplianceView(Protocol):
    @property
    def drill_max_age(self) -> timedelta | None: ...
    @property
    def provider_counts_as_media(self) -> bool: ...
    @property
    def clock_skew(self) -> timedelta: ...
    @property
    def allow_governance(self) -> bool: ...
    @property
    def min_retention_remaining(self) -> timedelta: ...


class ConfigView(Protocol):
    """The whole configuration, read-only: locations, the other assets, consistency groups, limits."""

    @property
    def base_dir(self) -> Path: ...
    def resolve_path(self, value: str) -> Path: ...
    @property
    def locations(self) -> Mapping[str, LocationConfig]: ...
    @property
    def assets(self) -> Mapping[str, AssetView]: ...
    @property
    def consistency_groups(self) -> Mapping[str, ConsistencyGroupConfig]: ...
    @property
    def limits(self) -> LimitsView: ...
    @property
    def compliance(self) -> ComplianceView: ...


# --- what validators see of the stored state (the engine provides these) ---


class LedgerWriter(Protocol):
    """The verification ledger of an asset's copies, kept in the store (drwatch.validators.copies.ledger)."""

    async def ledger_totals(self, asset: str, stale_before: float) -> dict[str, Totals]: ...
    async def ledger_queue(self, asset: str, limit: int, offset: int) -> list[LedgerRow]: ...
    async def ledger_page(self, asset: str, copy: str, after: str, limit: int) -> list[LedgerEntry]: ...
    async def ledger_write(self, batch: LedgerBatch) -> None: ...
    async def ledger_spent(self, asset: str, day: int) -> tuple[int, int]: ...
    async def ledger_summary(self, asset: str, copy: str, since: float, base: CopySummary) -> CopySummary: ...


class CopyFactView(Protocol):
    @property
    def report(self) -> CopyReport: ...
    @property
    def fresh_until(self) -> float: ...  # after this the fact is stale (the reporting validator's max age)


class ResultsView(Protocol):
    """What other validators proved, as stored (checks across assets judge these, never the validators)."""

    def last_result(self, asset: str, validator: str) -> Result | None: ...
    def copy_facts(self, asset: str) -> Mapping[str, CopyFactView]: ...
    def last_read(self, location: str) -> float | None: ...


class Schedule(BaseModel):
    """``{every: 1h, jitter: 5m}`` or ``{cron: "0 3 * * *", jitter: 10m}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: Duration | None = None
    cron: str | None = None
    jitter: Duration = timedelta(0)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from apscheduler.triggers.cron import CronTrigger  # only for cron schedules (start-up of `check`)

            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        if (self.every is None) == (self.cron is None):
            raise ValueError("set exactly one of 'every' (e.g. 1h) or 'cron' (e.g. '0 3 * * *')")
        if self.cron is not None and self.jitter.total_seconds() > self.interval_seconds():
            raise ValueError("'jitter' cannot exceed the period of the cron schedule")
        if self.every is not None:
            if self.every.total_seconds() < 1:
                raise ValueError("'every' must be at least 1s")
            if self.jitter > self.every:
                raise ValueError("'jitter' cannot exceed 'every'")
        return self

    def interval_seconds(self) -> float:
        """The nominal period (for cron: the gap between the next two fire times)."""
        if self.every is not None:
            return self.every.total_seconds()
        assert self.cron is not None
        from apscheduler.triggers.cron import CronTrigger

        trig = CronTrigger.from_crontab(self.cron, timezone="UTC")
        now = datetime.now(tz=trig.timezone)
        first = trig.get_next_fire_time(None, now)
        second = trig.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
        if first is None or second is None:
            return 86400.0
        return max(1.0, float((second - first).total_seconds()))


DEFAULT_SCHEDULE = Schedule(every=timedelta(hours=1), jitter=timedelta(minutes=5))


class ValidatorConfigBase(BaseModel):
    """Fields every validator has. Subclasses add ``kind: Literal[...]`` and their own options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reads_results: ClassVar[bool] = False  # judges other validators' stored results (runs after them)

    kind: str
    name: str | None = Field(default=None, description="label; defaults to the kind")
    schedule: Schedule = DEFAULT_SCHEDULE
    timeout: Duration | None = None
    max_age: Duration | None = None

    @field_validator("timeout", "max_age")
    @classmethod
    def _above_zero(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be above zero (leave it out for the default)")
        return value

    @property
    def label(self) -> str:
        return self.name or self.kind

    def locations(self, asset: AssetView) -> list[str]:
        """Locations this validator reads (for per-location concurrency limits)."""
        return sorted({asset.production.location, *(c.location for c in asset.copies)})

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        """Problems only visible with the whole config (e.g. references). Paths are relative."""
        return []

    def needs(self) -> list[Need]:
        """Optional extras this configuration imports when it runs (``check-config`` warns when absent)."""
        return []

    def judges(self, asset_name: str, cfg: ConfigView) -> list[tuple[str, str]]:
        """The validators (asset, label) whose results this one reads: they must have a result before it
        runs (``drwatch check`` runs them first, the daemon waits for them). None of them reads results."""
        return []

    def effective_timeout(self, cfg: ConfigView) -> float:
        return (self.timeout or cfg.limits.default_timeout).total_seconds()

    def effective_max_age(self, cfg: ConfigView) -> float:
        """Results older than this are stale: the rules they support become unknown."""
        if self.max_age is not None:
            return float(self.max_age.total_seconds())
        if cfg.compliance.drill_max_age is not None:
            return cfg.compliance.drill_max_age.total_seconds()
        sched = self.schedule
        return 2 * sched.interval_seconds() + sched.jitter.total_seconds() + self.effective_timeout(cfg)


@dataclass
class RunContext:
    """Everything a validator run may use. Resources join ``exit_stack`` the moment they exist."""

    run_id: str
    asset_name: str
    asset: AssetView
    config: ConfigView
    log: structlog.typing.FilteringBoundLogger
    deadline: float  # loop.time() by which the run must end
    exit_stack: AsyncExitStack
    hashes: HashPool
    sandboxes: SandboxManager
    clock: Callable[[], float] = time.time
    s3: S3Pool | None = None
    ledger: LedgerWriter | None = None  # the verification ledger in the store (the replica validator)
    results: Callable[[], ResultsView] | None = None  # other validators' stored results (checks across assets)
    extras: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        return max(0.0, self.deadline - asyncio.get_running_loop().time())


class Validator(Protocol):
    """A check on one asset. ``run`` returns a Report or raises DrillFailed / ValidatorError."""

    kind: ClassVar[str]

    async def run(self, ctx: RunContext) -> Report: ...
