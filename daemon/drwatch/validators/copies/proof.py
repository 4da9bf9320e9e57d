"""One object of one checked stream of a ``replica`` run, proven against its key of the reference.

The strongest cheap evidence first: a provider SHA256 against the seal's sha256, the same provider checksum
on both sides, equal composite checksums of equal part layouts, equal ETags; a read (hashed, or compared byte
for byte) where none decides. Under the verification ledger, metadata evidence always and a read only when the
ledger's plan, a change or the budget says so; an object the ledger found bad stays bad until a read proves
it good or it or its reference changed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from drwatch.storage.filesystem import Entry
from drwatch.storage.s3 import ObjectHead, checksum_matches_sha256
from drwatch.storage.sources import same_single_part
from drwatch.validators.copies.ledger import LedgerEntry, composite_matches
from drwatch.validators.copies.ledger_rows import reference_id
from drwatch.validators.copies.live import HoldCheck, LiveKey, LiveTally
from drwatch.validators.copies.posture import record_lock
from drwatch.validators.copies.reference import Reference
from drwatch.validators.copies.verification import VerifySession


@dataclass
class Stream(LiveTally):
    """Production or one copy in a ``replica`` run: its tallies."""

    first_error: str = ""

    def proven(self, how: str, nbytes: int = 0) -> None:
        self.verified += 1
        self.evidence[how] = self.evidence.get(how, 0) + 1
        self.bytes_verified += nbytes


class Prover:
    """Proves objects of the checked streams (see the module docstring)."""

    def __init__(self, verify_content: bool, read_sample: float, limit: int,
                 session: VerifySession | None) -> None:
        self.verify_content, self.read_sample, self.limit = verify_content, read_sample, limit
        self.session = session

    async def verify(self, s: Stream, e: Entry, ref: Reference, prior: LedgerEntry | None = None,
                     live: LiveKey | None = None) -> None:
        """Prove one object of one copy against the reference with the strongest cheap evidence."""
        # Production's listing entry, when production is the reference: lets the source skip a HEAD whose answer
        # could not change the verdict (equal ETags). Gone since the listing: FileNotFoundError, judged by the
        # caller as an absent object.
        head = await s.src.head(e, ref.entry if ref.prod is not None else None)
        if head is not None:
            record_lock(s, head)
        verdict, how, value = await self._metadata(e, head, ref)
        session = self.session
        if session is not None and s.name in session.copies:
            await self._ledger(s, e, ref, session, prior, verdict, how, value, live)
            return
        if verdict is None:
            if not self.verify_content or (self.read_sample < 1.0 and random.random() >= self.read_sample):
                s.proven("size")
                return
            verdict, _n = await ref.read_matches(s.src, e, s.reads)
            how = "read"
        if verdict:
            # Bytes proven equal (by any evidence but size); bytes read and found different do not count.
            s.proven(how, e.size if how in ("checksum", "etag", "read") else 0)
        else:
            await self._differs(s, e, live, how)

    async def _metadata(self, e: Entry, head: ObjectHead | None, ref: Reference) -> tuple[bool | None, str, str]:
        """The verdict metadata gives (None: it decides nothing), how, and the value that proved it."""
        # Under a budget, a SHA256 is compared with the reference only where that costs no read of it.
        cheap_sha = self.session is None or await ref.read_cost() == 0
        if head is not None and head.checksums:
            # A provider SHA256 proves nothing against a seal of another algorithm (blake3): then a read decides.
            if "SHA256" in head.checksums and (ref.entry.sha256 is not None or ref.prod is not None) and cheap_sha \
                    and ref.entry.algorithm == "sha256":
                return (checksum_matches_sha256(head, await ref.sha256()), "checksum",
                        f"SHA256:{head.checksums['SHA256']}")
            # A CRC (not SHA256) would only be compared with production's, which costs production a HEAD:
            # not asked where equal single-part ETags (MD5s, stronger than a CRC) already prove the object.
            if not (ref.prod is not None and not ref.head_known and same_single_part(e, ref.entry)):
                rhead = await ref.head()
                common = [a for a in head.checksums if rhead is not None and a in rhead.checksums]
                if common and rhead is not None:
                    return (head.checksums[common[0]] == rhead.checksums[common[0]], "checksum",
                            f"{common[0]}:{head.checksums[common[0]]}")
        if head is not None and head.composite and ref.prod is not None:
            rhead = await ref.head()
            for algo, mine in head.composite.items():
                theirs = rhead.composite.get(algo) if rhead is not None else None
                if theirs is not None and composite_matches(mine, theirs):
                    return True, "checksum", f"{algo}:{mine}"  # equal part layouts
        if e.etag and ref.entry.etag and ref.prod is not None and e.etag == ref.entry.etag:
            return True, "etag", e.etag  # equal ETags (same content, or same part layout of it)
        return None, "", ""

    async def _differs(self, s: Stream, e: Entry, live: LiveKey | None, how: str) -> None:
        production = s.src.role == "production"
        explained = await live.explains(e, production, s.slack, self._hold(s)) if live is not None else ""
        s.differs(explained, "content_mismatch", f"content differs from the recovery point ({how})", e.key,
                  self.limit, e.mtime)

    def _hold(self, s: Stream) -> HoldCheck | None:
        """How an object of ``s`` ahead of the seal may be compared with production's: not at all without content
        reads; under the verification ledger only as its budget allows, charged like any read of it."""
        if not self.verify_content:
            return None
        session = self.session
        if session is None or s.name not in session.copies:
            return HoldCheck(s.src, lambda _e, _cost: True)
        return HoldCheck(s.src, lambda e, cost: session.take(s.name, e, cost),
                         lambda e, cost, n: session.read_done(s.name, e, cost, n))

    async def _ledger(self, s: Stream, e: Entry, ref: Reference, session: VerifySession,
                      prior: LedgerEntry | None, verdict: bool | None, how: str, value: str,
                      live: LiveKey | None = None) -> None:
        """Under a verification policy: metadata evidence always; a read when the ledger's plan or the
        budget says so (never because metadata was missing: that object waits for its turn). An object the
        ledger found bad stays bad, unless a read proves it good or it or its reference changed."""
        read = False
        ref_id = reference_id(ref.entry)
        if verdict is not False and session.candidate(s.name, e, prior, ref_id):
            cost = await ref.read_cost()
            if session.take(s.name, e, cost, priority=session.requeued(e, prior, ref_id, value)):
                n = 0
                try:
                    read_ok, n = await ref.read_matches(s.src, e, s.reads)
                finally:
                    session.read_done(s.name, e, cost, n)
                read = True
                if not read_ok:
                    verdict, how = False, "read"
        if verdict is not False and not read and prior is not None and session.known_bad(e, prior, ref_id, value):
            verdict, how = False, session.bad_evidence(prior)
        if verdict is False:
            await self._differs(s, e, live, how)
            session.record(s.name, e, prior, how, value, read, ok=False, ref=ref_id)
            return
        s.proven("read" if read else how or session.unread_evidence, e.size if read or how else 0)
        session.record(s.name, e, prior, how or "size", value, read, ok=True, ref=ref_id)

    async def size_differs(self, s: Stream, h: Entry, reference: Reference, live: LiveKey,
                           prior: LedgerEntry | None) -> None:
        explained = await live.explains(h, s.src.role == "production", s.slack, self._hold(s))
        s.differs(explained, "size_mismatch", f"size {h.size} != {reference.entry.size}", h.key, self.limit, h.mtime)
        session = self.session
        if session is not None and s.name in session.copies and explained != "changed":
            session.record(s.name, h, prior, "size", "", False, ok=False, ref=reference_id(reference.entry))
