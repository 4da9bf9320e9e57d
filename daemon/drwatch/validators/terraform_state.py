"""Validator ``terraform_state``: a Terraform state (S3 backend object or a local file) can rebuild what it describes.

The state is the object ``key`` under the asset's production prefix, on a filesystem or S3 location. A run reads it
(never writes) and judges:

- its content: readable, valid JSON, ``version`` 4, a non-negative integer ``serial`` and a non-empty ``lineage``;
  the lineage stays the one of this validator's previous stored result and the serial never goes back (from the
  read-only results view, so it survives restarts; a run that sees a change fails, the next one takes the new
  value as the reference; a run that reads no state, ``error`` included, carries the previous reference forward);
- its age: the object's ``LastModified`` (file mtime) within ``within`` (default: the asset's RPO); a time ahead
  of this host's clock is the ``time_in_future`` warning and never makes the state fresh;
- S3 only: the bucket versioned (a broken ``apply`` can be rolled back) and, with ``object_lock: true``,
  Object-Locked; state locking configured: ``dynamodb_table`` is described (it exists, is ACTIVE, is keyed by
  ``LockID``) and the MD5 digest Terraform keeps there matches the state; ``use_lockfile`` looks for the S3 lock
  file ``<key>.tflock`` (one older than ``lock_stale_after`` is a lock a crashed run left behind);
- its failure domain: the regions the state's own resources live in (their ARNs, ``region`` and
  ``availability_zone`` attributes). A state stored in one of them is ``state_in_rebuilt_region``; when none of
  the asset's copies has an observed region outside them it is ``no_copy_outside_region`` (each a warning, or a
  failure with ``region_policy: failure``).

Outcomes: ``failed`` for a missing, unreadable or invalid state, a wrong version, a changed lineage, a serial that
went back, a stale state, an unversioned (or unlocked when required) bucket, a missing lock table or a digest that
does not match; ``error`` when the bucket, the local file's location or DynamoDB could not be reached or denied
access. The result proves no copy (no copy report, no recovery point).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import field_validator

from drwatch.core.durations import Duration, format_duration
from drwatch.core.errors import ConfigProblem, ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.storage.aws import aws_failure, error_code
from drwatch.storage.config import FilesystemLocationConfig, S3LocationConfig
from drwatch.storage.s3 import S3Location, S3Missing, S3Unavailable, classify
from drwatch.validators.base import RunContext, ValidatorConfigBase
from drwatch.validators.copies.posture import arn_region
from drwatch.validators.copies.timetrust import FutureTimes
from drwatch.validators.plugin import Family, Latest, Plugin, Sample

if TYPE_CHECKING:
    from drwatch.validators.base import AssetView, ConfigView

STATE_VERSION = 4
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_AZ = re.compile(r"^([a-z]{2}(-gov)?-[a-z]+-\d)[a-z]$")
_MAX_BYTES = 512 * 1024 * 1024


class TerraformStateConfig(ValidatorConfigBase):
    kind: Literal["terraform_state"] = "terraform_state"
    key: str = "terraform.tfstate"  # the state object (file) under the production prefix
    within: Duration | None = None  # the state must be younger than this (default: the asset's RPO)
    object_lock: bool = False  # the S3 bucket must have Object Lock enabled
    dynamodb_table: str | None = None  # the S3 backend's lock table (DescribeTable, the MD5 digest item)
    dynamodb_endpoint_url: str | None = None  # default: the location's endpoint (AWS: the regional endpoint)
    use_lockfile: bool = False  # S3 native locking (<key>.tflock)
    lock_stale_after: Duration = timedelta(hours=6)  # a lock file older than this is a lock left behind
    region_policy: Literal["warning", "failure"] = "warning"  # state_in_rebuilt_region / no_copy_outside_region

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
                                    ("object_lock", self.object_lock)) if v]
            if extra:
                return [ConfigProblem("", f"{', '.join(extra)} apply to an S3 backend only (production is a "
                                          "filesystem location)")]
        elif self.dynamodb_table and self.use_lockfile:
            return []  # Terraform accepts both while migrating to native locking
        return []


def _path_in(prefix: str, key: str) -> str:
    base = prefix.strip("/")
    return f"{base}/{key}" if base else key


def described_regions(state: dict[str, Any]) -> set[str]:
    """The regions the state's resources live in: ARNs, ``region`` and ``availability_zone`` attributes."""
    found: set[str] = set()

    def walk(value: Any, name: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, name)
        elif isinstance(value, str):
            if value.startswith("arn:"):
                if (r := arn_region(value)) is not None and _REGION.match(r):
                    found.add(r)
            elif name == "region" and _REGION.match(value):
                found.add(value)
            elif name == "availability_zone" and (m := _AZ.match(value)):
                found.add(m.group(1))

    for res in state.get("resources") or []:
        if isinstance(res, dict):
            for inst in res.get("instances") or []:
                if isinstance(inst, dict):
                    walk(inst.get("attributes"), "")
    return found


class _Run:
    def __init__(self, cfg: TerraformStateConfig, ctx: RunContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.findings: list[Finding] = []
        self.figures: dict[str, float] = {}
        self.failed = False
        self.region_severity = Severity.CRITICAL if cfg.region_policy == "failure" else Severity.WARNING

    def critical(self, code: str, message: str, subject: str = "state") -> None:
        self.failed = True
        self.findings.append(Finding(Severity.CRITICAL, code, message, subject))

    def note(self, severity: Severity, code: str, message: str, subject: str = "state") -> None:
        self.failed |= severity == Severity.CRITICAL
        self.findings.append(Finding(severity, code, message, subject))

    # --- reading ------------------------------------------------------------------------------------

    async def read_file(self, loc: FilesystemLocationConfig) -> tuple[bytes, float] | None:
        root = self.ctx.config.resolve_path(loc.path)
        path = root / _path_in(self.ctx.asset.production.prefix, self.cfg.key)

        def read() -> tuple[bytes, float] | str:
            if not root.is_dir():
                raise ValidatorError("location_unavailable", f"the location directory {str(root)!r} is not there "
                                     "(not mounted?)")
            try:
                with open(path, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    if st.st_size > _MAX_BYTES:
                        return f"the state is {st.st_size} bytes (over {_MAX_BYTES})"
                    return fh.read(), st.st_mtime
            except FileNotFoundError:
                return "missing"
            except IsADirectoryError:
                return "a directory, not a file"
            except PermissionError as exc:
                raise ValidatorError("access_denied", f"cannot read {str(path)!r}: {exc.strerror}") from None
            except OSError as exc:
                raise ValidatorError("location_unavailable", f"cannot read {str(path)!r}: {exc.strerror or exc}"
                                     ) from None

        got = await asyncio.to_thread(read)
        if isinstance(got, str):
            self.critical("state_missing" if got == "missing" else "state_unreadable",
                          f"the state file {str(path)!r} is {got}" if got != "missing"
                          else f"no state file at {str(path)!r}")
            return None
        return got

    async def read_s3(self, s3: S3Location, key: str) -> tuple[bytes, float] | None:
        client = await s3.client()
        try:
            resp = await client.get_object(Bucket=s3.cfg.bucket, Key=key)
            size = int(resp.get("ContentLength") or 0)
            if size > _MAX_BYTES:
                resp["Body"].close()
                self.critical("state_unreadable", f"the state is {size} bytes (over {_MAX_BYTES})")
                return None
            async with resp["Body"] as stream:
                body = await stream.read()
        except Exception as exc:
            mapped = classify(exc, s3.name)
            if isinstance(mapped, S3Missing):
                self.critical("state_missing", f"no state object s3://{s3.cfg.bucket}/{key} ({mapped.what})")
                return None
            raise mapped from None
        return bytes(body), resp["LastModified"].timestamp()

    # --- judging ------------------------------------------------------------------------------------

    def parse(self, body: bytes) -> dict[str, Any] | None:
        try:
            state = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            self.critical("state_invalid", f"the state is not valid JSON: {exc}")
            return None
        if not isinstance(state, dict):
            self.critical("state_invalid", "the state is not a JSON object")
            return None
        version = state.get("version")
        if version != STATE_VERSION:
            self.critical("state_version", f"the state has version {version!r}; drwatch knows version "
                          f"{STATE_VERSION} (Terraform >= 0.12, OpenTofu)")
            return None
        serial, lineage = state.get("serial"), state.get("lineage")
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
            self.critical("state_invalid", f"the state's serial {serial!r} is not a non-negative integer")
            return None
        if not isinstance(lineage, str) or not lineage.strip():
            self.critical("state_invalid", f"the state's lineage {lineage!r} is empty or not a string")
            return None
        if not isinstance(state.get("resources", []), list):
            self.critical("state_invalid", "the state's resources are not a list")
            return None
        return state

    def previous(self) -> tuple[str, float] | None:
        """The lineage and serial this validator's previous stored result saw (or carried forward)."""
        if self.ctx.results is None:
            return None
        prev = self.ctx.results().last_result(self.ctx.asset_name, self.cfg.label)
        if prev is None:
            return None
        old = next((f.subject for f in prev.findings if f.code == "state_lineage"), None)
        old_serial = prev.figures.get("serial")
        return None if old is None or old_serial is None else (old, old_serial)

    def carry(self, reference: tuple[str, float] | None) -> None:
        """A run that read no state keeps the previous reference in its result (the next run compares with it)."""
        if reference is not None and "serial" not in self.figures:
            old, old_serial = reference
            self.figures["serial"] = old_serial
            self.findings.append(Finding(Severity.INFO, "state_lineage", f"lineage {old}, serial "
                                         f"{int(old_serial)} (seen before; not read by this run)", old))

    def history(self, serial: int, lineage: str, reference: tuple[str, float] | None) -> None:
        """Lineage stable and serial never decreasing, against this validator's previous stored result."""
        self.figures["serial"] = float(serial)
        self.findings.append(Finding(Severity.INFO, "state_lineage", f"lineage {lineage}, serial {serial}",
                                     lineage))
        if reference is None:
            return
        old, old_serial = reference
        if old != lineage:
            self.critical("lineage_changed", f"the state's lineage is {lineage}, the previous run saw {old}: the "
                          "state was replaced by another one (a different workspace, or a new 'terraform init')")
        elif serial < old_serial:
            self.critical("serial_went_back", f"the state's serial is {serial}, the previous run saw "
                          f"{int(old_serial)}: an older state was written over the newer one")

    def age(self, mtime: float, subject: str) -> None:
        future = FutureTimes.at(self.ctx)
        if not future.believe(subject, mtime):
            warning = future.finding("state", "state object(s)")
            assert warning is not None
            self.findings.append(warning)
            self.critical("stale", "the state has no believable modification time (dated ahead of this host's "
                          "clock)")
            return
        self.figures["last_modified_timestamp_seconds"] = mtime
        limit = (self.cfg.within or self.ctx.asset.rpo).total_seconds()
        age = self.ctx.clock() - mtime
        if age > limit:
            self.critical("stale", f"the state was last written {format_duration(age)} ago (limit "
                          f"{format_duration(limit)})")

    def regions(self, state: dict[str, Any], state_region: str, copy_regions: dict[str, str]) -> None:
        described = described_regions(state)
        self.figures["regions_described"] = float(len(described))
        if not described:
            return
        names = ", ".join(sorted(described))
        if state_region and state_region in described:
            self.note(self.region_severity, "state_in_rebuilt_region",
                      f"the state is stored in {state_region}, a region it describes ({names}): the outage that "
                      "needs it rebuilt takes the state with it")
        outside = sorted(c for c, r in copy_regions.items() if r and r not in described)
        if not outside:
            seen = ", ".join(f"{c}: {r or 'unknown'}" for c, r in sorted(copy_regions.items())) or "no copy"
            self.note(self.region_severity, "no_copy_outside_region",
                      f"no copy of the state is in a region outside the ones it describes ({names}); copies: {seen}")

    # --- S3 bucket and locking ------------------------------------------------------------------------

    def bucket_posture(self, versioning: str, object_lock: bool | None) -> None:
        if versioning == "unknown":
            self.note(Severity.WARNING, "versioning_unknown", "the bucket's versioning could not be read (access "
                      "denied to GetBucketVersioning)", "bucket")
        elif versioning != "Enabled":
            self.critical("bucket_not_versioned", f"the state bucket's versioning is {versioning}: an overwritten "
                          "or deleted state cannot be recovered", "bucket")
        if self.cfg.object_lock:
            if object_lock is None:
                self.note(Severity.WARNING, "object_lock_unknown", "the bucket's Object Lock configuration could "
                          "not be read", "bucket")
            elif not object_lock:
                self.critical("bucket_not_locked", "the state bucket has no Object Lock (object_lock: true)",
                              "bucket")

    async def lockfile(self, s3: S3Location, key: str) -> None:
        client = await s3.client()
        try:
            head = await client.head_object(Bucket=s3.cfg.bucket, Key=f"{key}.tflock")
        except Exception as exc:
            mapped = classify(exc, s3.name)
            if isinstance(mapped, S3Missing):
                return  # no run holds the lock: the normal case
            raise mapped from None
        age = self.ctx.clock() - head["LastModified"].timestamp()
        if age > self.cfg.lock_stale_after.total_seconds():
            self.note(Severity.WARNING, "stale_lock", f"the lock file {key}.tflock is {format_duration(age)} old: "
                      "a run that died left the state locked ('terraform force-unlock')", "lock")

    async def dynamodb(self, s3: S3Location, key: str, body: bytes) -> None:
        table = self.cfg.dynamodb_table
        assert table is not None
        from botocore.config import Config as BotoConfig

        from drwatch.storage.aws import session_for

        loc = s3.cfg
        where = f"DynamoDB table {table!r}"
        boto_cfg = BotoConfig(connect_timeout=loc.connect_timeout.total_seconds(),
                              read_timeout=loc.read_timeout.total_seconds(),
                              retries={"mode": loc.retry_mode, "max_attempts": loc.max_attempts})
        try:
            async with session_for(s3.creds).client(
                    "dynamodb", endpoint_url=self.cfg.dynamodb_endpoint_url or loc.endpoint_url,
                    region_name=loc.region or "us-east-1", config=boto_cfg,
                    aws_access_key_id=s3.creds.access_key_id, aws_secret_access_key=s3.creds.secret_access_key,
                    aws_session_token=s3.creds.session_token) as ddb:
                desc = (await ddb.describe_table(TableName=table))["Table"]
                item = None
                if self._lock_table_shape(table, desc):
                    got = await ddb.get_item(TableName=table, ConsistentRead=True,
                                             Key={"LockID": {"S": f"{loc.bucket}/{key}-md5"}})
                    item = got.get("Item")
        except ValidatorError:
            raise
        except Exception as exc:
            if hasattr(exc, "response") and error_code(exc)[0] == "ResourceNotFoundException":
                self.critical("lock_table_missing", f"{where} does not exist: state locking is not in force",
                              "lock")
                return
            failure = aws_failure(exc, where, "dynamodb_error")
            if failure is None:
                raise
            raise failure from None
        digest = ((item or {}).get("Digest") or {}).get("S")
        if digest:
            actual = hashlib.md5(body, usedforsecurity=False).hexdigest()
            if digest != actual:
                self.critical("lock_digest_mismatch", f"the lock table's digest of the state is {digest}, the "
                              f"state's MD5 is {actual}: Terraform refuses to use this state (the state and the "
                              "table come from different writes)", "lock")

    def _lock_table_shape(self, table: str, desc: dict[str, Any]) -> bool:
        status = desc.get("TableStatus")
        keys = [(k.get("AttributeName"), k.get("KeyType")) for k in desc.get("KeySchema", [])]
        if keys != [("LockID", "HASH")]:
            self.critical("lock_table_invalid", f"the DynamoDB table {table!r} is keyed by {keys}, Terraform "
                          "locks with a single hash key 'LockID'", "lock")
            return False
        if status not in {"ACTIVE", "UPDATING"}:
            self.critical("lock_table_invalid", f"the DynamoDB table {table!r} is {status}", "lock")
            return False
        return True


class TerraformStateValidator:
    kind: ClassVar[str] = "terraform_state"

    def __init__(self, cfg: TerraformStateConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        r = _Run(self.cfg, ctx)
        reference = r.previous()
        try:
            await self._check(r, reference)
        except ValidatorError as exc:  # could not check: the result still carries the reference forward
            if ctx.remaining() <= 0:
                raise  # a step that gave up as the run's time ran out: the runner's timeout
            r.carry(reference)
            findings = (Finding(Severity.WARNING, exc.code, exc.message), *r.findings)
            # what was already found bad stays a failure; otherwise the run could not check
            return Report(Outcome.FAILED if r.failed else Outcome.ERROR, findings, r.figures)
        r.carry(reference)
        return Report(Outcome.FAILED if r.failed else Outcome.OK, tuple(r.findings), r.figures)

    async def _check(self, r: _Run, reference: tuple[str, float] | None) -> None:
        ctx = r.ctx
        prod = ctx.asset.production
        loc = ctx.config.locations[prod.location]
        key = _path_in(prod.prefix, self.cfg.key)
        s3: S3Location | None = None
        if isinstance(loc, FilesystemLocationConfig):
            got = await r.read_file(loc)
            state_region = loc.region
        else:
            if ctx.s3 is None:
                raise ValidatorError("no_s3_pool", "S3 locations need the daemon's client pool")
            s3 = ctx.s3.get(prod.location, loc)
            facts = await s3.bucket_facts()
            state_region = facts.region or loc.region or ""
            got = await r.read_s3(s3, key)
            if got is not None or facts.region is not None:  # the bucket exists
                r.bucket_posture(facts.versioning, facts.object_lock)
        state = None
        if got is not None:
            body, mtime = got
            r.figures["state_bytes"] = float(len(body))
            r.age(mtime, key)
            state = r.parse(body)
            if state is not None:
                r.figures["resources"] = float(len(state.get("resources") or []))
                r.history(state["serial"], state["lineage"], reference)
            if s3 is not None and self.cfg.dynamodb_table:
                await r.dynamodb(s3, key, body)
        if s3 is not None:
            if self.cfg.use_lockfile:
                await r.lockfile(s3, key)
            if not self.cfg.dynamodb_table and not self.cfg.use_lockfile:
                r.note(Severity.WARNING, "no_state_locking", "neither dynamodb_table nor use_lockfile is set: two "
                       "concurrent applies can corrupt the state", "lock")
        if state is not None:
            r.regions(state, state_region, await _copy_regions(ctx))


async def _copy_regions(ctx: RunContext) -> dict[str, str]:
    """Each declared copy's region: observed for S3 (GetBucketLocation), declared for a filesystem (unknown when
    the bucket could not be asked)."""
    out: dict[str, str] = {}
    for c in ctx.asset.copies:
        loc = ctx.config.locations[c.location]
        if isinstance(loc, FilesystemLocationConfig):
            out[c.label] = loc.region
        elif ctx.s3 is not None:
            try:
                out[c.label] = (await ctx.s3.get(c.location, loc).bucket_facts()).region or ""
            except S3Unavailable:
                out[c.label] = ""
    return out


SERIAL = Family("drwatch_terraform_state_serial", "Serial of the Terraform state read by the latest run (the one "
                "seen before when that run could not read it).", ("asset", "validator"))
WRITTEN = Family("drwatch_terraform_state_last_modified_timestamp_seconds", "When the Terraform state read by the "
                 "latest run was last written (S3 LastModified or file mtime), unix time.", ("asset", "validator"))


def project(latest: Sequence[Latest]) -> Iterator[Sample]:
    """Per validator: the state's serial and when it was last written, from the latest result."""
    for asset, vcfg, result in latest:
        fig = result.figures
        if "serial" in fig:
            yield SERIAL.name, (asset, vcfg.label), fig["serial"]
        if "last_modified_timestamp_seconds" in fig:
            yield WRITTEN.name, (asset, vcfg.label), fig["last_modified_timestamp_seconds"]


PLUGIN = Plugin(TerraformStateConfig, TerraformStateValidator, (SERIAL, WRITTEN), project)
