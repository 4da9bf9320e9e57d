"""S3 locations (aioboto3): one client per location, reused and closed on shutdown.

Everything here reads. The only write drwatch ever makes to a backup location is the opt-in canary of
the ``immutability_probe`` validator, under the location's ``canary_prefix`` (see that validator).

Errors are mapped to honest outcomes by :func:`classify`: access denied, throttling, unreachable
endpoints and timeouts are "could not check" (``ValidatorError``); a missing bucket or key is a fact
about the backup that callers turn into findings.
"""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drwatch.core.errors import ConfigError, ValidatorError
from drwatch.core.secrets import read_secret
from drwatch.storage.config import S3LocationConfig
from drwatch.storage.hashing import new_hash

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

    from drwatch.storage.s3lean import LeanS3, ListPage


def s3_errors() -> tuple[type[BaseException], ...]:
    """What a failing S3 call raises (botocore's roots, aiohttp's, OSError, TimeoutError). botocore is
    imported on first use throughout this module: it costs ~0.15 s of start-up that a ``check`` of filesystem
    assets never needs (benchmarks/startup_bench.py; tests/test_startup.py keeps it out)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError, OSError, TimeoutError, *_http_errors())


def _http_errors() -> tuple[type[BaseException], ...]:
    """aiohttp errors botocore does not wrap (a body cut off by a dying server). aiohttp is imported by
    aioboto3 with the first client, so no such error can exist before; importing it here would cost every
    command (check-config included) ~0.3 s."""
    mod = sys.modules.get("aiohttp")
    return (mod.ClientError,) if mod is not None else ()


ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"})
FULL_OBJECT_ALGORITHMS = ("CRC64NVME", "SHA256", "SHA1", "CRC32C", "CRC32")
_READ_CHUNK = 1024 * 1024
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
           "AllAccessDisabled", "AccountProblem", "403"}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503",
              "ServiceUnavailable", "InternalError", "500", "RequestTimeout"}
_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchVersion"}
_ARCHIVED = {"InvalidObjectState"}  # GET of a GLACIER/DEEP_ARCHIVE object that was not restored


@dataclass(frozen=True)
class S3Object:
    key: str  # relative to the copy's prefix
    size: int
    etag: str
    last_modified: float
    storage_class: str = "STANDARD"
    version_id: str | None = None
    checksum_listed: bool = False  # the listing names an additional checksum algorithm for the object
    checksum_algorithm: str | None = None  # that algorithm (CRC32, CRC64NVME, SHA256...)


@dataclass(frozen=True)
class ObjectHead:
    checksums: dict[str, str] = field(default_factory=dict)  # algorithm -> base64 (full-object only)
    composite: dict[str, str] = field(default_factory=dict)  # algorithm -> value (multipart composite)
    lock_mode: str | None = None
    retain_until: float | None = None
    legal_hold: bool = False
    version_id: str | None = None
    storage_class: str = "STANDARD"
    etag: str = ""


@dataclass(frozen=True)
class BucketFacts:
    region: str | None  # observed (GetBucketLocation); None if not allowed to read it
    versioning: str  # Enabled | Suspended | Disabled | unknown
    object_lock: bool | None
    default_lock_mode: str | None
    kms_key_arn: str | None
    encryption: str | None  # AES256 | aws:kms | None


# API operations -> the bounded ``operation`` label of the request counters.
_OPERATIONS = {"list_objects_v2": "list", "head_object": "head", "get_object": "get"}


class RequestMeter:
    """What drwatch sent to one location for one source of one run: HTTP requests by operation (retries
    included, as botocore reports them) and object bytes received (GET bodies). Listing and HEAD responses
    carry a few hundred bytes of XML/headers each and are not counted as egress; they are counted as
    requests."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.requests: dict[str, int] = {}
        self.egress_bytes = 0

    def count(self, op: str, attempts: int) -> None:
        label = _OPERATIONS.get(op, "bucket")
        self.requests[label] = self.requests.get(label, 0) + attempts

    def total(self) -> int:
        return sum(self.requests.values())


def _attempts(meta: Any) -> int:
    """HTTP requests one API call sent: the first plus botocore's retries."""
    try:
        return 1 + int((meta or {}).get("RetryAttempts", 0))
    except (TypeError, ValueError):
        return 1


class S3Unavailable(ValidatorError):
    """Could not talk to the S3 endpoint as needed (denied, throttled, unreachable, timed out)."""


class S3Missing(Exception):
    """The bucket or key does not exist."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


def _code(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code or status


def classify(exc: BaseException, location: str) -> Exception:
    """Map a botocore exception to S3Missing (a fact) or S3Unavailable (could not check)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        code = _code(exc)
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _MISSING or status == "404":
            return S3Missing(code)
        if code in _ARCHIVED:
            # A 403 that is not about permissions: the object must be restored before it can be read.
            return S3Unavailable("archived", f"S3 location {location!r}: object is in an archive storage class "
                                 "and not restored; it cannot be read")
        if code in _DENIED or status == "403":
            return S3Unavailable("access_denied", f"S3 location {location!r} denied access ({code})")
        if code in _THROTTLED or status.startswith("5"):
            return S3Unavailable("throttled", f"S3 location {location!r} is throttling or failing ({code})")
        return S3Unavailable("s3_error", f"S3 location {location!r} answered {code}")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return S3Unavailable("unreachable", f"S3 location {location!r} is unreachable")
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return S3Unavailable("timeout", f"S3 location {location!r} timed out")
    if isinstance(exc, NoCredentialsError):
        return S3Unavailable("no_credentials", f"no credentials found for S3 location {location!r}")
    if isinstance(exc, (BotoCoreError, OSError, *_http_errors())):
        # HTTPClientError: aiohttp errors botocore does not wrap, e.g. a body cut off by a dying server
        return S3Unavailable("unreachable", f"S3 location {location!r}: {type(exc).__name__}")
    raise exc


@dataclass(frozen=True)
class Credentials:
    access_key_id: str | None
    secret_access_key: str | None
    session_token: str | None
    profile: str | None

    @property
    def identity(self) -> str:
        """What makes two locations share credentials (never the secret itself)."""
        if self.access_key_id:
            return f"key:{self.access_key_id}"
        if self.profile:
            return f"profile:{self.profile}"
        return "default-chain"


def resolve_credentials(name: str, loc: S3LocationConfig, base_dir: Path) -> Credentials:
    """The location's keys; a key that cannot be read (variable unset, file missing or empty) is a
    ValidatorError ``secret_unavailable`` (the check that needs it ends as ``error``), never an empty key."""
    def get(field_name: str) -> str | None:
        env = getattr(loc, f"{field_name}_env")
        file = getattr(loc, f"{field_name}_file")
        if env is None and file is None:
            return None
        try:
            return read_secret(f"locations.{name}.{field_name}", env=env, file=file, base_dir=base_dir)
        except ConfigError as exc:
            raise ValidatorError("secret_unavailable", "; ".join(str(p) for p in exc.problems)) from None

    return Credentials(get("access_key_id"), get("secret_access_key"), get("session_token"), loc.profile)


def _b64_to_hex(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).hex()
    except ValueError:
        return None


def sha256_hex_to_b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


_SHARED_SESSION: list[Any] = []  # the aioboto3 session every location with explicit keys uses


def _session(creds: Credentials) -> Any:
    """The aioboto3 session a location's client is made from.

    A session parses botocore's service models once; a new session per location cost ~0.2-0.4 s of CPU
    on the event loop for every client. Locations with explicit keys (passed per client, never stored in
    the session, so its credential chain is never consulted) share one. A profile or the default chain is
    resolved by the session itself: such a location keeps a session of its own, as before.
    """
    import aioboto3  # heavy: imported on first use, not when loading a config

    if creds.access_key_id is None:
        from botocore.exceptions import ProfileNotFound

        try:
            return aioboto3.Session(profile_name=creds.profile)
        except ProfileNotFound:  # could not check (no credentials here), never a crash
            raise ValidatorError("no_credentials", f"AWS profile {creds.profile!r} is not configured on this host "
                                 "(AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE, ~/.aws/, or the unit's "
                                 "drwatch-aws-credentials credential)") from None
    if not _SHARED_SESSION:
        _SHARED_SESSION.append(aioboto3.Session())
    return _SHARED_SESSION[0]


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
        neither endpoint nor region declared stays on aioboto3, whose region redirector finds the bucket's
        region."""
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

                session = _session(self.creds)
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

    async def objects(self, prefix: str, meter: RequestMeter | None = None) -> AsyncIterator[S3Object]:
        """Stream objects under prefix in key order (ListObjectsV2 pages), keys relative to the prefix.

        The next page is requested while the current one is consumed (one page ahead: memory stays
        independent of the object count), so the listings of production and its copies run concurrently
        with each other and with the merge."""
        base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        ahead: asyncio.Task[ListPage] | None = None
        try:
            ahead = asyncio.ensure_future(self._page(base, None, meter))
            while True:
                page = await ahead
                ahead = None
                if page.next_token:
                    ahead = asyncio.ensure_future(self._page(base, page.next_token, meter))
                for obj in page.objects:
                    key = obj.key[len(base):]
                    if not key or key.endswith("/"):
                        continue  # the prefix itself or a "directory" marker
                    yield S3Object(key=key, size=obj.size, etag=obj.etag, last_modified=obj.last_modified,
                                   storage_class=obj.storage_class, checksum_listed=bool(obj.checksum_algorithm),
                                   checksum_algorithm=obj.checksum_algorithm)
                if ahead is None:
                    break
        except s3_errors() as exc:
            raise classify(exc, self.name) from None
        finally:
            if ahead is not None and not ahead.done():
                # A consumer that stops early (or is cancelled): the page in flight goes with it, now.
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            elif ahead is not None and not ahead.cancelled():
                ahead.exception()  # its result or error is no longer wanted; mark it retrieved

    async def _page(self, base: str, token: str | None, meter: RequestMeter | None) -> ListPage:
        """One ListObjectsV2 page: the lean path where it applies, else aioboto3. Raises botocore errors."""
        from botocore.exceptions import ClientError

        from drwatch.storage.s3lean import ListedObject, ListPage

        if self.lean_path:
            lean = await self.lean()
            try:
                page, attempts = await lean.list_page(base, token)
            except ClientError as exc:
                if meter is not None:
                    meter.count("list_objects_v2", _attempts(exc.response.get("ResponseMetadata")))
                raise
            if meter is not None:
                meter.count("list_objects_v2", attempts)
            return page
        kwargs: dict[str, Any] = {"Bucket": self.cfg.bucket, "Prefix": base}
        if token is not None:
            kwargs["ContinuationToken"] = token
        client = await self.client()
        try:
            resp = await client.list_objects_v2(**kwargs)
        except ClientError as exc:
            if meter is not None:
                meter.count("list_objects_v2", _attempts(exc.response.get("ResponseMetadata")))
            raise
        if meter is not None:
            meter.count("list_objects_v2", _attempts(resp.get("ResponseMetadata")))
        return ListPage([ListedObject(
            key=str(obj["Key"]), size=int(obj["Size"]), etag=str(obj.get("ETag", "")).strip('"'),
            last_modified=_ts(obj.get("LastModified")), storage_class=str(obj.get("StorageClass") or "STANDARD"),
            checksum_algorithm=(obj.get("ChecksumAlgorithm") or [None])[0]) for obj in resp.get("Contents", [])],
            resp.get("NextContinuationToken") if resp.get("IsTruncated") else None)

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
        """Read the whole object and hash it with sha256 or a seal's ``algorithm`` (hashing in a worker thread,
        bounded memory)."""
        digest = new_hash(algorithm)  # before the GET: an algorithm that cannot be computed here costs no request
        resp = await self._call("get_object", meter, Bucket=self.cfg.bucket, Key=key)
        total = 0
        body = resp["Body"]
        try:
            while True:
                chunk = await body.read(_READ_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if meter is not None:
                    meter.egress_bytes += len(chunk)
                await asyncio.to_thread(digest.update, chunk)
        except s3_errors() as exc:
            raise classify(exc, self.name) from None
        finally:
            body.close()
        return digest.hexdigest(), total

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


def _ts(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return 0.0


def _split_checksums(values: dict[str, str], ctype: str) -> tuple[dict[str, str], dict[str, str]]:
    """Full-object checksums and multipart composites (a composite value ends with "-N")."""
    checksums: dict[str, str] = {}
    composite: dict[str, str] = {}
    for algo, value in values.items():
        if ctype == "COMPOSITE" or "-" in value:
            composite[algo] = value
        else:
            checksums[algo] = value
    return checksums, composite


def _head_from_boto(resp: dict[str, Any]) -> ObjectHead:
    values = {a: str(resp[f"Checksum{a}"]) for a in FULL_OBJECT_ALGORITHMS if resp.get(f"Checksum{a}")}
    checksums, composite = _split_checksums(values, str(resp.get("ChecksumType") or ""))
    return ObjectHead(
        checksums=checksums,
        composite=composite,
        lock_mode=resp.get("ObjectLockMode"),
        retain_until=_ts(resp.get("ObjectLockRetainUntilDate")) if resp.get("ObjectLockRetainUntilDate") else None,
        legal_hold=resp.get("ObjectLockLegalHoldStatus") == "ON",
        version_id=resp.get("VersionId"),
        storage_class=str(resp.get("StorageClass") or "STANDARD"),
        etag=str(resp.get("ETag", "")).strip('"'),
    )


def _head_from_headers(h: dict[str, str]) -> ObjectHead:
    """The same ObjectHead from the raw HeadObject response headers (lower-case names) of the lean path."""
    from drwatch.storage.s3lean import parse_time

    values = {a: v for a in FULL_OBJECT_ALGORITHMS if (v := h.get(f"x-amz-checksum-{a.lower()}"))}
    checksums, composite = _split_checksums(values, h.get("x-amz-checksum-type", ""))
    retain = h.get("x-amz-object-lock-retain-until-date")
    return ObjectHead(
        checksums=checksums,
        composite=composite,
        lock_mode=h.get("x-amz-object-lock-mode") or None,
        retain_until=parse_time(retain) if retain else None,
        legal_hold=h.get("x-amz-object-lock-legal-hold") == "ON",
        version_id=h.get("x-amz-version-id") or None,
        storage_class=h.get("x-amz-storage-class") or "STANDARD",
        etag=h.get("etag", "").strip('"'),
    )


def checksum_matches_sha256(head: ObjectHead, sha256_hex: str) -> bool | None:
    """True/False if the object's full-object SHA256 checksum decides it, None if it has none."""
    value = head.checksums.get("SHA256")
    if value is None:
        return None
    return _b64_to_hex(value) == sha256_hex


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
