"""The merge of a ``dataset`` run: one pass over the seal and every checked location in key order.

Per file: absent, extra, changed by live production since the seal, or proven by a task in the window — a
size that differs is judged first (a copy behind production, production changed since the seal), then the
Parquet footer against the seal's facts, then the content with the cheapest evidence (a provider SHA256, else
a read hashed in threads).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

from drwatch.core.model import Severity
from drwatch.formats.parquet import FooterError, ParquetFacts, fetch_facts, is_parquet, read_file_facts, s3_fetcher
from drwatch.storage.filesystem import MANIFEST_NAME, Entry
from drwatch.storage.s3 import checksum_matches_sha256
from drwatch.storage.sources import FilesystemSource, S3Source
from drwatch.validators.base import RunContext
from drwatch.validators.copies.live import HoldCheck, LiveKey, LiveRule, LiveTally
from drwatch.validators.copies.merge import Window, guard, listing, next_entry
from drwatch.validators.copies.posture import record_lock

_VANISHED = "file vanished during the check"
_LOCATION_DOWN = frozenset({"unreachable", "no_credentials"})


@dataclass
class Loc(LiveTally):
    """One location's tallies: production or a copy."""

    corrupt: int = 0
    layout: int = 0
    bytes_hashed: int = 0
    rows: int = 0


@dataclass
class SealTally:
    """What the seal holds, counted as the merge goes."""

    files: int = 0
    bytes: int = 0
    parquet: int = 0
    unsealed_parquet: int = 0  # Parquet files the seal holds no facts for
    broken_parquet: int = 0  # Parquet files whose footer was already unreadable when sealed
    keys: set[str] | None = None  # every key (layout: mlflow only)


class DatasetMerge:
    """Proves every file of every checked location against the seal (see the module docstring)."""

    def __init__(self, verify_content: bool, read_sample: float) -> None:
        self.verify_content, self.read_sample = verify_content, read_sample

    async def merge(self, ctx: RunContext, seal_entries: AsyncIterator[Entry], locs: list[Loc], seal: SealTally,
                     limit: int, rule: LiveRule) -> None:
        """One pass over the seal and every checked location in key order (memory independent of file count)."""
        iters = [listing(s) for s in locs]
        prod_i = next((i for i, s in enumerate(locs) if s.src.role == "production"), None)

        async def advance(i: int) -> Entry | None:
            s = locs[i]
            while not s.broken:
                entry = await next_entry(s, iters[i], limit)
                if entry is None or entry.key != MANIFEST_NAME:
                    return s.saw(entry, rule)  # a seal stored next to the data (S3) is no part of the recovery point
            return None

        heads: list[Entry | None] = [None] * len(locs)
        window = Window(max(4, ctx.hashes.workers * 8))

        try:
            # Inside the try: a run cut off here still closes every listing and the seal.
            heads = [await advance(i) for i in range(len(locs))]
            ref = await anext(seal_entries, None)
            while ref is not None or any(h is not None for h in heads):
                key = min([h.key for h in heads if h is not None] + ([ref.key] if ref is not None else []))
                r = ref if ref is not None and ref.key == key else None
                if r is not None:
                    self._count(seal, r, limit)
                ph = heads[prod_i] if prod_i is not None else None  # production's own file at this key
                live = LiveKey(rule, locs[prod_i].src if prod_i is not None else None,
                               ph if ph is not None and ph.key == key else None)
                for i, s in enumerate(locs):
                    if s.broken:
                        heads[i] = None
                        continue
                    h = heads[i]
                    if h is None or h.key != key:
                        if r is not None and not s.unchecked(key):  # under an unlistable directory: error
                            s.absent(key, i == prod_i, live, limit, "file")
                        continue
                    if r is None and i == prod_i and not rule.frozen:
                        s.added += 1  # live production: new since the seal
                    elif r is None:
                        s.extra += 1
                        s.late = s.late or i == prod_i  # frozen production grew
                        s.note("extra_file", "file not in the recovery point", key, limit, Severity.WARNING)
                    elif i == prod_i and rule.newer(h.mtime, rule.seal_time):
                        s.changed += 1  # live production modified it after the seal: expected, not read
                    else:
                        proof = functools.partial(s.unless_gone, functools.partial(self._verify, s, h, r, limit, live),
                                                  key, i == prod_i, live, limit, "file")
                        await window.spawn(functools.partial(guard, s, proof, key, limit, _VANISHED, _LOCATION_DOWN))
                    heads[i] = await advance(i)
                if r is not None:
                    ref = await anext(seal_entries, None)
            await window.join()
            for s in locs:
                s.judge_deferred(rule, limit, "file")  # absent files: behind production, or missing
        finally:
            await window.cancel()
            for it in [*iters, seal_entries]:
                await it.aclose()  # type: ignore[attr-defined]

    def _hold(self, s: Loc) -> HoldCheck | None:
        """A file ahead of the seal is compared with production's (both read) only where content is read."""
        return HoldCheck(s.src, lambda _e, _cost: True) if self.verify_content else None

    def _count(self, seal: SealTally, r: Entry, limit: int) -> None:
        seal.files += 1
        seal.bytes += r.size
        if seal.keys is not None:
            seal.keys.add(r.key)
        if is_parquet(r.key):
            seal.parquet += 1
            if r.parquet is None:
                seal.unsealed_parquet += 1
            elif r.parquet.error is not None:
                seal.broken_parquet += 1

    async def _verify(self, s: Loc, e: Entry, r: Entry, limit: int, live: LiveKey) -> None:
        """Prove one file of one location: a size that differs is judged first (a copy behind production,
        production changed since the seal), then Parquet structure, then content with the cheapest evidence."""
        production = s.src.role == "production"
        if e.size != r.size and (explained := await live.explains(e, production, s.slack, self._hold(s))):
            s.differs(explained, "size_mismatch", f"size {e.size} != sealed {r.size}", e.key, limit, e.mtime)
            return
        if e.size != r.size and not is_parquet(e.key):
            s.differs("", "size_mismatch", f"size {e.size} != sealed {r.size}", e.key, limit)
            return
        head = await s.src.head(e)  # S3: lock state and checksums (skipped where it cannot add anything)
        if head is not None:
            record_lock(s, head)
        facts: ParquetFacts | None = None
        if is_parquet(e.key):
            try:
                facts = await self._footer(s, e)
            except FooterError as exc:
                s.corrupt += 1
                if e.size != r.size:
                    s.note("size_mismatch", f"size {e.size} != sealed {r.size}", e.key, limit)
                s.note("parquet_footer_unreadable", str(exc), e.key, limit)
                return
            same = self._same_facts(s, e.key, facts, r.parquet, limit)
            if e.size != r.size:
                s.mismatch += 1
                s.note("size_mismatch", f"size {e.size} != sealed {r.size}", e.key, limit)
                return
            if not same:
                s.mismatch += 1
                return
        verdict: bool | None = None
        how = "size"
        if head is not None and r.sha256 is not None and r.algorithm == "sha256":  # a provider SHA256 vs the seal
            verdict = checksum_matches_sha256(head, r.sha256)
            how = "checksum" if verdict is not None else how
        if verdict is None and self.verify_content and (
                self.read_sample >= 1.0 or random.random() < self.read_sample):
            digest, n = await s.src.sha256(e, r.algorithm, s.reads)  # timed: the restore-time model's throughput
            s.bytes_hashed += n
            verdict, how = digest == r.sha256 and n == r.size, "read"
        if verdict is False:
            explained = await live.explains(e, production, s.slack, self._hold(s))
            s.differs(explained, "content_mismatch", f"content differs from the seal ({how})", e.key, limit, e.mtime)
            return
        s.verified += 1
        s.evidence[how] = s.evidence.get(how, 0) + 1
        s.bytes_verified += e.size if how != "size" else 0
        s.rows += facts.rows if facts is not None else 0

    async def _footer(self, s: Loc, e: Entry) -> ParquetFacts:
        if isinstance(s.src, FilesystemSource):
            return await asyncio.to_thread(read_file_facts, s.src.root.joinpath(*e.parts))
        assert isinstance(s.src, S3Source)
        return await fetch_facts(s3_fetcher(s.src.client, s.src.prefix, e.key), e.size)

    def _same_facts(self, s: Loc, key: str, facts: ParquetFacts, sealed: ParquetFacts | None, limit: int) -> bool:
        if sealed is None or sealed.error is not None:
            return True  # nothing to compare with (reported once for the seal)
        same = True
        if facts.schema != sealed.schema:
            same = False
            s.note("parquet_schema_mismatch", f"schema fingerprint {facts.schema[:12]} != sealed {sealed.schema[:12]}",
                   key, limit)
        if facts.rows != sealed.rows:
            same = False
            s.note("parquet_rows_mismatch", f"{facts.rows} rows != sealed {sealed.rows}", key, limit)
        elif facts.row_groups != sealed.row_groups:
            same = False
            s.note("parquet_row_groups_mismatch", f"{facts.row_groups} row groups != sealed {sealed.row_groups}",
                   key, limit)
        return same
