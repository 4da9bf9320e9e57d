"""Sealed filesystem production without a ``verification:`` policy: files unchanged since their last proven
read are not hashed again; every file is still read within ``production_reread``.

What a mature backup checker does (rsync's quick check, restic's and borg's caches, a scrub schedule), on the
verification ledger (rows under the name ``production``):

* **Change detection by stat.** A file whose size, modification time, inode number and inode change time
  (ctime) are those of its last read, and whose seal digest is the one that read proved, is proven
  ``unchanged`` without a read. Any visible change (written in place with the mtime set back: ctime moves;
  replaced by another file: a new inode; a new seal with another digest for it) makes it due at once: the
  same run hashes it.
* **A rolling full re-read.** Damage below the filesystem (bit rot, a bad controller) changes no stat. The
  least recently read files are re-read every day at the pace ``total bytes / production_reread``, and every
  file read longer ago than that is due (:func:`drwatch.validators.copies.ledger.due_cutoff`): so such damage is
  found within ``production_reread`` (default 7 days) of the last read, provided the validator runs.
* No budget: a changed or due file is always read; the plan only spreads the re-reads evenly.
* A file found different from the seal stays bad while it and its seal entry are unchanged (as under a
  policy), until a read proves it good.

Only production's stream is under this session (the copies are read as before); nothing here feeds the
verification metrics or ``drwatch status`` (no summary is written): that stays what the asset's own
``verification:`` policy declares.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from drwatch.core.model import Finding
from drwatch.storage.filesystem import Entry
from drwatch.validators.base import LedgerWriter
from drwatch.validators.copies.ledger import LedgerEntry, VerificationPolicy
from drwatch.validators.copies.ledger_rows import MISMATCH, version_of
from drwatch.validators.copies.verification import VerifySession


class UnchangedSession(VerifySession):
    """The ledger of a sealed filesystem production (see the module docstring)."""

    unread_evidence = "unchanged"

    def __init__(self, store: LedgerWriter, asset: str, reread: timedelta, now: float, runs_per_day: float) -> None:
        super().__init__(store, asset, VerificationPolicy(read_every=reread), now, runs_per_day)

    def candidate(self, copy: str, entry: Entry, prior: LedgerEntry | None, ref: str = "") -> bool:
        """Planned (the rolling re-read), never read, changed by stat, or proven against another seal digest
        than ``ref`` (the seal's now); a known-bad file only once it or its seal entry changed."""
        if super().candidate(copy, entry, prior) or prior is None:
            return True
        if prior.evidence == MISMATCH:
            return not self.known_bad(entry, prior, ref)
        return prior.value != ref

    def take(self, copy: str, entry: Entry, reference_cost: int, priority: bool = False) -> bool:
        """Always: no budget (the file is due, changed or planned)."""
        self._settle(copy, entry.key)
        self.taken_bytes += entry.size + reference_cost
        self.inflight += 1 + (1 if reference_cost else 0)
        return True

    def record(self, copy: str, entry: Entry, prior: LedgerEntry | None, evidence: str, value: str,
               read: bool, ok: bool, ref: str = "") -> None:
        """As the base, except that a proven row keeps the seal digest its read proved (``ref``), and that a
        file proven unchanged is not written again (its row already says everything)."""
        if ok and not read and prior is not None and prior.version == version_of(entry) \
                and prior.size == entry.size and prior.evidence != MISMATCH:
            self._settle(copy, entry.key)
            return
        if ok:
            value = ref if read or prior is None else prior.value
        super().record(copy, entry, prior, evidence, value, read, ok, ref)

    async def finish(self, metadata_requests: dict[str, dict[str, int]], completed: Iterable[str]) -> list[Finding]:
        """Write the last batch; no summary (no verification metrics for production without a policy)."""
        await self.flush()
        return []
