"""Deterministic schedule slots: every node computes the same slot identities and due times.

A *slot* is one nominal run of a validator, named by its nominal time in milliseconds since the epoch:

- ``every: P``: slots at ``k * P + offset``, where ``offset`` (in ``[0, P)``) comes from a hash of the
  asset and validator names, so validators with the same period spread over it instead of firing together;
- ``cron: EXPR``: the cron fire times (UTC), computed with the same APScheduler 3 trigger as the single
  node.

A slot is *due* at its nominal time plus a jitter in ``[0, jitter)`` that is also a hash (of the names and
the slot), so all nodes agree on it without talking. Slot identities only grow with time, so a
compare-and-set on the last slot taken gives exactly-once per slot (see ``pgqueuer_engine``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

from drwatch.validators.base import Schedule


def _fraction(*parts: object) -> float:
    """A number in [0, 1) from the parts, the same on every node and every run."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Slot:
    slot: int  # nominal time, ms since the epoch: the slot's identity
    due: float  # when it should start (seconds since the epoch), jitter included


class SlotClock:
    """Slots of one validator's schedule."""

    def __init__(self, asset: str, label: str, schedule: Schedule) -> None:
        self.asset = asset
        self.label = label
        self.schedule = schedule
        self.jitter = schedule.jitter.total_seconds()
        self._cron = CronTrigger.from_crontab(schedule.cron, timezone="UTC") if schedule.cron else None
        self.period = schedule.interval_seconds()
        self.offset = _fraction(asset, label, "offset") * self.period

    def _due(self, nominal: float) -> Slot:
        slot = round(nominal * 1000)
        return Slot(slot, nominal + _fraction(self.asset, self.label, slot) * self.jitter)

    def _nominal_at_or_before(self, t: float) -> float | None:
        if self._cron is None:
            k = math.floor((t - self.offset) / self.period)
            return k * self.period + self.offset
        # The latest cron fire time <= t: walk forward from far enough back to cover the longest gap.
        start = datetime.fromtimestamp(t, tz=UTC) - timedelta(seconds=2 * self.period + 86400)
        fire = self._cron.get_next_fire_time(None, start)
        latest: float | None = None
        while fire is not None and fire.timestamp() <= t:
            latest = fire.timestamp()
            fire = self._cron.get_next_fire_time(fire, fire + timedelta(seconds=1))
        return latest

    def current(self, now: float) -> Slot | None:
        """The newest slot that is due at ``now`` (older ones it coalesces), or None."""
        nominal = self._nominal_at_or_before(now)
        if nominal is None:
            return None
        slot = self._due(nominal)
        if slot.due <= now:
            return slot
        previous = self._nominal_at_or_before(nominal - 0.001)
        return self._due(previous) if previous is not None else None

    def next_due(self, now: float) -> float:
        """When the next slot after ``now`` becomes due (for sleeping)."""
        nominal = self._nominal_at_or_before(now)
        if self._cron is None:
            candidate = (nominal if nominal is not None else now) + self.period
            current = self._due(nominal) if nominal is not None else None
            if current is not None and current.due > now:
                return current.due
            return self._due(candidate).due
        start = datetime.fromtimestamp(now, tz=UTC)
        if nominal is not None and self._due(nominal).due > now:
            return self._due(nominal).due
        fire = self._cron.get_next_fire_time(None, start + timedelta(seconds=1))
        return self._due(fire.timestamp()).due if fire is not None else now + self.period
