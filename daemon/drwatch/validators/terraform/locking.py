"""The S3 backend's bucket posture (versioning, Object Lock) and state locking (the DynamoDB lock table and its
MD5 digest, the S3 lock file)."""

from __future__ import annotations

import hashlib
from typing import Any

from drwatch.core.durations import format_duration
from drwatch.core.errors import ValidatorError
from drwatch.core.model import Severity
from drwatch.storage.aws import aws_failure, error_code, location_client
from drwatch.storage.s3 import S3Location, S3Missing, classify
from drwatch.validators.terraform.state import StateRun


class Run(StateRun):
    """A run of ``terraform_state``: reading and judging the state, and on S3 the bucket and its locking."""

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
        loc = s3.cfg
        where = f"DynamoDB table {table!r}"
        try:
            async with location_client(s3.creds, loc, "dynamodb", self.cfg.dynamodb_endpoint_url) as ddb:
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
