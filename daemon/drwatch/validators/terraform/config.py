"""The ``terraform_state`` validator's configuration."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from drwatch.core.durations import Duration
from drwatch.core.errors import ConfigProblem
from drwatch.storage.config import S3LocationConfig
from drwatch.validators.base import ValidatorConfigBase

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView


class TerraformStateConfig(ValidatorConfigBase):
    kind: Literal["terraform_state"] = "terraform_state"
    key: str = "terraform.tfstate"  # the state object (file) under the production prefix
    within: Duration | None = None  # the state must be younger than this (default: the asset's RPO)
    object_lock: bool = False  # the S3 bucket must have Object Lock enabled
    dynamodb_table: str | None = None  # the S3 backend's lock table (DescribeTable, the MD5 digest item)
    dynamodb_endpoint_url: str | None = None  # default: the location's endpoint (AWS: the regional endpoint)
    use_lockfile: bool = False  # S3 native locking (<key>.tflock)
    lock_stale_after: Duration = timedelta(hours=6)  # a lock file older than this is a lock left behind
    region_policy: Literal["warning", "failure"] = "warning"  # state_in_rebuilt_*, no_copy_outside_region
    state_account: str | None = Field(default=None, pattern=r"^\d{12}$")  # the bucket's account (default: STS)
    sts_endpoint_url: str | None = None  # default: the location's endpoint (AWS: the regional STS endpoint)

    @field_validator("within", "lock_stale_after")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be above zero")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not value.strip("/") or ".." in value.split("/"):
            raise ValueError("must name the state object under the production prefix")
        return value.strip("/")

    def locations(self, asset: AssetView) -> list[str]:
        return sorted({asset.production.location, *(c.location for c in asset.copies)})

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        loc = cfg.locations.get(asset.production.location)
        if not isinstance(loc, S3LocationConfig):
            extra = [n for n, v in (("dynamodb_table", self.dynamodb_table), ("use_lockfile", self.use_lockfile),
                                    ("object_lock", self.object_lock), ("state_account", self.state_account),
                                    ("sts_endpoint_url", self.sts_endpoint_url)) if v]
            if extra:
                return [ConfigProblem("", f"{', '.join(extra)} apply to an S3 backend only (production is a "
                                          "filesystem location)")]
        elif self.dynamodb_table and self.use_lockfile:
            return []  # Terraform accepts both while migrating to native locking
        return []


def path_in(prefix: str, key: str) -> str:
    base = prefix.strip("/")
    return f"{base}/{key}" if base else key

