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
  ``availability_zone`` attributes) and accounts (the account field of their ARNs). A state stored in one of
  those regions is ``state_in_rebuilt_region``, one whose S3 bucket belongs to one of those accounts
  (``state_account``, else the account of the credentials reading it, STS GetCallerIdentity) is
  ``state_in_rebuilt_account`` (``account_unknown`` when STS cannot say); when none of
  the asset's copies has an observed region outside them it is ``no_copy_outside_region`` (each a warning, or a
  failure with ``region_policy: failure``).

Outcomes: ``failed`` for a missing, unreadable or invalid state, a wrong version, a changed lineage, a serial that
went back, a stale state, an unversioned (or unlocked when required) bucket, a missing lock table or a digest that
does not match; ``error`` when the bucket, the local file's location or DynamoDB could not be reached or denied
access. The result proves no copy (no copy report, no recovery point).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import ClassVar

from drwatch.core.errors import ValidatorError
from drwatch.core.model import Finding, Outcome, Report, Severity
from drwatch.storage.config import FilesystemLocationConfig
from drwatch.storage.s3 import S3Location, S3Unavailable
from drwatch.validators.base import RunContext
from drwatch.validators.plugin import Family, Latest, Plugin, Sample
from drwatch.validators.terraform.account import judge_account
from drwatch.validators.terraform.config import TerraformStateConfig, path_in
from drwatch.validators.terraform.locking import Run


class TerraformStateValidator:
    kind: ClassVar[str] = "terraform_state"

    def __init__(self, cfg: TerraformStateConfig) -> None:
        self.cfg = cfg

    async def run(self, ctx: RunContext) -> Report:
        r = Run(self.cfg, ctx)
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

    async def _check(self, r: Run, reference: tuple[str, float] | None) -> None:
        ctx = r.ctx
        prod = ctx.asset.production
        loc = ctx.config.locations[prod.location]
        key = path_in(prod.prefix, self.cfg.key)
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
            state = await asyncio.to_thread(r.parse, body)  # decompressing and parsing a large state: off the loop
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
            if s3 is not None:
                await judge_account(r, state, s3)
            r.regions(state, state_region, await _copy_regions(ctx))


async def _copy_regions(ctx: RunContext) -> dict[str, str | None]:
    """Each declared copy's region: observed for S3 (GetBucketLocation), declared for a filesystem ("" when not
    declared); None when the bucket could not be asked or did not say."""
    out: dict[str, str | None] = {}
    for c in ctx.asset.copies:
        loc = ctx.config.locations[c.location]
        if isinstance(loc, FilesystemLocationConfig):
            out[c.label] = loc.region
        elif ctx.s3 is not None:
            try:
                out[c.label] = (await ctx.s3.get(c.location, loc).bucket_facts()).region
            except S3Unavailable:
                out[c.label] = None
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
