"""The ``vector_restore`` validator's configuration: the drill's options and its backends (``pgvector``: a
PostgreSQL dump or a Parquet export restored into a sandbox; ``pinecone``: a backup restored into a temporary
index). The drills are :mod:`drwatch.validators.vector.pgvector` and :mod:`drwatch.validators.vector.pinecone`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drwatch.core.durations import Duration
from drwatch.core.errors import ConfigProblem
from drwatch.core.extras import NUMPY, PARQUET_VECTORS, PINECONE_EXACT, Need
from drwatch.validators.base import ValidatorConfigBase
from drwatch.validators.postgres import pgdump, pgtools
from drwatch.validators.postgres.drill import EphemeralSandbox, SandboxConfig
from drwatch.validators.vector.vectormath import Metric

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IndexConfig(_Model):
    """The ANN index built when the restore has none for the metric (a Parquet export never has one)."""

    method: Literal["hnsw", "ivfflat"] = "hnsw"
    m: int = Field(default=16, ge=2, le=100)
    ef_construction: int = Field(default=64, ge=4, le=1000)
    lists: int = Field(default=100, ge=1, le=32768)  # ivfflat


class ParquetColumns(_Model):
    id_column: str = "id"
    vector_column: str = "vector"


def _ident(value: str) -> str:
    if not value or "\x00" in value or len(value) > 63:
        raise ValueError("a column name: 1 to 63 characters, no NUL")
    return value


class PgvectorBackend(_Model):
    type: Literal["pgvector"]
    production: pgtools.DsnRef
    table: str
    id_column: str = "id"
    vector_column: str = "embedding"
    changed_at_column: str | None = None
    location: str
    prefix: pgdump.DumpPrefix = ""
    pattern: pgdump.DumpPattern = "*"
    parquet: ParquetColumns = Field(default_factory=ParquetColumns)
    sandbox: SandboxConfig = Field(default_factory=lambda: EphemeralSandbox(mode="ephemeral"))
    index: IndexConfig = Field(default_factory=IndexConfig)
    ef_search: int | None = Field(default=None, ge=1, le=1000)  # hnsw.ef_search (default: max(40, k))
    probes: int | None = Field(default=None, ge=1, le=32768)  # ivfflat.probes
    jobs: int = Field(default=2, ge=1, le=64)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        pgtools.split_table(value)
        return value

    @field_validator("id_column", "vector_column", "changed_at_column")
    @classmethod
    def _column(cls, value: str | None) -> str | None:
        return None if value is None else _ident(value)

    def cross_check(self, cfg: ConfigView) -> list[ConfigProblem]:
        if self.location not in cfg.locations:
            return [ConfigProblem("backend.location", f"unknown location {self.location!r} "
                                  f"(known: {', '.join(sorted(cfg.locations)) or 'none'})")]
        return []


class PineconeParquetExport(_Model):
    """``backend.parquet`` of the Pinecone backend: the backup is a Parquet export (the newest file matching
    ``pattern`` under ``location``/``prefix``: a filesystem or S3 location), upserted into a temporary index instead
    of restoring a backup of the backups API."""

    location: str
    prefix: pgdump.DumpPrefix = ""
    pattern: pgdump.DumpPattern = "*.parquet"
    id_column: str = "id"
    values_column: str = "values"
    metadata_column: str | None = "metadata"  # optional in the file; JSON text or a struct


class PineconeBackend(BaseModel):
    """``backend: {type: pinecone, index: NAME, api_key_env: VAR, ...}`` of ``vector_restore``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["pinecone"]
    index: str = Field(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,43}[a-z0-9])?$", description="production index")
    namespace: str = Field(default="", description="namespace queried and sampled ('' = default)")
    api_key_env: str | None = None
    api_key_file: str | None = None
    control_url: str = Field(default="https://api.pinecone.io", description="control plane base URL")
    request_timeout: Duration = timedelta(seconds=30)
    max_attempts: int = Field(default=4, ge=1, le=10, description="tries per call (429/5xx/network)")
    poll_interval: Duration = timedelta(seconds=5)
    exact_scan_max_vectors: int = Field(default=10_000, ge=0, le=1_000_000,
                                        description="read every vector (exact top-k) up to this many")
    max_records: int = Field(default=1_000_000, ge=1, description="cost guard: largest backup drilled")
    max_temporary_indexes: int = Field(default=1, ge=1, le=100,
                                       description="cost guard: drwatch-drill-* indexes allowed at once")
    max_drills_per_day: int = Field(default=4, ge=1, le=1000,
                                    description="cost guard: restores into drwatch-drill-* per 24 h (project)")
    parquet: PineconeParquetExport | None = None  # the backup is a Parquet export, not a backup of the backups API

    @field_validator("control_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must be an http(s) URL, e.g. https://api.pinecone.io")
        return value.rstrip("/")

    @field_validator("poll_interval", "request_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be greater than zero")
        return value

    @model_validator(mode="after")
    def _key(self) -> PineconeBackend:
        if (self.api_key_env is None) == (self.api_key_file is None):
            raise ValueError("set exactly one of 'api_key_env' or 'api_key_file' (the Pinecone API key)")
        return self


VectorBackend = Annotated[PgvectorBackend | PineconeBackend, Field(discriminator="type")]


class VectorRestoreConfig(ValidatorConfigBase):
    kind: Literal["vector_restore"] = "vector_restore"
    backend: VectorBackend
    k: int = Field(default=10, ge=1, le=1000, description="neighbours per query")
    queries: int = Field(default=20, ge=1, le=10_000, description="query vectors drawn from stored vectors")
    query_vectors: str | None = Field(default=None, min_length=1,
                                      description="a JSON Lines or .npy file of query vectors used instead of "
                                                  "drawn ones (relative to the config file)")
    min_recall: float = Field(default=0.9, ge=0.0, le=1.0, description="least recall@k of the restored ANN index")
    min_exact_match: float = Field(default=1.0, ge=0.0, le=1.0,
                                   description="least share of queries whose exact top-k equal production's")
    sample: int = Field(default=1000, ge=0, le=1_000_000, description="vectors compared by checksum")
    metric: Metric = "cosine"
    seed: int = Field(default=0, ge=0, description="samples and query vectors are drawn deterministically")
    max_missing_ratio: float = Field(default=0.001, ge=0.0, le=1.0,
                                     description="share of production's ids the restore may lack")
    max_mismatch_ratio: float = Field(default=0.001, ge=0.0, le=1.0,
                                      description="share of sampled vectors whose checksum may differ")
    distance_tolerance: float = Field(default=1e-6, ge=0.0, le=1.0,
                                      description="distances closer than this are ties")

    def locations(self, asset: AssetView) -> list[str]:
        if isinstance(self.backend, PgvectorBackend):
            return [self.backend.location]
        if self.backend.parquet is not None:
            return [self.backend.parquet.location]
        return super().locations(asset)

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        problems = self.backend.cross_check(cfg) if isinstance(self.backend, PgvectorBackend) else []
        export = getattr(self.backend, "parquet", None)
        if isinstance(export, PineconeParquetExport) and export.location not in cfg.locations:
            problems.append(ConfigProblem("backend.parquet.location", f"unknown location {export.location!r} "
                                          f"(known: {', '.join(sorted(cfg.locations)) or 'none'})"))
        if self.query_vectors is not None and not cfg.resolve_path(self.query_vectors).is_file():
            problems.append(ConfigProblem("query_vectors", f"no such file: {cfg.resolve_path(self.query_vectors)}"))
        return problems

    def needs(self) -> list[Need]:
        out = []
        if self.query_vectors is not None and self.query_vectors.lower().endswith(".npy"):
            out.append(Need("query_vectors", NUMPY, "extra_missing", "a .npy matrix of query vectors"))
        if isinstance(self.backend, PgvectorBackend):
            if self.backend.pattern.lower().endswith(".parquet"):
                out.append(Need("backend.pattern", PARQUET_VECTORS, "extra_missing", "Parquet recovery points"))
        else:
            if self.backend.parquet is not None:
                out.append(Need("backend.parquet", PARQUET_VECTORS, "extra_missing", "a Pinecone Parquet export"))
            if self.backend.exact_scan_max_vectors > 0:
                out.append(Need("backend.exact_scan_max_vectors", PINECONE_EXACT, "extra_missing",
                                "the exact top-k of namespaces up to this size"))
        return out
