"""Location configuration: a discriminated union on ``kind`` (one model per location kind)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drwatch.durations import Duration
from drwatch.pricing import PriceTable


class FilesystemLocationConfig(BaseModel):
    """A mounted path (local disk, NAS, removable media). Read-only to drwatch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["filesystem"]
    path: str
    site: str = ""
    region: str = ""
    provider: str = "local"
    media: str | None = None
    offline: bool = False
    max_concurrency: int | None = Field(default=None, ge=1, le=1000)
    pricing: PriceTable | None = None  # cost of the DR posture (drwatch_cost_monthly_dollars)


class S3LocationConfig(BaseModel):
    """An S3 bucket on AWS or any S3-compatible store. Read-only to drwatch except ``canary_prefix``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["s3"]
    bucket: str = Field(min_length=3, max_length=63)
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    provider: str = "aws"
    site: str = ""
    media: str | None = None
    profile: str | None = None
    access_key_id_env: str | None = None
    access_key_id_file: str | None = None
    secret_access_key_env: str | None = None
    secret_access_key_file: str | None = None
    session_token_env: str | None = None
    session_token_file: str | None = None
    connect_timeout: Duration = timedelta(seconds=10)
    read_timeout: Duration = timedelta(seconds=60)
    max_attempts: int = Field(default=5, ge=1, le=20)
    retry_mode: Literal["adaptive", "standard", "legacy"] = "adaptive"
    max_concurrency: int | None = Field(default=None, ge=1, le=1000)
    head_concurrency: int = Field(default=16, ge=1, le=256)
    canary_prefix: str | None = None
    offline: bool = False
    pricing: PriceTable | None = None  # cost of the DR posture (drwatch_cost_monthly_dollars)

    @model_validator(mode="after")
    def _credentials(self) -> S3LocationConfig:
        key = [self.access_key_id_env, self.access_key_id_file]
        secret = [self.secret_access_key_env, self.secret_access_key_file]
        if sum(v is not None for v in key) > 1 or sum(v is not None for v in secret) > 1:
            raise ValueError("set at most one of *_env / *_file for each credential")
        has_key = any(v is not None for v in key)
        has_secret = any(v is not None for v in secret)
        if has_key != has_secret:
            raise ValueError("access key id and secret access key must be given together")
        if has_key and self.profile is not None:
            raise ValueError("use either 'profile' or explicit access keys, not both")
        if self.canary_prefix is not None and not self.canary_prefix.strip("/"):
            raise ValueError("canary_prefix must be a non-empty prefix (e.g. drwatch-canary/)")
        return self


LocationConfig = Annotated[FilesystemLocationConfig | S3LocationConfig, Field(discriminator="kind")]
LOCATION_KINDS: frozenset[str] = frozenset({"filesystem", "s3"})
