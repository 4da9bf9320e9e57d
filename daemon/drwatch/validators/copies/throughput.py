"""Throughput samples for the restore-time model where verification read nothing.

A copy proven by provider checksums or ETags is never read, so its location's read throughput would stay
unknown and its restore time unprojectable. After the merge, each reachable S3 copy this run read nothing from
gets one timed ranged GET of its largest readable object (``throughput_sample`` bytes at most), unless a
timed read of that location is stored from within ``throughput_sample_every`` (any asset's sample, verification
read or drill fetch: the model pools a location's reads, so one sample a period serves every asset there, not
8 MiB per asset and day; judged by the stored rate samples, not by the previous result, which after a sample's
run read nothing and would let every other run sample again). Under a
``verification`` policy the sample is charged to the same daily budget as verification reads (through the
location's request meter) and skipped when the budget has no room for it. A failed sample measures nothing
(the time it took is not counted) and is logged as a warning (``throughput_sample_failed``); it never changes
the copy's verdict.
"""

from __future__ import annotations

import time

from drwatch.storage.s3 import S3Unavailable
from drwatch.storage.sources import S3Source
from drwatch.validators.base import RunContext
from drwatch.validators.copies.proof import Stream
from drwatch.validators.copies.verification import VerifySession


def _read_recently(ctx: RunContext, location: str, within: float) -> bool:
    """Whether a timed read of ``location`` is stored from less than ``within`` ago."""
    if ctx.results is None or within <= 0:
        return False
    last = ctx.results().last_read(location)
    return last is not None and ctx.clock() - last < within


async def sample_reads(ctx: RunContext, nbytes: int, within: float, copies: list[Stream],
                       session: VerifySession | None) -> None:
    """One timed ranged read of each S3 copy this run did not read (see the module docstring)."""
    if nbytes <= 0:
        return
    for s in copies:
        src, entry = s.src, s.largest
        if (not isinstance(src, S3Source) or src.role != "copy" or s.state is not None or s.broken
                or s.reads.bytes > 0 or entry is None or entry.size <= 0
                or _read_recently(ctx, src.location, within)):
            continue
        want = min(nbytes, entry.size)
        if session is not None and session.spent_today() + want > session.allowance():
            continue
        started = time.monotonic()
        try:
            got = await src.read_sample(entry, want)
        except (S3Unavailable, FileNotFoundError) as exc:
            # A warning: until a read succeeds the copy's restore time is unknown (rto_not_judged), and a copy
            # drwatch may list but not read (GetObject denied) is worth an operator's look.
            ctx.log.warning("throughput_sample_failed", copy=s.name, location=src.location,
                            error=f"{type(exc).__name__}: {exc}")
            continue
        s.reads.span(started, time.monotonic(), got)
