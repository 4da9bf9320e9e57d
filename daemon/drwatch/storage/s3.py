"""S3 locations (aioboto3): one client per location, reused and closed on shutdown.

Everything here reads. The only write drwatch ever makes to a backup location is the opt-in canary of
the ``immutability_probe`` validator, under the location's ``canary_prefix`` (see that validator).

Errors are mapped to honest outcomes by :func:`classify` (``storage/s3errors.py``): access denied,
throttling, unreachable endpoints and timeouts are "could not check" (``ValidatorError``); a missing bucket
or key is a fact about the backup that callers turn into findings. The requests paid per page or per
object take the lean path (``storage/s3lean.py``); listings are split by common prefix
(``storage/s3list.py``); the data types are in ``storage/s3model.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drwatch.storage.aws import Credentials, read_credentials, session_for
from drwatch.storage.config import S3LocationConfig
from drwatch.storage.hashing import new_hash
from drwatch.storage.s3errors import S3Missing, S3Unavailable, classify, s3_errors
from drwatch.storage.s3model import (
    ARCHIVE_CLASSES,
    BucketFacts,
    ObjectHead,
    RequestMeter,
    S3Object,
    _attempts,
    _head_from_boto,
    _head_from_headers,
    _ts,
    checksum_matches_sha256,
    sha256_hex_to_b64,
)

if TYPE_CHECKING:
    from drwatch.storage.s3lean import LeanS3
    from drwatch.storage.s3list import ListedObject, ListPage

# Re-exported: the names callers import from ``drwatch.storage.s3`` (one place to import S3 things from).
__all__ = ["ARCHIVE_CLASSES", "BucketFacts", "Credentials", "ObjectHead", "RequestMeter", "S3Location", "S3Missing",
           "S3Object", "S3Pool", "S3Unavailable", "checksum_matches_sha256", "classify", "resolve_credentials",
           "s3_errors", "sha256_hex_to_b64"]
_READ_CHUNK = 1024 * 1024
_LIST_AHEAD = 32  # listing pages buffered ahead of the consumer, all of a listing's concurrent requests together


def resolve_credentials(name: str, loc: S3LocationConfig, base_dir: Path) -> Credentials:
    """The location's keys (:func:`drwatch.storage.aws.read_credentials`)."""
    return read_credentials(f"locations.{name}.", loc, base_dir)


class S3Location:
    """A connected S3 location: bucket-level facts, streamed listings, HEADs and hashing reads."""

    def __init__(self, name: str, cfg: S3LocationConfig, creds: Credentials) -> None:
        self.name = name
        self.cfg = cfg
        self.creds = creds
        self._client: Any = None
        self._stack = AsyncExitStack()
        self._lock = asyncio.Lock()
        self.head_sem = asyncio.Semaphore(cfg.head_concurrency)
        self._lean: LeanS3 | None = None

    @property
    def lean_path(self) -> bool:
        """Whether listings and HEADs take the lean path (:mod:`drwatch.storage.s3lean`). An AWS location with
        neither endpoint nor region declared stays on aioboto3, whose region redirector finds the bucket's region."""
        return self.cfg.endpoint_url is not None or self.cfg.region is not None

    async def lean(self) -> LeanS3:
        """The lean ListObjectsV2/HeadObject client on this location's aioboto3 client (created once)."""
        from drwatch.storage.s3lean import LeanS3  # imports botocore: on first use

        client = await self.client()
        async with self._lock:
            if self._lean is None:
                try:
                    self._lean = await LeanS3.create(client, self.cfg.bucket, self.cfg.max_attempts + 1)
                except Exception as exc:
                    raise classify(exc, self.name) from None
            return self._lean

    def __repr__(self) -> str:
        return f"S3Location({self.name!r}, bucket={self.cfg.bucket!r})"

    async def client(self) -> Any:
        async with self._lock:
            if self._client is None:
                from botocore.config import Config as BotoConfig

                session = session_for(self.creds)
                boto_cfg = BotoConfig(
                    connect_timeout=self.cfg.connect_timeout.total_seconds(),
                    read_timeout=self.cfg.read_timeout.total_seconds(),
                    retries={"mode": self.cfg.retry_mode, "max_attempts": self.cfg.max_attempts},
                    s3={"addressing_style": self.cfg.addressing_style},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    max_pool_connections=max(10, self.cfg.head_concurrency),
                )
                try:
                    self._client = await self._stack.enter_async_context(session.client(
                        "s3", endpoint_url=self.cfg.endpoint_url, config=boto_cfg, region_name=self.cfg.region,
                        aws_access_key_id=self.creds.access_key_id,
                        aws_secret_access_key=self.creds.secret_access_key,
                        aws_session_token=self.creds.session_token,
                    ))
                except Exception as exc:
                    raise classify(exc, self.name) from None
            return self._client

    async def close(self) -> None:
        async with self._lock:
            self._client = None
            self._lean = None
            await self._stack.aclose()
            self._stack = AsyncExitStack()

    async def _call(self, op: str, meter: RequestMeter | None = None, **kwargs: Any) -> Any:
        client = await self.client()
        try:
            resp = await getattr(client, op)(**kwargs)
        except Exception as exc:
            if meter is not None:
                from botocore.exceptions import ClientError

                meta = exc.response.get("ResponseMetadata") if isinstance(exc, ClientError) else None
                meter.count(op, _attempts(meta))
            raise classify(exc, self.name) from None
        if meter is not None:
            meter.count(op, _attempts(resp.get("ResponseMetadata")))
        return resp

    async def bucket_exists(self, meter: RequestMeter | None = None) -> bool:
        try:
            await self._call("head_bucket", meter, Bucket=self.cfg.bucket)
        except S3Missing:
            return False
        return True

    async def bucket_facts(self, meter: RequestMeter | None = None) -> BucketFacts:
        bucket = self.cfg.bucket

        async def optional(op: str) -> Any:
            try:
                return await self._call(op, meter, Bucket=bucket)
            except S3Missing:
                return None
            except S3Unavailable as exc:
                if exc.code in {"access_denied", "s3_error"}:
                    return None  # not readable with this policy, or not configured on this server
                raise

        async def lock_config() -> Any:
            # Object Lock: "not configured" (a 404) is a fact ({} -> False); "not allowed to read it" stays unknown
            # (None), so per-object HEADs are never skipped on a guess.
            try:
                return await self._call("get_object_lock_configuration", meter, Bucket=bucket)
            except S3Missing:
                return {}
            except S3Unavailable as exc:
                if exc.code not in {"access_denied", "s3_error"}:
                    raise
                return None

        # The four requests are independent: sent together (one round trip, not four). Each ends on its own
        # (bounded by the location's timeouts); the first failure, in this order, is raised.
        answers = await asyncio.gather(optional("get_bucket_location"), optional("get_bucket_versioning"),
                                       lock_config(), optional("get_bucket_encryption"), return_exceptions=True)
        values: list[Any] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            values.append(answer)
        loc, ver, lock, enc = values
        region: str | None = None
        if loc is not None:
            constraint = loc.get("LocationConstraint")
            region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(constraint, constraint)
        versioning = "unknown" if ver is None else ver.get("Status", "Disabled")
        lock_cfg = (lock or {}).get("ObjectLockConfiguration", {})
        object_lock = None if lock is None else lock_cfg.get("ObjectLockEnabled") == "Enabled"
        default_mode = lock_cfg.get("Rule", {}).get("DefaultRetention", {}).get("Mode")
        kms = algo = None
        for rule in (enc or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", []):
            default = rule.get("ApplyServerSideEncryptionByDefault", {})
            algo = default.get("SSEAlgorithm", algo)
            kms = default.get("KMSMasterKeyID", kms)
        return BucketFacts(region, versioning, object_lock, default_mode, kms, algo)

    async def replication(self, meter: RequestMeter | None = None) -> dict[str, Any] | None:
        """The bucket's replication configuration (GetBucketReplication, read-only); None when the bucket has
        none. Denied, unreachable... raise :class:`S3Unavailable`; a missing bucket :class:`S3Missing`."""
        try:
            resp = await self._call("get_bucket_replication", meter, Bucket=self.cfg.bucket)
        except S3Missing as exc:
            if exc.what == "ReplicationConfigurationNotFoundError":
                return None
            raise
        config: dict[str, Any] = resp.get("ReplicationConfiguration") or {}
        return config

    async def listed(self, prefix: str, meter: RequestMeter | None = None) -> AsyncIterator[list[ListedObject]]:
        """The objects under ``prefix`` (full keys) in key order, a page at a time. On the lean path the
        prefix's common prefixes are listed concurrently when the listing is longer than one page
        (``list_concurrency`` requests in flight, each a few pages ahead: ``storage/s3list.py``); bounded memory."""
        from drwatch.storage.s3list import split_pages

        async def fetch(base: str, token: str | None, delimiter: str | None, after: str | None) -> ListPage:
            return await self._page(base, token, delimiter, after, meter)

        window = self.cfg.list_concurrency
        pages = split_pages(fetch, prefix, window, max(2, _LIST_AHEAD // window))
        try:
            async for page in pages:
                yield page
        except s3_errors() as exc:
            raise classify(exc, self.name) from None
        finally:
            await pages.aclose()  # type: ignore[attr-defined]

    async def objects(self, prefix: str, meter: RequestMeter | None = None) -> AsyncIterator[S3Object]:
        """Stream objects under prefix in key order, keys relative to the prefix (see :meth:`listed`)."""
        base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        cut = len(base)
        pages = self.listed(base, meter)
        try:
            async for page in pages:
                for obj in page:
                    key = obj.key[cut:]
                    if not key or key.endswith("/"):
                        continue  # the prefix itself or a "directory" marker
                    yield S3Object(key=key, size=obj.size, etag=obj.etag, last_modified=obj.last_modified,
                                   storage_class=obj.storage_class, checksum_listed=bool(obj.checksum_algorithm),
                                   checksum_algorithm=obj.checksum_algorithm)
        finally:
            await pages.aclose()  # type: ignore[attr-defined]

    async def _page(self, base: str, token: str | None, delimiter: str | None, after: str | None,
                    meter: RequestMeter | None) -> ListPage:
        """One ListObjectsV2 page: the lean path where it applies, else aioboto3. Raises botocore errors."""
        from botocore.exceptions import ClientError

        from drwatch.storage.s3list import ListedObject, ListPage

        op = "list_objects_v2"
        if self.lean_path:
            lean = await self.lean()
            try:
                page, attempts = await lean.list_page(base, token, delimiter, after)
            except ClientError as exc:
                if meter is not None:
                    meter.count(op, _attempts(exc.response.get("ResponseMetadata")))
                raise
            if meter is not None:
                meter.count(op, attempts)
            return page
        kwargs: dict[str, Any] = {"Bucket": self.cfg.bucket, "Prefix": base}
        if token is not None:
            kwargs["ContinuationToken"] = token
        if delimiter is not None:
            kwargs["Delimiter"] = delimiter
        if after is not None:
            kwargs["StartAfter"] = after
        client = await self.client()
        try:
            resp = await client.list_objects_v2(**kwargs)
        except ClientError as exc:
            if meter is not None:
                meter.count(op, _attempts(exc.response.get("ResponseMetadata")))
            raise
        if meter is not None:
            meter.count(op, _attempts(resp.get("ResponseMetadata")))
        return ListPage([ListedObject(
            key=str(obj["Key"]), size=int(obj["Size"]), etag=str(obj.get("ETag", "")).strip('"'),
            last_modified=_ts(obj.get("LastModified")), storage_class=str(obj.get("StorageClass") or "STANDARD"),
            checksum_algorithm=(obj.get("ChecksumAlgorithm") or [None])[0]) for obj in resp.get("Contents", [])],
            resp.get("NextContinuationToken") if resp.get("IsTruncated") else None,
            [str(p["Prefix"]) for p in resp.get("CommonPrefixes", [])])

    async def head(self, key: str, meter: RequestMeter | None = None) -> ObjectHead:
        if not self.lean_path:
            async with self.head_sem:
                resp = await self._call("head_object", meter, Bucket=self.cfg.bucket, Key=key,
                                        ChecksumMode="ENABLED")
            return _head_from_boto(resp)
        from botocore.exceptions import ClientError

        lean = await self.lean()
        async with self.head_sem:
            try:
                headers, attempts = await lean.head(key)
            except ClientError as exc:
                if meter is not None:
                    meter.count("head_object", _attempts(exc.response.get("ResponseMetadata")))
                raise classify(exc, self.name) from None
            except Exception as exc:
                if meter is not None:
                    meter.count("head_object", 1)
                raise classify(exc, self.name) from None
        if meter is not None:
            meter.count("head_object", attempts)
        return _head_from_headers(headers)

    async def sha256(self, key: str, meter: RequestMeter | None = None, algorithm: str = "sha256") -> tuple[str, int]:
        """Read the whole object and hash it (sha256 or a seal's ``algorithm``; in a worker thread, bounded memory)."""
        digest = new_hash(algorithm)  # before the GET: an algorithm that cannot be computed here costs no request
        total = await self._read_body(key, meter, digest.update)  # (the digest is read after the body)
        return digest.hexdigest(), total

    async def read_range(self, key: str, nbytes: int, meter: RequestMeter | None = None) -> int:
        """Read the first ``nbytes`` of the object and drop them (a timed throughput sample); the bytes read."""
        return await self._read_body(key, meter, None, Range=f"bytes=0-{max(0, nbytes - 1)}")

    async def _read_body(self, key: str, meter: RequestMeter | None, consume: Callable[[bytes], object] | None,
                         **extra: Any) -> int:  # bounded memory: chunk by chunk
        resp = await self._call("get_object", meter, Bucket=self.cfg.bucket, Key=key, **extra)
        total, body = 0, resp["Body"]
        try:
            while chunk := await body.read(_READ_CHUNK):
                total += len(chunk)
                if meter is not None:
                    meter.egress_bytes += len(chunk)
                if consume is not None:
                    await asyncio.to_thread(consume, chunk)
        except s3_errors() as exc:
            raise classify(exc, self.name) from None
        finally:
            body.close()
        return total

    # --- the canary (immutability_probe only) -------------------------------------------------

    async def put_canary(self, key: str, body: bytes, retain_until: datetime, content_md5: str) -> str:
        """The one write drwatch makes, under the location's canary_prefix (immutability_probe)."""
        prefix = (self.cfg.canary_prefix or "").strip("/")
        if not prefix or not key.startswith(prefix + "/"):
            raise ValueError("refusing to write outside the canary prefix")
        resp = await self._call(
            "put_object", Bucket=self.cfg.bucket, Key=key, Body=body, ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=retain_until, ContentMD5=content_md5,
        )
        return str(resp.get("VersionId") or "")

    async def head_version(self, key: str, version_id: str) -> ObjectHead | None:
        try:
            async with self.head_sem:
                resp = await self._call("head_object", Bucket=self.cfg.bucket, Key=key, VersionId=version_id)
        except S3Missing:
            return None
        return ObjectHead(
            lock_mode=resp.get("ObjectLockMode"),
            retain_until=_ts(resp.get("ObjectLockRetainUntilDate")) if resp.get("ObjectLockRetainUntilDate") else None,
            version_id=resp.get("VersionId"),
        )

    async def delete_version(self, key: str, version_id: str) -> None:
        """Only ever called by the probe on its own canary, which COMPLIANCE lock must protect."""
        prefix = (self.cfg.canary_prefix or "").strip("/")
        if not prefix or not key.startswith(prefix + "/"):
            raise ValueError("refusing to delete outside the canary prefix")
        await self._call("delete_object", Bucket=self.cfg.bucket, Key=key, VersionId=version_id)

    async def list_versions(self, prefix: str) -> list[dict[str, Any]]:
        resp = await self._call("list_object_versions", Bucket=self.cfg.bucket, Prefix=prefix)
        return list(resp.get("Versions", []))


class S3Pool:
    """The S3 locations of a config, created lazily, closed together (one client per location)."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._locations: dict[str, S3Location] = {}
        # Locations whose config changed on a reload: a run that started before may still be using one
        # (closing it under that run would break its requests), so they are closed with the pool.
        self._retired: list[S3Location] = []

    def get(self, name: str, cfg: S3LocationConfig) -> S3Location:
        have = self._locations.get(name)
        if have is not None and have.cfg == cfg:
            return have
        creds = resolve_credentials(name, cfg, self.base_dir)
        loc = S3Location(name, cfg, creds)
        self._locations[name] = loc
        if have is not None:
            self._retired.append(have)
        return loc

    async def close(self) -> None:
        locations, self._locations = [*self._locations.values(), *self._retired], {}
        self._retired = []
        for loc in locations:
            await loc.close()
