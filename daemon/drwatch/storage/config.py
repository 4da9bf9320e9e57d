"""Location configuration: a discriminated union on ``kind`` (one model per location kind)."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drwatch.core.durations import Duration
from drwatch.storage.prices import PriceTable


class RestoreDeclaration(BaseModel):
    """What drwatch cannot measure about restoring from a location (an offline vault, a tape library, a copy
    never read): the time before the first byte (courier, robot, recall) and the read rate once it flows.
    A measured rate (verification reads, drills) wins over the declared one; the declared retrieval time is
    added to the storage class's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retrieval_time: Duration | None = None
    bytes_per_second: float | None = Field(default=None, gt=0)


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
    restore: RestoreDeclaration | None = None  # restore-time model inputs drwatch cannot measure
    pricing: PriceTable | None = None  # cost of the DR posture (drwatch_cost_monthly_dollars)


class InventoryReportConfig(BaseModel):
    """The S3 Inventory report that covers an S3 location (storage/inventory.py). AWS writes it under
    ``<prefix>/<source_bucket>/<configuration_id>/`` in a destination bucket: ``location`` names the S3
    location of that bucket (default: the location itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    configuration_id: str = Field(min_length=1, max_length=64, pattern=r"^[^/]+$")
    location: str | None = None
    prefix: str = ""
    source_bucket: str | None = None  # default: the location's bucket
    max_age: Duration = timedelta(hours=48)


class AwsCredentialFields(BaseModel):
    """Where an AWS client's credentials are (S3 locations, rds_snapshot): a named ``profile``, or explicit keys
    by ``*_env`` / ``*_file`` (never inline; read by :func:`drwatch.storage.aws.read_credentials`), or neither:
    the default credential chain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str | None = None
    access_key_id_env: str | None = None
    access_key_id_file: str | None = None
    secret_access_key_env: str | None = None
    secret_access_key_file: str | None = None
    session_token_env: str | None = None
    session_token_file: str | None = None

    @model_validator(mode="after")
    def _one_source_per_credential(self) -> AwsCredentialFields:
        for name in ("access_key_id", "secret_access_key", "session_token"):
            if getattr(self, f"{name}_env") is not None and getattr(self, f"{name}_file") is not None:
                raise ValueError(f"set at most one of {name}_env / {name}_file")
        has_key = self.access_key_id_env is not None or self.access_key_id_file is not None
        has_secret = self.secret_access_key_env is not None or self.secret_access_key_file is not None
        if has_key != has_secret:
            raise ValueError("access key id and secret access key must be given together")
        if has_key and self.profile is not None:
            raise ValueError("use either 'profile' or explicit access keys, not both")
        return self


class S3LocationConfig(AwsCredentialFields):
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
    connect_timeout: Duration = timedelta(seconds=10)
    read_timeout: Duration = timedelta(seconds=60)
    max_attempts: int = Field(default=5, ge=1, le=20)
    retry_mode: Literal["adaptive", "standard", "legacy"] = "adaptive"
    max_concurrency: int | None = Field(default=None, ge=1, le=1000)
    head_concurrency: int = Field(default=16, ge=1, le=256)
    list_concurrency: int = Field(default=8, ge=1, le=64)  # ListObjectsV2 requests in flight per listing
    canary_prefix: str | None = None
    inventory: InventoryReportConfig | None = None  # per-object facts from an S3 Inventory report
    offline: bool = False
    restore: RestoreDeclaration | None = None  # restore-time model inputs drwatch cannot measure
    pricing: PriceTable | None = None  # cost of the DR posture (drwatch_cost_monthly_dollars)

    @model_validator(mode="after")
    def _canary(self) -> S3LocationConfig:
        if self.canary_prefix is not None and not self.canary_prefix.strip("/"):
            raise ValueError("canary_prefix must be a non-empty prefix (e.g. drwatch-canary/)")
        return self


LocationConfig = Annotated[FilesystemLocationConfig | S3LocationConfig, Field(discriminator="kind")]
LOCATION_KINDS: frozenset[str] = frozenset({"filesystem", "s3"})


# --- where a location's bytes are -------------------------------------------------------------------

_AWS_HOST = re.compile(r"^(?:[a-z0-9.-]+\.)?s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com(?P<cn>\.cn)?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _loopback(host: str) -> bool:
    """The names of this host's own loopback service: ``localhost`` and the two addresses it resolves to. Other
    127.x addresses are other sockets (a server bound to 127.0.0.1 does not answer on 127.0.0.2)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host) in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
    except ValueError:
        return False


def canonical_endpoint(endpoint_url: str | None) -> str:
    """The S3 service an endpoint URL reaches, spelled one way: two spellings of one service compare equal.

    AWS bucket names are global, so every AWS endpoint (none configured, ``s3.amazonaws.com``, regional
    ``s3.<region>.amazonaws.com`` / ``s3-<region>.amazonaws.com``, dual-stack, FIPS) is ``aws`` (``aws-cn``
    in China). Elsewhere: host in lower case, every loopback name (``localhost``, ``127.0.0.1``, ``::1``)
    one name, the scheme's default port explicit (:80 http, :443 https; the scheme itself then says
    nothing more), no trailing slash."""
    if not endpoint_url:
        return "aws"
    url = urlsplit(endpoint_url.strip() if "://" in endpoint_url else f"https://{endpoint_url.strip()}")
    host = (url.hostname or "").lower().rstrip(".")
    if m := _AWS_HOST.match(host):
        return "aws-cn" if m.group("cn") else "aws"
    try:
        port = url.port or _DEFAULT_PORTS.get(url.scheme.lower(), 0)
    except ValueError:  # a port that is not a number: leave the spelling as it is
        return endpoint_url.strip().lower().rstrip("/")
    if _loopback(host):
        host = "loopback"
    elif ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}{url.path.rstrip('/')}"


def s3_place(loc: S3LocationConfig, prefix: str) -> tuple[str, ...]:
    """Where an S3 copy's objects are: the canonical endpoint, the bucket and the prefix (no outer slashes)."""
    return "s3", canonical_endpoint(loc.endpoint_url), loc.bucket, prefix.strip("/")
