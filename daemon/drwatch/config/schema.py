"""The configuration's models (the file's schema): store, http, limits, logging, locations, assets, consistency
groups, compliance, cluster, metrics. Loading and checking a file is :mod:`drwatch.config.model`.

Validators see an asset and the whole configuration through :class:`drwatch.validators.base.AssetView` and
:class:`drwatch.validators.base.ConfigView`, which these models satisfy.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drwatch.cluster.config import ClusterConfig
from drwatch.core.durations import Duration
from drwatch.formats.sealsign import SealSignatureConfig
from drwatch.storage.config import LocationConfig
from drwatch.validators.config import ValidatorConfig
from drwatch.validators.copies.ledger import VerificationPolicy
from drwatch.validators.groups import ConsistencyGroupConfig

DEFAULT_PORT = 10099
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"

# Counts are strict: YAML `yes`/`true` or `2.5` is a mistake, not a number.
Count = Annotated[int, Field(strict=True)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostgresStoreConfig(_Model):
    dsn_env: str | None = None
    dsn_file: str | None = None
    pool_max: Count = Field(default=5, ge=1, le=100)
    connect_timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _one_source(self) -> PostgresStoreConfig:
        if (self.dsn_env is None) == (self.dsn_file is None):
            raise ValueError("set exactly one of dsn_env (environment variable) or dsn_file (file path)")
        return self


class StoreConfig(_Model):
    sqlite: str | None = None
    postgres: PostgresStoreConfig | None = None
    retention: Duration = timedelta(days=90)

    @model_validator(mode="after")
    def _one_backend(self) -> StoreConfig:
        if self.sqlite is not None and self.postgres is not None:
            raise ValueError("choose one store backend: sqlite or postgres, not both")
        return self


class HttpConfig(_Model):
    listen: str = DEFAULT_LISTEN
    enabled: bool = True
    web_config_file: str | None = None  # TLS / basic auth, exporter-toolkit format (drwatch.http.webconfig)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen must be HOST:PORT (e.g. {DEFAULT_LISTEN}), got {value!r}")
        if not host:
            raise ValueError("listen needs a host (use 0.0.0.0 explicitly to listen on all interfaces)")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LimitsConfig(_Model):
    max_concurrent: Count = Field(default=4, ge=1, le=1000)
    per_location: Count = Field(default=2, ge=1, le=1000)
    default_timeout: Duration = timedelta(hours=1)
    drain_timeout: Duration = timedelta(seconds=30)
    hash_workers: Count = Field(default=2, ge=1, le=64)
    sandbox_dir: str | None = None
    pending_results: Count = Field(default=10_000, ge=1, le=1_000_000)  # memory queue while the store is away

    @field_validator("default_timeout")
    @classmethod
    def _timeout_above_zero(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be above zero")
        return value


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class CopyRef(_Model):
    location: str
    prefix: str = ""
    name: str | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        parts = [p for p in value.strip("/").split("/") if p]
        if any(p == ".." for p in parts):
            raise ValueError("prefix may not contain '..'")
        return "/".join(parts)

    @property
    def label(self) -> str:
        return self.name or self.location


class ProductionRef(CopyRef):
    # True: production must stay equal to the seal (model weights, a frozen dataset); any change since the
    # seal fails. False: production is live data, changes since the seal are expected and only counted.
    frozen: bool = False


class AssetConfig(_Model):
    rpo: Duration
    rto: Duration | None = None
    description: str = ""
    production: ProductionRef
    copies: list[CopyRef] = Field(default_factory=list)
    manifest: str | None = None
    # The public key the backup job's seals are signed with (drwatch seal --sign); see drwatch.formats.sealsign.
    seal_signature: SealSignatureConfig | None = None
    validators: list[ValidatorConfig] = Field(default_factory=list)
    verification: VerificationPolicy | None = None  # rolling read coverage under a budget (copies.ledger)

    # Copy and validator names (unique, valid, 'production' reserved) are checked on the raw data by
    # _reference_problems, which can point at the offending list entry.

    @field_validator("rpo")
    @classmethod
    def _rpo(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("rpo must be greater than zero")
        return value


class ComplianceConfig(_Model):
    copies: Count = Field(default=3, ge=0)
    media: Count = Field(default=2, ge=0)
    offsite: Count = Field(default=1, ge=0)
    immutable: Count = Field(default=1, ge=0)
    window: Duration = timedelta(days=7)
    drill_max_age: Duration | None = None
    offline_attestation_max_age: Duration = timedelta(days=30)
    allow_governance: bool = False
    min_retention_remaining: Duration = timedelta(days=7)
    require_independent_credentials: bool = False
    provider_counts_as_media: bool = False
    # How far ahead of this host's clock a modification or seal time may lie and still be believed.
    clock_skew: Duration = timedelta(minutes=5)


# Time before the first byte of an object in an archive storage class can be read (AWS S3 docs, "Understanding
# archive retrieval options"): Glacier Flexible Retrieval standard retrievals finish within 3-5 hours, Deep Archive
# standard within 12 hours (bulk: 5-12 h and 48 h); Glacier Instant Retrieval reads in milliseconds.
DEFAULT_RETRIEVAL: dict[str, timedelta] = {
    "GLACIER": timedelta(hours=5), "DEEP_ARCHIVE": timedelta(hours=12), "GLACIER_IR": timedelta(0),
}


class RestoreTimeConfig(_Model):
    """The restore-time model (drwatch.state.rto, docs/restore-time.md)."""

    # Storage class -> retrieval latency, merged over DEFAULT_RETRIEVAL (a class not named reads at once).
    retrieval: dict[str, Duration] = Field(default_factory=dict)
    samples: Count = Field(default=20, ge=1, le=64)  # newest throughput samples per location averaged
    sample_max_age: Duration = timedelta(days=30)  # older samples are not used
    tolerance: float = Field(default=0.5, gt=0)  # |projected - measured| / measured a drill may differ by
    error_drills: Count = Field(default=3, ge=1, le=64)  # consecutive drills beyond it: rto_projection_unreliable

    def retrieval_seconds(self, storage_class: str) -> float:
        table = {**DEFAULT_RETRIEVAL, **self.retrieval}
        latency = table.get(storage_class.upper())
        return latency.total_seconds() if latency is not None else 0.0


class ReportsConfig(_Model):
    """``drwatch report`` (docs/reports.md): an Ed25519 private key (PEM, as ``drwatch seal-keygen`` writes) signs
    every report; ``drwatch verify-report`` checks the signature with its public half."""

    signing_key_file: str | None = None


class MetricsConfig(_Model):
    """What /metrics exports beyond the series the shipped alerts and dashboard need (docs/metrics.md)."""

    # drwatch_validator_duration_seconds with every bucket (16 per validator); off: only le="+Inf", _sum, _count.
    duration_histograms: bool = False


class Config(_Model):
    store: StoreConfig = Field(default_factory=StoreConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    locations: dict[str, LocationConfig] = Field(default_factory=dict)
    assets: dict[str, AssetConfig] = Field(default_factory=dict)
    consistency_groups: dict[str, ConsistencyGroupConfig] = Field(default_factory=dict)
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)  # several nodes, one store (drwatch.cluster)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)  # opt-in series (the series budget)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)  # drwatch report: signing
    restore_time: RestoreTimeConfig = Field(default_factory=RestoreTimeConfig)  # projected restore times

    # Not part of the file: where it came from (relative paths resolve against its directory).
    source: Annotated[str, Field(exclude=True)] = ""
    digest: Annotated[str, Field(exclude=True)] = ""

    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent if self.source else Path.cwd()

    def resolve_path(self, value: str) -> Path:
        path = Path(os.path.expandvars(os.path.expanduser(value)))
        return path if path.is_absolute() else self.base_dir / path

    def sqlite_path(self) -> Path:
        if self.store.sqlite is not None:
            return self.resolve_path(self.store.sqlite)
        state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        if state_dir:
            return Path(state_dir) / "drwatch.sqlite"
        return self.base_dir / "drwatch.sqlite"

    def iter_validators(self) -> list[tuple[str, ValidatorConfig]]:
        return [(a, v) for a, asset in self.assets.items() for v in asset.validators]


def reference_data(cfg: Config) -> dict[str, Any]:
    """The config as data (for ``check-config --output json`` and debugging); secrets are references only."""
    return cfg.model_dump(mode="json")
