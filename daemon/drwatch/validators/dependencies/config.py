"""The ``recovery_dependencies`` validator's configuration: what an asset's restore needs, and where each lives.

Each dependency has a ``kind`` (what it is, the ``kind`` label of its metrics), a ``name`` (unique in the
validator: its findings' subject and its ``dependency`` label), where it lives (``site`` and/or ``region``) and
``provides`` (the role it fills; dependencies sharing a role are alternatives of each other, default: its name).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drwatch.core.durations import Duration
from drwatch.core.errors import ConfigProblem
from drwatch.storage.config import AwsCredentialFields
from drwatch.validators.base import ValidatorConfigBase

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_KMS_ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:(key|alias)/.+$")


def _encodable(host: str) -> None:
    """A host name the resolver can be asked for (IDNA: no empty label, none over 63 characters); an address
    passes. A probe of one that is not would stop the whole run, not answer for its dependency."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return
    except ValueError:
        pass
    try:
        host.encode("idna")
    except UnicodeError:
        raise ValueError(f"{host!r} is not a host name (empty label, or one over 63 characters)") from None


class _Dependency(BaseModel):
    """Fields every dependency has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    provides: str | None = None  # the role it fills; alternatives share it (default: the name)
    site: str = ""
    region: str = ""
    timeout: Duration = timedelta(seconds=5)  # one probe's bound

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-' (it is a metric label value)")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(minutes=5):
            raise ValueError("must be above zero and at most 5m")
        return value

    @property
    def role(self) -> str:
        return self.provides or self.name

    def where(self) -> tuple[str, str]:
        """(site, region) as declared (the KMS key's region may come from its ARN)."""
        return self.site, self.region


class DnsDependency(_Dependency):
    """A DNS service the restore needs, probed by resolving a name it answers for."""

    kind: Literal["dns"]
    host: str = Field(min_length=1, max_length=253)

    @field_validator("host")
    @classmethod
    def _a_name(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value.strip("[]"))
        except ValueError:
            _encodable(value)
            return value
        raise ValueError(f"{value} is an address: resolving it asks no DNS server (always up); set a name the DNS "
                         "service answers for, or probe the resolver itself with kind tcp, port 53")


class EndpointDependency(_Dependency):
    """An endpoint: ``tcp`` (``host`` + ``port``: connect), ``https`` (``url``: GET with TLS verification), or an
    ``identity`` provider / artifact ``registry`` probed either way."""

    kind: Literal["tcp", "https", "identity", "registry"]
    url: str | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    ca_file: str | None = None  # PEM bundle the server's certificate must chain to (default: the system's)
    expect_status: list[int] | None = None  # default: 2xx/3xx (a registry: 401 too, /v2/ asks for a login)

    @model_validator(mode="after")
    def _target(self) -> EndpointDependency:
        has_url, has_host = self.url is not None, self.host is not None or self.port is not None
        if has_url == has_host:
            raise ValueError("set either 'url' (an https:// URL) or 'host' and 'port'")
        if self.kind == "tcp" and has_url:
            raise ValueError("a tcp dependency takes 'host' and 'port'")
        if self.kind == "https" and not has_url:
            raise ValueError("an https dependency takes 'url'")
        if has_host and (self.host is None or self.port is None or not self.host):
            raise ValueError("set both 'host' and 'port'")
        if self.host is not None:
            _encodable(self.host)
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError("'url' must be an https:// URL (the probe verifies TLS)")
            _encodable(parts.hostname)
            if parts.username is not None or parts.password is not None:
                raise ValueError("'url' must carry no credentials (the probe sends none; it would show them in "
                                 "findings)")
        if (self.ca_file is not None or self.expect_status is not None) and not has_url:
            raise ValueError("'ca_file' and 'expect_status' apply to a 'url' probe only")
        if self.expect_status is not None and not all(100 <= s <= 599 for s in self.expect_status):
            raise ValueError("'expect_status' holds HTTP status codes (100-599)")
        return self

    def accepts(self, status: int) -> bool:
        if self.expect_status is not None:
            return status in self.expect_status
        return 200 <= status < 400 or (self.kind == "registry" and status == 401)


class KmsKeyDependency(_Dependency, AwsCredentialFields):
    """A KMS key the restore decrypts with: ``DescribeKey`` with drwatch's own credentials must say Enabled."""

    kind: Literal["kms_key"]
    key_id: str = Field(min_length=1, max_length=2048)  # key id, key ARN, alias name or alias ARN
    endpoint_url: str | None = None  # a KMS-compatible endpoint (tests); default AWS's regional one

    @model_validator(mode="after")
    def _one_region(self) -> KmsKeyDependency:
        m = _KMS_ARN.match(self.key_id)
        if m and self.region and self.region != m.group("region"):
            raise ValueError(f"'region' {self.region} contradicts the key ARN's region {m.group('region')}: a KMS "
                             "key lives in one region (DescribeKey elsewhere says it does not exist); drop 'region'")
        return self

    def where(self) -> tuple[str, str]:
        m = _KMS_ARN.match(self.key_id)
        return self.site, self.region or (m.group("region") if m else "")

    @property
    def api_region(self) -> str | None:
        return self.where()[1] or None


class TerraformStateDependency(_Dependency):
    """The Terraform state the rebuild starts from: the latest stored result of a ``terraform_state`` validator
    (drwatch's own probe of it). Where it lives defaults to that asset's production location."""

    kind: Literal["terraform_state"]
    asset: str
    validator: str = "terraform_state"  # the label of that asset's terraform_state validator


Dependency = Annotated[DnsDependency | EndpointDependency | KmsKeyDependency | TerraformStateDependency,
                       Field(discriminator="kind")]
DEPENDENCY_KINDS: tuple[str, ...] = ("dns", "identity", "kms_key", "registry", "terraform_state", "tcp", "https")


class FailureDomain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = ""
    region: str = ""


class RecoveryDependenciesConfig(ValidatorConfigBase):
    reads_results: ClassVar[bool] = True  # a terraform_state dependency reads that validator's stored result

    kind: Literal["recovery_dependencies"] = "recovery_dependencies"
    dependencies: list[Dependency] = Field(min_length=1, max_length=200)
    failure_domain: FailureDomain | None = None  # production's (default: its location's site and region)
    domain_policy: Literal["warning", "failure"] = "warning"  # dependency_in_failure_domain's severity

    @model_validator(mode="after")
    def _unique(self) -> RecoveryDependenciesConfig:
        seen: set[str] = set()
        for dep in self.dependencies:
            if dep.name in seen:
                raise ValueError(f"dependency name {dep.name!r} is used twice (names are metric labels)")
            seen.add(dep.name)
        return self

    def locations(self, asset: AssetView) -> list[str]:
        return []  # probes endpoints, not locations (an S3 production is asked its region only when undeclared)

    def judges(self, asset_name: str, cfg: ConfigView) -> list[tuple[str, str]]:
        return [(d.asset, d.validator) for d in self.dependencies if isinstance(d, TerraformStateDependency)
                and d.asset in cfg.assets and any(v.label == d.validator and not v.reads_results
                                                  for v in cfg.assets[d.asset].validators)]

    def cross_check(self, asset_name: str, asset: AssetView, cfg: ConfigView) -> list[ConfigProblem]:
        problems = []
        for i, dep in enumerate(self.dependencies):
            if isinstance(dep, TerraformStateDependency):
                target = cfg.assets.get(dep.asset)
                if target is None:
                    problems.append(ConfigProblem(f"dependencies.{i}.asset", f"unknown asset {dep.asset!r}"))
                elif not any(v.label == dep.validator and v.kind == "terraform_state" for v in target.validators):
                    problems.append(ConfigProblem(f"dependencies.{i}.validator", f"asset {dep.asset!r} has no "
                                                  f"terraform_state validator labelled {dep.validator!r}"))
            if not any(dependency_where(dep, cfg)):
                problems.append(ConfigProblem(f"dependencies.{i}", "declare where it lives: 'site' and/or "
                                              "'region' (the failure domain it shares, or not, with production)"))
        return problems


def dependency_where(dep: _Dependency, cfg: ConfigView) -> tuple[str, str]:
    """(site, region) of a dependency: declared, else (a Terraform state) its asset's production location's."""
    site, region = dep.where()
    if isinstance(dep, TerraformStateDependency) and not (site or region):
        target = cfg.assets.get(dep.asset)
        loc = cfg.locations.get(target.production.location) if target is not None else None
        if loc is not None:
            return loc.site, loc.region or ""
    return site, region
