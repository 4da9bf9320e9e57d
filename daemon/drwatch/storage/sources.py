"""Sources: one production or copy location seen through one interface, for the ``replica`` merge.

A source can be probed (is it there?), listed in key order, read-and-hashed per entry, HEADed (S3:
checksums, lock state) and asked for its observed facts (media, region). Filesystem and S3 sources
implement it; later location kinds add a class here.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from drwatch.core.model import Finding, Severity
from drwatch.storage.config import FilesystemLocationConfig, S3LocationConfig
from drwatch.storage.filesystem import VOLATILE_MEDIA, Entry, HashPool, alist, media_class, mount_of
from drwatch.storage.readclock import ReadClock
from drwatch.storage.s3 import ARCHIVE_CLASSES, BucketFacts, ObjectHead, RequestMeter, S3Location, S3Missing

if TYPE_CHECKING:
    from drwatch.storage.inventory import InventorySource


class Probe:
    OK = "ok"
    ROOT_MISSING = "root_missing"  # location reachable, the copy itself is gone -> a bad backup
    UNAVAILABLE = "unavailable"  # could not check
    OFFLINE = "offline"  # declared offline and not present
    ALIAS = "alias"  # the copy's directory is production's (or another copy's): no copy at all


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
    device: str = ""  # filesystem: major:minor of st_dev (observed)
    mount_source: str = ""  # filesystem: block device / NFS export / CIFS share it is mounted from (observed)
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
    async def sha256(self, entry: Entry, algorithm: str = "sha256",
                     clock: ReadClock | None = None) -> tuple[str, int]: ...
    async def head(self, entry: Entry, ref: Entry | None = None) -> ObjectHead | None: ...
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
        # Production and the copies before this one (filesystem roots): a copy's directory or file that is
        # one of theirs is no copy. Set by whoever opens the asset's sources (``copy_sources``).
        self.peers: list[tuple[str, Path]] = []
        self.linked: dict[str, int] = {}  # peer -> files of this copy that are that peer's own inodes
        self.first_linked: list[str] = []
        self._links: dict[str, frozenset[tuple[int, int]]] = {}  # peer -> its multiply-linked inodes (this run)

    def _alias(self) -> str | None:
        """The peer whose directory this copy's directory is, resolved now (a symlink or bind mount swapped
        in while drwatch runs is seen on the next run). Blocking."""
        try:
            mine = os.stat(self.root)
            real = os.path.realpath(self.root)
        except OSError:
            return None
        for name, root in self.peers:
            try:
                theirs = os.stat(root)
            except OSError:
                continue
            if (theirs.st_dev, theirs.st_ino) == (mine.st_dev, mine.st_ino) or os.path.realpath(root) == real:
                return name
        return None

    def _own(self, key: str, st: os.stat_result) -> bool:
        """False for a file that is a peer's own inode (a hard link to production's file, ``cp -al``): it
        holds no second copy of the bytes. Runs in the listing thread.

        Only files with more than one link are looked at: first the peer's file of the same key (one stat),
        then, for a hard link on a peer's device under another name, the peer's multiply-linked inodes
        (collected once per run by walking the peer: a set as large as its hard-linked files, usually none)."""
        if st.st_nlink < 2:
            return True
        mine = (st.st_dev, st.st_ino)
        for name, root in self.peers:
            try:
                theirs = os.stat(root.joinpath(*key.split("/")), follow_symlinks=False)
            except OSError:
                continue
            if (theirs.st_dev, theirs.st_ino) == mine:
                return self._linked_to(name, key)
        for name, root in self.peers:
            if mine in self._peer_links(name, root, st.st_dev):
                return self._linked_to(name, key)
        return True

    def _linked_to(self, peer: str, key: str) -> bool:
        self.linked[peer] = self.linked.get(peer, 0) + 1
        if len(self.first_linked) < 5:
            self.first_linked.append(key)
        return False

    def _peer_links(self, name: str, root: Path, dev: int) -> frozenset[tuple[int, int]]:
        """The (device, inode) of the peer's files that have more than one link, when the peer's directory is on
        ``dev`` (a hard link cannot cross devices); walked once per listing. Blocking."""
        if name not in self._links:
            found: set[tuple[int, int]] = set()
            try:
                same_dev = os.stat(root).st_dev == dev
            except OSError:
                same_dev = False
            if same_dev:
                for path, dirs, files in os.walk(root):
                    dirs.sort()
                    for f in files:
                        try:
                            lst = os.lstat(os.path.join(path, f))
                        except OSError:
                            continue
                        if stat.S_ISREG(lst.st_mode) and lst.st_nlink > 1:
                            found.add((lst.st_dev, lst.st_ino))
            self._links[name] = frozenset(found)
        return self._links[name]

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
        if self.peers and (peer := await asyncio.to_thread(self._alias)) is not None:
            what = "production's directory" if peer == "production" else f"the directory of copy {peer!r}"
            return Probe.ALIAS, (f"the copy's directory {self.root} is {what} "
                                 f"({await asyncio.to_thread(os.path.realpath, self.root)}): no copy at all")
        return Probe.OK, ""

    def entries(self, on_unreadable: Callable[[str, OSError], None] | None = None) -> AsyncIterator[Entry]:
        """The files of this location in key order; a copy's files that are a peer's inodes are passed over
        (counted in ``linked``, reported by :meth:`facts`)."""
        self.linked.clear()
        self.first_linked.clear()
        self._links.clear()
        return alist(self.root, on_unreadable=on_unreadable, keep=self._own if self.peers else None)

    def path(self, entry: Entry) -> str:
        return f"{self.root}/{entry.key}"  # keys are '/'-separated relative paths (no pathlib per file)

    async def sha256(self, entry: Entry, algorithm: str = "sha256",
                     clock: ReadClock | None = None) -> tuple[str, int]:
        """Hex digest (sha256, or a seal's ``algorithm``) and bytes read of the file; ``clock`` times the read
        (in the thread that does it: see :mod:`drwatch.storage.readclock`)."""
        return await self.hashes.sha256(self.path(entry), entry.size, algorithm, clock)

    async def same_bytes(self, entry: Entry, reference: str, clock: ReadClock | None = None) -> tuple[bool, int]:
        """Whether this location's file holds the bytes of the file at ``reference`` (compared, not hashed),
        and the bytes of this file read. A reference that cannot be read raises ``ReferenceUnreadable``.
        ``clock`` times the comparison (both sides at once: the slower one sets the pace)."""
        return await self.hashes.compare(reference, self.path(entry), entry.size, clock)

    async def head(self, entry: Entry, ref: Entry | None = None) -> ObjectHead | None:
        return None

    async def facts(self, storage_classes: set[str], provider_media: bool) -> Facts:
        mount = await asyncio.to_thread(mount_of, self.root)
        fstype = mount.fstype if mount is not None else None
        observed = media_class(fstype)
        declared = self.cfg.media
        facts = Facts(media=observed or declared or "unknown", media_observed=observed is not None,
                      region=self.cfg.region, provider=self.cfg.provider,
                      device=mount.device if mount is not None else "",
                      mount_source=(mount.failure_source or "") if mount is not None else "")
        for peer, n in self.linked.items():
            whose = "production's" if peer == "production" else f"copy {peer!r}'s"
            facts.findings.append(Finding(
                Severity.CRITICAL, "copy_is_hardlink",
                f"{n} file(s) are {whose} own files (hard links: same device and inode, e.g. "
                f"{', '.join(self.first_linked)}): no second copy of their bytes, counted missing", self.name))
        if observed in VOLATILE_MEDIA:
            facts.findings.append(Finding(
                Severity.WARNING, "volatile_media",
                f"the filesystem is {fstype}: held in memory and gone at the next reboot; not counted as a medium",
                self.name))
        if observed is not None and declared is not None and declared != observed:
            facts.findings.append(Finding(
                Severity.WARNING, "media_contradiction",
                f"declared media {declared!r} but the filesystem is {fstype} ({observed}); using the observed media",
                self.name))
        return facts


def same_single_part(entry: Entry, ref: Entry) -> bool:
    """Equal single-part ETags (not ``md5-N`` of a multipart upload) of two listed objects of equal size."""
    return bool(entry.etag) and entry.etag == ref.etag and "-" not in (entry.etag or "") and entry.size == ref.size


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
        self.inventory: InventorySource | None = None  # the S3 Inventory report covering it (set by open_source)

    async def probe(self) -> tuple[str, str]:
        if not await self.client.bucket_exists(self.meter):
            return Probe.ROOT_MISSING, f"bucket {self.cfg.bucket!r} does not exist"
        self.bucket = await self.client.bucket_facts(self.meter)
        return Probe.OK, ""

    async def entries(self) -> AsyncIterator[Entry]:
        """The copy's objects in key order, built straight from the listing's pages (one Entry per object, no
        intermediate object)."""
        base = self.prefix.strip("/")
        base = f"{base}/" if base else ""
        cut = len(base)
        canary = (self.cfg.canary_prefix or "").strip("/")
        canary = f"{canary}/" if canary else ""
        classes = self.listed_classes
        try:
            pages = self.client.listed(base, self.meter)
            try:
                async for page in pages:
                    for obj in page:
                        key = obj.key[cut:]
                        if not key or key.endswith("/"):
                            continue  # the prefix itself or a "directory" marker
                        if canary and obj.key.startswith(canary):
                            continue  # the immutability probe's own canary is no part of any recovery point
                        klass = obj.storage_class
                        if klass not in classes:
                            classes.add(klass)
                        yield Entry(key, obj.size, obj.last_modified, etag=obj.etag, storage_class=klass,
                                    checksum_listed=obj.checksum_algorithm is not None)
            finally:
                # A consumer that stops early (or is cancelled) closes the page stream too, now: never left to
                # the garbage collector.
                await pages.aclose()  # type: ignore[attr-defined]
        except S3Missing:
            # The bucket vanished while it was listed (it existed at the probe): like a directory that went.
            raise FileNotFoundError(f"bucket {self.cfg.bucket!r}") from None

    def _key(self, entry: Entry) -> str:
        base = self.prefix.strip("/")
        return f"{base}/{entry.key}" if base else entry.key

    async def sha256(self, entry: Entry, algorithm: str = "sha256",
                     clock: ReadClock | None = None) -> tuple[str, int]:
        asked = clock.asked() if clock is not None else 0.0  # a network read: timed on the event loop
        began = time.monotonic()
        try:
            result = await self.client.sha256(self._key(entry), self.meter, algorithm)
        except BaseException as exc:
            if clock is not None:  # a failed read moved no bytes: no busy time (other runs' reads keep theirs)
                clock.answered(asked, (), 0)
            if isinstance(exc, S3Missing):
                raise FileNotFoundError(entry.key) from None
            raise
        if clock is not None:
            clock.answered(asked, ((began, time.monotonic()),), result[1])
        return result

    async def read_sample(self, entry: Entry, nbytes: int) -> int:
        """A throughput sample (the restore-time model): the object's first ``nbytes`` read and dropped."""
        try:
            return await self.client.read_range(self._key(entry), nbytes, self.meter)
        except S3Missing:
            raise FileNotFoundError(entry.key) from None

    async def head(self, entry: Entry, ref: Entry | None = None) -> ObjectHead | None:
        """The object's lock state and checksums. Skipped (answered from the listing) when it cannot change
        the verdict: the bucket is known to have no Object Lock (no lock state to read), and either the
        listing shows no checksum (the ETag is already the best evidence) or ``ref`` — the listing entry of
        the production object this one is compared with — has the same single-part ETag (equal MD5s already
        prove equal content; a checksum could only agree). Saves one request per object, on both sides."""
        bucket = self.bucket
        if bucket is not None and bucket.object_lock is False and (
                not entry.checksum_listed or (ref is not None and same_single_part(entry, ref))):
            return ObjectHead(etag=entry.etag or "", storage_class=entry.storage_class or "STANDARD")
        same = ref is not None and same_single_part(entry, ref)
        if self.inventory is not None and (not entry.checksum_listed or same):
            # The S3 Inventory report answers for the lock state when no checksum value could change the verdict
            # (storage/inventory.py: fresh and verified, the object listed with this ETag and size, unchanged since).
            known = await self.inventory.head(self._key(entry), entry, self.meter, time.time())
            if known is not None:
                return known
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
        if self.inventory is not None:
            facts.findings.extend(self.inventory.findings)  # a stale, corrupt or unreadable report
        return facts
