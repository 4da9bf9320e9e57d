"""The ``redis_restore`` validator's configuration: where the snapshots are, production's URL (from a secret), the
tolerance and the sample size."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drwatch.core.errors import ConfigError, ConfigProblem, ValidatorError
from drwatch.core.extras import REDIS, Need
from drwatch.core.secrets import read_secret, register_dsn_password
from drwatch.validators.base import ValidatorConfigBase
from drwatch.validators.postgres import pgdump

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView


class RedisRef(BaseModel):
    """Where production's URL is: ``url_env`` (an environment variable) or ``url_file``; never inline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url_env: str | None = None
    url_file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> RedisRef:
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError("set exactly one of url_env (environment variable) or url_file (file path)")
        return self

    def url(self, cfg: ConfigView) -> str:
        try:
            url = read_secret("production", env=self.url_env, file=self.url_file, base_dir=cfg.base_dir).strip()
        except ConfigError as exc:
            raise ValidatorError("secret_unavailable", "; ".join(str(p) for p in exc.problems)) from None
        register_dsn_password(url)
        if not re.match(r"(rediss?|unix)://", url):
            raise ValidatorError("url_invalid", "production: a redis://, rediss:// or unix:// URL is expected")
        return url


class RedisRestoreConfig(ValidatorConfigBase):
    kind: Literal["redis_restore"] = "redis_restore"
    location: str
    prefix: pgdump.DumpPrefix = ""
    pattern: pgdump.DumpPattern = "*"
    production: RedisRef | None = None
    tolerance: float | str = 0.05  # a fraction of production's keys, or "N keys"
    sample: int = Field(default=200, ge=0, le=100_000)  # production keys sampled (0: counts only)
    allow_empty: bool = False  # a snapshot holding no key passes (without production)
    databases: int = Field(default=16, ge=1, le=100_000)  # the sandbox server's (production's ``databases``)
    bin_dir: str | None = None  # redis-server, redis-check-rdb, redis-check-aof (default: PATH)

    @field_validator("tolerance", mode="before")
    @classmethod
    def _tolerance(cls, value: Any) -> float | str:
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*keys?\s*", value):
            return value.strip()
        raise ValueError("tolerance is a fraction of production's keys (0.05 = 5%) or a key count ('100 keys')")

    def allowed(self, reference: int) -> float:
        """Keys a count may differ from ``reference`` by."""
        if isinstance(self.tolerance, str):
            return float(re.sub(r"\D", "", self.tolerance))
        return self.tolerance * reference

    def locations(self, asset: AssetView) -> list[str]:
        return [self.location]

    def needs(self) -> list[Need]:
        return [Need("", REDIS, "extra_missing", "the restored server and production are read with redis-py")]

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        if self.location not in cfg.locations:
            return [ConfigProblem("location", f"unknown location {self.location!r} "
                                              f"(known: {', '.join(sorted(cfg.locations)) or 'none'})")]
        return []
