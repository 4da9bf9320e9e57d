"""Times that cannot be believed: modification, LastModified and seal times ahead of this host's clock.

A recovery point is as fresh as the newest time behind it, so a single file touched to 2099 (or a seal
dated tomorrow) would make the RPO unbreachable. A time more than ``compliance.clock_skew`` ahead of the
clock is a ``time_in_future`` finding and is never used as a recovery point: the newest believable time
is, or none is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from drwatch.core.durations import format_duration
from drwatch.core.model import Finding, Severity
from drwatch.validators.base import RunContext

_EXAMPLES = 3


def _iso(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f}"


def skew_of(ctx: RunContext) -> float:
    return ctx.config.compliance.clock_skew.total_seconds()


@dataclass
class FutureTimes:
    """Counts the times of one listing that lie beyond ``cutoff`` (now + the allowed clock skew)."""

    cutoff: float
    skew: float
    count: int = 0
    latest: float = 0.0
    examples: list[str] = field(default_factory=list)

    @classmethod
    def at(cls, ctx: RunContext) -> FutureTimes:
        skew = skew_of(ctx)
        return cls(ctx.clock() + skew, skew)

    def believe(self, key: str, ts: float) -> bool:
        """True when ``ts`` may be used as a recovery point time; a future one is counted instead."""
        if ts <= self.cutoff:
            return True
        self.count += 1
        self.latest = max(self.latest, ts)
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"{key} ({_iso(ts)})")
        return False

    def finding(self, subject: str, what: str = "object(s)") -> Finding | None:
        if not self.count:
            return None
        return Finding(Severity.WARNING, "time_in_future",
                       f"{self.count} {what} dated more than {format_duration(self.skew)} (the allowed clock skew) "
                       f"ahead of this host's clock, e.g. {', '.join(self.examples)}: their times are not "
                       "believed and never make the recovery point fresh", subject)


def seal_in_future(ctx: RunContext, sealed_at: float, subject: str = "manifest") -> Finding | None:
    """A ``time_in_future`` finding (critical: the recovery point's time is a lie) for a seal dated more
    than the clock skew ahead; None when its time can be believed."""
    skew = skew_of(ctx)
    ahead = sealed_at - ctx.clock()
    if ahead <= skew:
        return None
    return Finding(Severity.CRITICAL, "time_in_future",
                   f"the seal is dated {_iso(sealed_at)}, {format_duration(ahead)} ahead of this host's clock "
                   f"(allowed skew {format_duration(skew)}): its recovery point cannot be believed", subject)
