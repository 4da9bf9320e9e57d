"""3-2-1-1-0 over a period: the stored results, attestations and acknowledgements replayed, in the order they
were stored, through the same evaluation /metrics and ``status`` use (:func:`drwatch.state.compliance.evaluate_asset`).

The verdict changes when something is recorded, and also when time alone moves it: a check goes stale, a
recovery point ages past the RPO, a failure leaves the window, an attestation or an Object Lock runs out. The
replay evaluates whenever a result differs from the previous one of its validator in what the verdict reads
(outcome and each copy's state, media, place, lock and offline flags), at every attestation and
acknowledgement, and at the next moment time alone may change it, so each interval is exact, not sampled. A
result like the one before it (the usual case) costs no evaluation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from drwatch.config.model import Config
from drwatch.core import fastjson
from drwatch.core.model import Ack, Attestation, Outcome, Result
from drwatch.state.compliance import RULES, AssetVerdict, RuleState, evaluate_asset
from drwatch.state.snapshot import Snapshot
from drwatch.store.base import ValidatorStats, result_from_row

_WHEN = itemgetter(0, 1)  # events by time, then stored order (the index is unique)
_TICK = 1e-3  # the evaluation compares with <= and >: a time-driven change shows just after its moment


_SIGNATURE_FIELDS = ("media", "site", "region", "provider", "immutable", "offline", "region_observed")
# The same fields read in one call each from a copy as CopyReport.to_dict writes it (every key present); a copy
# stored without one of them (an older row) is read by the .get path: both give the same signature.
_SIGNATURE = itemgetter("copy", "state", *_SIGNATURE_FIELDS)
_FIGURES = itemgetter("recovery_point", "retain_until_min", "objects", "bytes_verified")


def _decode_copies(text: str) -> tuple[tuple[Any, ...], list[float], list[float], int, int]:
    """One pass over a result's stored copies: what the verdict reads (its signature), the recovery points,
    the earliest retain-until dates, and the objects and bytes the run verified."""
    signature: list[tuple[Any, ...]] = []
    rps: list[float] = []
    rus: list[float] = []
    objects = nbytes = 0
    for c in fastjson.loads(text):
        try:
            sig = (*_SIGNATURE(c), tuple(c["dependencies"] or ()))
            rp, ru, counts, size = _FIGURES(c)
        except KeyError:
            get = c.get
            sig = (c["copy"], c["state"], *map(get, _SIGNATURE_FIELDS), tuple(get("dependencies") or ()))
            rp, ru, counts = get("recovery_point"), get("retain_until_min"), get("objects")
            size = get("bytes_verified", 0)
        signature.append(sig)
        if rp is not None:
            rps.append(float(rp))
        if ru is not None:
            rus.append(float(ru))
        if counts:
            objects += int(counts.get("verified", 0))
        nbytes += int(size)
    return tuple(signature), rps, rus, objects, nbytes


class Row:
    """One stored result as the report reads it: what the verdict and the figures read from its copies, taken in
    one pass when the row is read; the copies, figures and the full Result decoded again only on demand."""

    __slots__ = ("_result", "asset", "config_hash", "digest", "drill", "figures_", "finished_at", "id", "kind",
                 "nbytes", "objects", "outcome", "raw", "recovery_points", "retain_until", "run_id", "signature_",
                 "started_at", "validator")
    recovery_points: list[float]
    retain_until: list[float]
    objects: int
    nbytes: int
    signature_: tuple[Any, ...]

    def __init__(self, raw: tuple[Any, ...], prev: Row | None = None) -> None:
        self.raw = raw  # (id, *RESULT_COLUMNS, config_hash, digest)
        self.id, self.run_id, self.asset, self.validator, self.kind, self.outcome = (
            int(raw[0]), str(raw[1]), str(raw[2]), str(raw[3]), str(raw[4]), str(raw[5]))
        self.started_at, self.finished_at = float(raw[6]), float(raw[7])
        self.config_hash, self.digest = str(raw[12] or ""), str(raw[13] or "")
        text = raw[9]  # a drill's figures (restore_seconds, rows_restored): decoded only where the text names one
        self.figures_: dict[str, float] | None = None
        figures = self.figures if '"restore_seconds"' in text or '"rows_restored"' in text else {}
        self.drill = "restore_seconds" in figures or "rows_restored" in figures
        self._result: Result | None = None
        if prev is not None and prev.raw[11] == raw[11]:  # copies as stored by the validator's previous result
            self.recovery_points, self.retain_until = prev.recovery_points, prev.retain_until
            self.objects, self.nbytes = prev.objects, prev.nbytes
            self.signature_ = (self.outcome, prev.signature_[1])
            return
        signature, self.recovery_points, self.retain_until, self.objects, self.nbytes = _decode_copies(raw[11])
        self.signature_ = (self.outcome, signature)

    @classmethod
    def of(cls, raw: tuple[Any, ...], prev: Row | None = None) -> Row:
        """``prev``: the same validator's previous row, whose decoded copies are reused when the stored text is
        the same (a recovery point and counts that did not move since)."""
        return cls(raw, prev)

    @property
    def copies(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = json.loads(self.raw[11])
        return out

    @property
    def figures(self) -> dict[str, float]:
        if self.figures_ is None:
            self.figures_ = fastjson.loads(self.raw[9]) if self.raw[9] != "{}" else {}
        return self.figures_

    @property
    def result(self) -> Result:
        if self._result is None:
            self._result = result_from_row(self.raw[1:12])
        return self._result

    def signature(self) -> tuple[Any, ...]:
        """What the verdict reads from this result, times aside (those move the moments of _next_change)."""
        return self.signature_


@dataclass(frozen=True)
class Interval:
    start: float
    end: float
    compliant: bool
    states: tuple[str, ...]  # per rule of RULES: pass | fail | unknown
    reason: str  # why not compliant, as the verdict said at the interval's start ("" when compliant)

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _reason(verdict: AssetVerdict) -> str:
    return "; ".join(f"{rule}: {v.state.value}: {v.detail}" for rule in RULES
                     if (v := verdict.rules[rule]).state != RuleState.PASS)


@dataclass
class _Validator:
    """A validator's state during the replay (the store's validator_state, as of the replayed moment)."""

    max_age: float
    last_run: float | None = None
    last_success: float | None = None
    last_failure: float | None = None
    row: Row | None = None
    before: Result | None = None  # its newest result before the period, until a row of the period replaces it
    signature: tuple[Any, ...] | None = None
    ticks: tuple[float, ...] = ()  # the moments of :meth:`moments`, each plus _TICK (kept current by refresh)

    def latest(self) -> Result | None:
        return self.row.result if self.row is not None else self.before

    def refresh(self, rpo: float, horizon: float, window: float) -> None:
        """Recompute the moments after the state changed (a result taken in, a failure recorded)."""
        row = self.row
        if row is None:
            self.ticks = tuple(m + _TICK for m in self._moments(rpo, horizon, window))
            return
        # The moments of _moments for a result of the period, written out (one per result replayed), same sums
        ticks = [row.finished_at + self.max_age + _TICK]
        if self.last_failure is not None:
            ticks.append(self.last_failure + window + _TICK)
        for rp in row.recovery_points:
            ticks.append(rp + rpo + _TICK)
        for ru in row.retain_until:
            ticks.append(ru - horizon + _TICK)
        self.ticks = tuple(ticks)

    def _moments(self, rpo: float, horizon: float, window: float) -> list[float]:
        out = [] if self.last_failure is None else [self.last_failure + window]
        if self.row is not None:
            out.append(self.row.finished_at + self.max_age)
            out += [rp + rpo for rp in self.row.recovery_points]
            out += [ru - horizon for ru in self.row.retain_until]
        elif self.before is not None:
            out.append(self.before.finished_at + self.max_age)
            for rep in self.before.copies:
                if rep.recovery_point is not None:
                    out.append(rep.recovery_point + rpo)
                if rep.retain_until_min is not None:
                    out.append(rep.retain_until_min - horizon)
        return out


def replay(cfg: Config, asset: str, initial: dict[str, ValidatorStats], rows: list[Row],
           attestations: list[Attestation], acks: list[Ack], since: float, until: float) -> list[Interval]:
    """The asset's compliance intervals over [since, until]. ``initial``: per validator label, its state just
    before ``since``; ``rows``: the asset's results of the period in stored order; ``attestations`` and
    ``acks``: every one up to ``until``, oldest first (those before ``since`` are in force at the start)."""
    return _Replay(cfg, asset, initial, attestations, acks, since).run(rows, attestations, acks, until)


class _Replay:
    """The state of one asset's replay: each validator's, the attestations and acks in force."""

    def __init__(self, cfg: Config, asset: str, initial: dict[str, ValidatorStats],
                 attestations: list[Attestation], acks: list[Ack], since: float) -> None:
        self.cfg, self.asset, self.since = cfg, asset, since
        acfg = cfg.assets[asset]
        comp = cfg.compliance
        self.rpo, self.horizon = acfg.rpo.total_seconds(), comp.min_retention_remaining.total_seconds()
        self.window, self.att_age = comp.window.total_seconds(), comp.offline_attestation_max_age.total_seconds()
        self.state: dict[str, _Validator] = {}
        for vcfg in acfg.validators:
            start_state = self.state[vcfg.label] = _Validator(vcfg.effective_max_age(cfg))
            got = initial.get(vcfg.label)
            if got is not None:
                start_state.last_run, start_state.last_success = got.last_run_at, got.last_success_at
                start_state.last_failure, start_state.before = got.last_failure_at, got.last_result
        self.atts = {(a.asset, a.copy): a for a in attestations if a.asset == asset and a.created_at < since}
        self.ack_map = {(k.asset, k.validator): k for k in acks if k.asset == asset and k.created_at < since}
        for v in self.state.values():
            v.refresh(self.rpo, self.horizon, self.window)
        self.att_ticks: tuple[float, ...] = ()
        self.refresh_attestations()

    def events(self, rows: list[Row], attestations: list[Attestation], acks: list[Ack],
               until: float) -> list[tuple[float, int, Row | Attestation | Ack]]:
        """Results, attestations and acks of the period, in time order (stored order among equal times)."""
        since, asset = self.since, self.asset
        events: list[tuple[float, int, Row | Attestation | Ack]] = [(r.finished_at, i, r) for i, r in enumerate(rows)]
        n = len(events)
        events += [(a.created_at, n + i, a) for i, a in enumerate(attestations)
                   if a.asset == asset and since <= a.created_at <= until]
        n = len(events)
        events += [(k.created_at, n + i, k) for i, k in enumerate(acks)
                   if k.asset == asset and since <= k.created_at <= until]
        events.sort(key=_WHEN)
        return events

    def verdict_at(self, t: float) -> tuple[tuple[str, ...], bool, AssetVerdict]:
        validators = {(self.asset, label): ValidatorStats(self.asset, label, v.last_run, v.last_success,
                                                          v.last_failure, last_result=v.latest())
                      for label, v in self.state.items() if v.last_run is not None or v.latest() is not None}
        verdict = evaluate_asset(self.cfg, Snapshot(self.cfg, validators, self.atts, acks=self.ack_map), self.asset, t)
        return tuple(verdict.rules[r].state.value for r in RULES), verdict.compliant, verdict

    def next_change(self, t: float) -> float:
        """The next moment after ``t`` at which time alone may change the verdict."""
        best = math.inf
        for v in self.state.values():
            for m in v.ticks:
                if t < m < best:
                    best = m
        for m in self.att_ticks:
            if t < m < best:
                best = m
        return best

    def refresh_attestations(self) -> None:
        moments = []
        for att in self.atts.values():
            moments.append(att.created_at + self.att_age)
            if att.recovery_point is not None:
                moments.append(att.recovery_point + self.rpo)
        self.att_ticks = tuple(m + _TICK for m in moments)

    def apply(self, item: Row | Attestation | Ack) -> bool:
        """Take one event into the state; whether the verdict may have changed."""
        if type(item) is not Row:
            if isinstance(item, Attestation):
                self.atts[(item.asset, item.copy)] = item
                self.refresh_attestations()
            elif isinstance(item, Ack):
                self.ack_map[(item.asset, item.validator)] = item
            return True
        v = self.state.get(item.validator)
        if v is None:  # a validator no longer configured: the verdict does not read it
            return False
        # store.base.newer(stamp, finished, finished) is always ``finished``: the replayed stamps are the result's
        outcome = item.outcome
        if outcome != Outcome.CANCELLED:
            v.last_run = item.finished_at
            if outcome == Outcome.OK:
                v.last_success = item.finished_at
            elif outcome == Outcome.FAILED:
                v.last_failure = item.finished_at
        signature = item.signature_
        changed = signature != v.signature or (v.row is None and v.before is None)
        v.row, v.signature = item, signature
        v.refresh(self.rpo, self.horizon, self.window)
        return changed

    def run(self, rows: list[Row], attestations: list[Attestation], acks: list[Ack], until: float) -> list[Interval]:
        events = self.events(rows, attestations, acks, until)
        intervals: list[Interval] = []
        states, compliant, verdict = self.verdict_at(self.since)
        start, reason = self.since, ("" if compliant else _reason(verdict))
        i, t = 0, self.since
        wake = self.next_change(t)
        while True:
            nxt = min(events[i][0] if i < len(events) else math.inf, wake)
            if nxt >= until:
                break
            t = max(t, nxt)
            changed = t >= wake
            while i < len(events) and events[i][0] <= t:
                changed = self.apply(events[i][2]) or changed
                i += 1
            wake = self.next_change(t)
            if not changed:
                continue
            new_states, new_compliant, verdict = self.verdict_at(t)
            if new_states != states:
                intervals.append(Interval(start, t, compliant, states, reason))
                states, compliant, start = new_states, new_compliant, t
                reason = "" if compliant else _reason(verdict)
        intervals.append(Interval(start, until, compliant, states, reason))
        return intervals
