"""Sources: one production or copy location seen through one interface, for the ``replica`` merge.

A source can be probed (is it there?), listed in key order, read-and-hashed per entry, HEADed (S3:
checksums, lock state) and asked for its observed facts (media, region). Filesystem and S3 sources
implement it; later location kinds add a class here.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from drwatch.model import Finding, Severity
from drwatch.storage.config import FilesystemLocationConfig, S3LocationConfig
from drwatch.storage.filesystem import Entry, HashPool, alist, filesystem_type, media_class
from drwatch.storage.s3 import ARCHIVE_CLASSES, BucketFacts, ObjectHead, RequestMeter, S3Location, S3Missing


class Probe:
    OK = "ok"
    ROOT_MISSING = "root_missing"  # location reachable, the copy itself is gone -> a bad backup
    UNAVAILABLE = "unavailable"  # could not check
    OFFLINE = "offline"  # declared offline and not present


@dataclass
class Facts:
    media: str = "unknown"
    media_observed: bool = False
    region: str = ""
    region_observed: bool = False
    provider: str = ""
    versioning: str = ""
    kms_key_arn: str | None = None
    credential_identity: str | None = None
    findings: list[Finding] = field(default_factory=list)


class Source(Protocol):
    name: str
    role: str
    location: str
    kind: str
    offline: bool
    site: str

    async def probe(self) -> tuple[str, str]: ...
    def entries(self) -> AsyncIterator[Entry]: ...
    async def sha256(self, entry: Entry) -> tuple[str, int]: ...
    async def head(self, entry: Entry) -> ObjectHead | None: ...
    async def facts(self, storage_classes: set[str], provider_media: bool) -> Facts: ...


def _dir_state(path: Path) -> str:
    """``ok``, ``empty``, ``absent`` (no such directory), ``unmounted`` (a stale or disconnected mount),
    ``unreadable`` (permission) or the errno name of another failure (EMFILE, EIO...): never a guess that
    turns "cannot look" into "not there" (blocking)."""
    try:
        with os.scandir(path) as it:
            return "ok" if next(it, None) is not None else "empty"
    except (FileNotFoundError, NotADirectoryError):
        return "absent"
    except PermissionError:
        return "unreadable"
    except OSError as exc:
        if exc.errno in (errno.ENOTCONN, errno.ESTALE):
            return "unmounted"
        return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


class FilesystemSource:
    kind = "filesystem"

    def __init__(self, name: str, role: str, location: str, cfg: FilesystemLocationConfig, base: Path,
                 prefix: str, hashes: HashPool) -> None:
        self.name, self.role, self.location, self.cfg = name, role, location, cfg
        self.base = base
        self.root = base.joinpath(*prefix.split("/")) if prefix else base
        self.hashes = hashes
        self.offline = cfg.offline
        self.site = cfg.site

    async def probe(self) -> tuple[str, str]:
        """Whether the location is there, and this copy's directory in it.

        An existing but empty location directory that is not a mount point is what an unmounted disk, tape
        or USB drive looks like (its mount point): that is "not mounted" (offline for an offline location,
        else could not check), never a missing copy. A wiped location that is itself mounted (a mount
        point) is a missing copy (the backup is bad)."""
        base, root = await asyncio.to_thread(_dir_state, self.base), await asyncio.to_thread(_dir_state, self.root)
        if base == "empty" and root in ("absent", "empty") and not await asyncio.to_thread(os.path.ismount, self.base):
            if self.offline:
                return Probe.OFFLINE, "offline copy not mounted (its mount point is empty)"
            return Probe.UNAVAILABLE, (f"location {self.location!r} is an empty directory and not a mount point: "
                                       "not mounted?")
        if base in ("absent", "unmounted"):
            if self.offline:
                return Probe.OFFLINE, "offline copy not mounted"
            return Probe.UNAVAILABLE, f"location {self.location!r} is not mounted or not readable ({base})"
        if base not in ("ok", "empty"):
            return Probe.UNAVAILABLE, f"location {self.location!r} cannot be read ({base})"
        if root == "absent":
            return Probe.ROOT_MISSING, "the copy's directory does not exist"
        if root not in ("ok", "empty"):
            return Probe.UNAVAILABLE, f"the copy's directory cannot be read ({root})"
        return Probe.OK, ""

    def entries(self) -> AsyncIterator[Entry]:
        return alist(self.root)

    async def sha256(self, entry: Entry) -> tuple[str, int]:
        return await self.hashes.sha256(self.root.joinpath(*entry.parts))

    async def head(self, entry: Entry) -> ObjectHead | None:
        return None

    async def facts(self, storage_classes: set[str], provider_media: bool) -> Facts:
        fstype = await asyncio.to_thread(filesystem_type, self.root)
        observed = media_class(fstype)
        declared = self.cfg.media
        facts = Facts(media=observed or declared or "unknown", media_observed=observed is not None,
                      region=self.cfg.region, provider=self.cfg.provider)
        if observed is not None and declared is not None and declared != observed:
            facts.findings.append(Finding(
                Severity.WARNING, "media_contradiction",
                f"declared media {declared!r} but the filesystem is {fstype} ({observed}); using the observed media",
                self.name))
        return facts


class S3Source:
    kind = "s3"

    def __init__(self, name: str, role: str, location: str, cfg: S3LocationConfig, client: S3Location,
                 prefix: str) -> None:
        self.name, self.role, self.location, self.cfg = name, role, location, cfg
        self.client = client
        self.prefix = prefix
        self.offline = cfg.offline
        self.site = cfg.site
        self.bucket: BucketFacts | None = None
        self.listed_classes: set[str] = set()  # storage classes in the listing (production is never HEADed)
        self.meter = RequestMeter(location)  # what this source sent in this run (verification economy)

    async def probe(self) -> tuple[str, str]:
        if not await self.client.bucket_exists(self.meter):
            return Probe.ROOT_MISSING, f"bucket {self.cfg.bucket!r} does not exist"
        self.bucket = await self.client.bucket_facts(self.meter)
        return Probe.OK, ""

    async def entries(self) -> AsyncIterator[Entry]:
        base = self.prefix.strip("/")
        canary = (self.cfg.canary_prefix or "").strip("/")
        try:
            async for obj in self.client.objects(self.prefix, self.meter):
                if canary and (f"{base}/{obj.key}" if base else obj.key).startswith(canary + "/"):
                    continue  # the immutability probe's own canary is no part of any recovery point
                self.listed_classes.add(obj.storage_class)
                yield Entry(obj.key, obj.size, obj.last_modified, etag=obj.etag, storage_class=obj.storage_class,
                            checksum_listed=obj.checksum_listed)
        except S3Missing:
            # The bucket vanished while it was listed (it existed at the probe): like a directory that went.
            raise FileNotFoundError(f"bucket {self.cfg.bucket!r}") from None

    def _key(self, entry: Entry) -> str:
        base = self.prefix.strip("/")
        return f"{base}/{entry.key}" if base else entry.key

    async def sha256(self, entry: Entry) -> tuple[str, int]:
        try:
            return await self.client.sha256(self._key(entry), self.meter)
        except S3Missing:
            raise FileNotFoundError(entry.key) from None

    async def head(self, entry: Entry) -> ObjectHead | None:
        """The object's lock state and checksums. Skipped (answered from the listing) when it cannot add
        anything: the bucket is known to have no Object Lock and the listing shows no checksum — then no
        object can be locked and the ETag is already the best evidence (saves one request per object)."""
        bucket = self.bucket
        if bucket is not None and bucket.object_lock is False and not entry.checksum_listed:
            return ObjectHead(etag=entry.etag or "", storage_class=entry.storage_class or "STANDARD")
        try:
            return await self.client.head(self._key(entry), self.meter)
        except S3Missing:
            raise FileNotFoundError(entry.key) from None

    async def facts(self, storage_classes: set[str], provider_media: bool) -> Facts:
        bucket = self.bucket
        storage_classes = storage_classes or self.listed_classes
        archive = bool(storage_classes) and storage_classes <= ARCHIVE_CLASSES
        media = "archive" if archive else "object-storage"
        if provider_media:
            media = f"{media}/{self.cfg.provider}"
        facts = Facts(media=media, media_observed=True, provider=self.cfg.provider,
                      credential_identity=self.client.creds.identity)
        if bucket is not None:
            facts.versioning = bucket.versioning
            facts.kms_key_arn = bucket.kms_key_arn
            if bucket.region:
                facts.region, facts.region_observed = bucket.region, True
        if not facts.region_observed:
            facts.region = self.cfg.region or ""
        declared = self.cfg.region
        if declared and facts.region_observed and declared != facts.region:
            facts.findings.append(Finding(
                Severity.WARNING, "region_contradiction",
                f"declared region {declared!r} but the bucket is in {facts.region!r}; using the observed region",
                self.name))
        if self.cfg.media is not None and self.cfg.media != media:
            facts.findings.append(Finding(
                Severity.WARNING, "media_contradiction",
                f"declared media {self.cfg.media!r} but the objects' storage class says {media!r}", self.name))
        return facts
