"""Production is live data: which differences its own changes explain (``replica``).

Production keeps changing after a backup. A copy that differs from production in an object production
modified *after the copy's object was written* holds an older recovery point (it is behind), not a corrupt
one; a difference in an object production has not modified since is corruption. Under a seal the same rule
guards production itself: an object that differs from the seal though production has not modified it since
the seal's time is silent corruption of production (bit rot); a newer one is an expected change, unless the
asset's production is ``frozen``. Times beyond the allowed clock skew are never believed (a file touched to
2099 explains nothing). Production re-stated at the moment of a difference catches changes made while the
check ran (the listing is older than the read).
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from drwatch.core.durations import format_duration
from drwatch.core.model import Finding, Severity
from drwatch.storage.filesystem import Entry
from drwatch.storage.s3errors import S3Unavailable
from drwatch.storage.sources import FilesystemSource, S3Source, Source, same_single_part
from drwatch.validators.copies.merge import Tally

UNREADABLE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})  # S3 archive tiers: no GET before a retrieval


@dataclass(frozen=True)
class LiveRule:
    """The asset's rule: ``frozen`` production never explains a difference; ``cutoff`` is the latest
    believable time (now + skew); ``seal_time`` the point in time of the seal (None: no seal)."""

    frozen: bool
    cutoff: float
    seal_time: float | None = None

    def newer(self, prod_mtime: float | None, than: float | None) -> bool:
        """Production's modification time is believable and newer than ``than``."""
        if self.frozen or prod_mtime is None or than is None:
            return False
        return than < prod_mtime <= self.cutoff


def seal_point(sealed_at: float, extra: dict[str, Any] | None) -> float:
    """The seal's point in time: ``sealed_at``, or the backup's own time when the backup job recorded it
    (``drwatch seal --meta taken_at=UNIX_SECONDS``, the moment the backup started reading production)."""
    raw = (extra or {}).get("taken_at")
    try:
        taken = float(raw) if raw is not None else math.nan
    except (TypeError, ValueError):
        return sealed_at
    return taken if math.isfinite(taken) and 0 < taken < sealed_at else sealed_at


async def changed_since_listed(src: Source, entry: Entry) -> bool:
    """Whether production's object changed (or went) after it was listed. Only a filesystem can be asked
    cheaply; an S3 object is replaced whole and judged from its listing."""
    if not isinstance(src, FilesystemSource):
        return False
    path = src.root.joinpath(*entry.parts)
    try:
        st = await asyncio.to_thread(os.stat, path, follow_symlinks=False)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # cannot tell: the difference stands
    return (st.st_size, st.st_mtime) != (entry.size, entry.mtime)


def _no_charge(_obj: Entry, _reference_cost: int, _nbytes: int) -> None:
    return None


@dataclass(frozen=True)
class HoldCheck:
    """How a copy's object ahead of the seal is compared with production's object (both read in full): the copy's
    source ``src``; ``allow(obj, production_bytes)``: whether both reads may be made now, charged when yes (content
    reads on, a verification budget with room); ``done(obj, production_bytes, bytes_read)`` after them."""

    src: Source
    allow: Callable[[Entry, int], bool]
    done: Callable[[Entry, int, int], None] = _no_charge


@dataclass(frozen=True)
class LiveKey:
    """Production at one key of the merge: its source and listed object (None where production lacks it)."""

    rule: LiveRule
    src: Source | None
    entry: Entry | None

    async def explains(self, obj: Entry, production: bool, slack: float = 0.0, check: HoldCheck | None = None) -> str:
        """What production's own changes say about ``obj`` differing from the reference: ``"changed"`` for
        production's object modified after the seal's time; for a copy's object ``"behind"`` (production
        modified it after the copy's object was written) or ``"ahead"`` (under a seal: the copy's object was
        written after the seal and production changed it since the seal too: a newer, unsealed state that
        this seal cannot prove); ``""`` when nothing explains it: corruption. A production object that
        changed while the check ran explains a difference too. ``slack``: the resolution of the copy's
        times (S3's LastModified is in whole seconds: the write may be up to a second later). ``check``: given,
        an object that would be ``"ahead"`` must also hold production's current content (production has not
        changed since the copy's object was written): else nothing explains it; ``"unchecked"`` when
        production's object could not be read to tell."""
        if self.rule.frozen or self.entry is None or self.src is None:
            return ""
        seal = self.rule.seal_time
        if production:
            if self.rule.newer(obj.mtime, seal) or await changed_since_listed(self.src, self.entry):
                return "changed"
            return ""
        # With whole-second times (``slack`` 1) a production time in the copy's second may be the later write:
        # behind, never corruption (a false page is the worse error). The copy's recovery point is then dated
        # by this object's own time, so an object that stays behind fails once that is older than the RPO.
        if self.rule.newer(self.entry.mtime, obj.mtime - (1e-6 if slack else 0.0)) \
                or await changed_since_listed(self.src, self.entry):
            return "behind"
        if seal is not None and seal < obj.mtime <= self.rule.cutoff and self.rule.newer(self.entry.mtime, seal):
            return await self._holds_production(obj, check)
        return ""

    async def _holds_production(self, obj: Entry, check: HoldCheck | None) -> str:
        """An object written after the seal and after production's last change must be production's content now:
        ``"ahead"`` when it is (equal single-part ETags, or both read), or when it may not be read (no ``check``:
        content reads off; the budget spent); ``"behind"`` when production changed while compared; ``""`` when
        it differs (a copy corrupted or replaced after a harmless change of production's time); ``"unchecked"``
        when production's object could not be read (never the copy's fault)."""
        assert self.src is not None and self.entry is not None
        if obj.size != self.entry.size:
            return "behind" if await changed_since_listed(self.src, self.entry) else ""
        if check is None or same_single_part(obj, self.entry):
            return "ahead"
        if not check.allow(obj, self.entry.size):
            return "ahead"
        n = 0
        try:
            ours, n = await check.src.sha256(obj)  # one after the other: a failed read leaves no other task running
            try:
                theirs = await self.src.sha256(self.entry)
            except (S3Unavailable, OSError) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                return "unchecked"
        except FileNotFoundError:
            return "behind"  # one side went since the listing: a backup or production at work
        finally:
            check.done(obj, self.entry.size, n)
        if ours == theirs[0]:
            return "ahead"
        return "behind" if await changed_since_listed(self.src, self.entry) else ""


@dataclass
class LiveTally(Tally):
    """A location's tallies with what production's changes explain (the validators' ``Tally`` subclasses
    derive from this one)."""

    behind: int = 0  # a copy's objects that production changed after the copy took them (older recovery point)
    behind_oldest: float | None = None  # the oldest own time of an object found behind (dates the copy)
    ahead: int = 0  # under a seal: a copy's objects the next backup already replaced (newer than the seal)
    newest: float = 0.0  # the newest believable modification time listed here: the copy was taken at least then
    deferred: list[tuple[str, float]] = field(default_factory=list)  # absent keys judged once ``newest`` is known
    gone: list[str] = field(default_factory=list)  # sealed keys production deleted since the seal and this copy lacks
    changed: int = 0  # production under a seal: objects modified, added, deleted since the seal
    added: int = 0
    deleted: int = 0
    late: bool = False  # failed beyond its objects: behind past the RPO, or frozen production grown
    largest: Entry | None = None  # the largest object listed that is not in an archive class (throughput sample)

    @property
    def dated(self) -> float:
        """The time the copy was taken at the earliest, for telling whether production wrote an object after it:
        its newest time; with whole-second times (S3) a production time in that same second may be later."""
        return self.newest - (1e-6 if self.slack else 0.0)

    @property
    def slack(self) -> float:
        """How much later than its listed time an object may have been written: S3 times are whole seconds."""
        return 1.0 if isinstance(self.src, S3Source) else 0.0

    def saw(self, entry: Entry | None, rule: LiveRule) -> Entry | None:
        """Note one entry of this location's listing (its time dates the copy); returns it."""
        if entry is not None and entry.mtime <= rule.cutoff:
            self.newest = max(self.newest, entry.mtime)
        if entry is not None and (self.largest is None or entry.size > self.largest.size) \
                and (entry.storage_class or "STANDARD") not in UNREADABLE_CLASSES:
            self.largest = entry
        return entry

    def differs(self, explained: str, code: str, message: str, key: str, limit: int, at: float | None = None) -> None:
        """An object differs from the reference: explained by production's later changes (see
        ``LiveKey.explains``: a copy behind or ahead of the seal, a live production changed since the seal),
        or corrupt."""
        if explained == "changed":
            self.changed += 1
        elif explained == "behind":
            self.behind += 1
            if at is not None:  # the copy holds this object as of its own time: its recovery point is no newer
                self.behind_oldest = at if self.behind_oldest is None else min(self.behind_oldest, at)
            self.note("copy_behind", f"{message}: production changed it after this copy was taken (an older "
                      "recovery point)", key, limit, Severity.WARNING)
        elif explained == "ahead":
            # The next backup is writing this copy: it holds production's newer state, which the seal does not
            # describe. Normal while a backup runs (which may take hours): a warning, never an error or a
            # failure; bit rot cannot look like this (it keeps the old time), and the next seal proves it.
            self.ahead += 1
            self.note("copy_newer_than_seal", f"{message}: written after the seal while production changed it "
                      "too (a backup in progress: a newer state than the seal; the next seal proves it)", key,
                      limit, Severity.WARNING)
        elif explained == "unchecked":
            self.errors += 1  # could not be checked: never a failure of the copy
            self.note("unreadable", f"{message}: written after the seal while production changed it too, and "
                      "production's object could not be read to compare", key, limit, Severity.WARNING)
        else:
            self.mismatch += 1
            self.note(code, message, key, limit, Severity.CRITICAL)

    def absent(self, key: str, production: bool, live: LiveKey, limit: int, what: str = "object") -> None:
        """A key of the reference this location lacks. A live production deleted it since the seal; a copy
        lacks an object production created or modified after the copy was taken (production's time newer
        than the newest time in the copy: judged once the copy's listing ended), else it is missing."""
        rule = live.rule
        if production and not rule.frozen:
            self.deleted += 1
            return
        if live.src is not None and live.entry is None and rule.seal_time is not None and not rule.frozen:
            self.gone.append(key)  # production deleted it since the seal too: judged once ``newest`` is known
            return
        pm = live.entry.mtime if live.entry is not None and live.src is not None else None
        if production or not rule.newer(pm, 0.0) or (self.newest > 0 and not rule.newer(pm, self.dated)):
            self.missing += 1  # not explained, or the copy already holds something newer: it was left out
            self.note("missing_file", f"{what} of the recovery point is missing", key, limit, Severity.CRITICAL)
        else:
            assert pm is not None
            self.deferred.append((key, pm))

    async def unless_gone(self, work: Callable[[], Awaitable[None]], key: str, production: bool, live: LiveKey,
                          limit: int, what: str = "object") -> None:
        """Run one object's proof; an object gone between the listing and its proof (FileNotFoundError from
        its stat, HEAD or read) is judged as if the listing had not named it (:meth:`absent`): a live
        production deleted it, a copy is behind, ahead or missing it. Never a ``missing_file`` of its own."""
        try:
            await work()
        except FileNotFoundError:
            self.absent(key, production, live, limit, what)

    def judge_deferred(self, rule: LiveRule, limit: int, what: str = "object") -> None:
        """At the end of the listing: each deferred absent key is behind or missing."""
        for key, pm in self.deferred:
            if self.broken:
                self.errors += 1
            elif self.newest > 0 and rule.newer(pm, self.dated):
                self.behind += 1
                self.note("copy_behind", f"{what} of the recovery point is missing: production created or changed "
                          "it after this copy was taken (an older recovery point)", key, limit, Severity.WARNING)
            else:
                self.missing += 1
                self.note("missing_file", f"{what} of the recovery point is missing", key, limit, Severity.CRITICAL)
        self.deferred.clear()
        for key in self.gone:
            if self.broken:
                self.errors += 1
            elif rule.seal_time is not None and self.newest > rule.seal_time - self.slack:
                # Written since the seal (the next backup mirrored production's deletion): ahead, not missing.
                self.ahead += 1
                self.note("copy_newer_than_seal", f"{what} of the recovery point is gone from this copy as from "
                          "production, and the copy was written after the seal (a backup in progress)", key, limit,
                          Severity.WARNING)
            else:
                self.missing += 1
                self.note("missing_file", f"{what} of the recovery point is missing", key, limit, Severity.CRITICAL)
        self.gone.clear()

    def counts(self) -> dict[str, int]:
        """The live counts for a copy report's ``objects`` (only those that are not zero)."""
        return {k: v for k, v in (("behind", self.behind), ("ahead", self.ahead), ("changed", self.changed),
                                  ("new", self.added), ("deleted", self.deleted)) if v}


def live_findings(rpo: float, frozen: bool, prod: LiveTally, copies: Sequence[LiveTally], sealed: bool,
                  recovery_point: float | None, now: float, findings: list[Finding]) -> dict[str, float | None]:
    """Production's changes since the seal (counted; corruption or a frozen production's drift fail) and
    each copy that is behind: its recovery point is the newest time it holds, or the own time of its oldest
    object found behind when that is older; failed past the RPO (returned: copy name -> its recovery point)."""
    if sealed and frozen and (prod.missing or prod.mismatch or prod.extra):
        findings.append(Finding(Severity.CRITICAL, "production_drift",
                                f"production is frozen but no longer matches the seal ({prod.missing} missing, "
                                f"{prod.mismatch} changed, {prod.extra} new)", prod.name))
    elif sealed and prod.mismatch:
        findings.append(Finding(Severity.CRITICAL, "production_corrupt",
                                f"{prod.mismatch} production object(s) differ from the seal though not modified "
                                "since it: silent corruption of production", prod.name))
    if sealed and (prod.changed or prod.added or prod.deleted):
        findings.append(Finding(Severity.INFO, "production_changed_since_seal",
                                f"production changed since the seal (expected: it is live): {prod.changed} "
                                f"modified, {prod.added} new, {prod.deleted} deleted", prod.name))
    points: dict[str, float | None] = {}
    for s in copies:
        if not s.behind or recovery_point is None:
            continue
        point = min(recovery_point, s.newest, s.behind_oldest or s.newest) if s.newest > 0 else None
        points[s.name] = point
        age = format_duration(now - point) if point is not None else "unknown"
        if point is None or now - point > rpo:
            s.late = True
            findings.append(Finding(Severity.CRITICAL, "rpo_exceeded",
                                    f"the copy is behind production ({s.behind} object(s)) and its recovery "
                                    f"point is {age} old (RPO {format_duration(rpo)})", s.name))
        else:
            findings.append(Finding(Severity.WARNING, "copy_behind",
                                    f"{s.behind} object(s) older than production: the copy holds a recovery "
                                    f"point {age} old (within the RPO)", s.name))
    return points
