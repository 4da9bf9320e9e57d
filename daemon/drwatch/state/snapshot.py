"""The snapshot: an immutable view of the store that metrics, the API and compliance read.

Rebuilt from the store on start; replaced (never mutated) after each recorded result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property

from drwatch.config.model import Config
from drwatch.core.model import Ack, Attestation, CopyReport, Result
from drwatch.store import open_store
from drwatch.store.base import StoredState, ValidatorStats
from drwatch.store.rates import RateSample, SampleKey, appended, samples_of
from drwatch.validators.copies.ledger import CopySummary


@dataclass(frozen=True)
class CopyFact:
    report: CopyReport
    observed_at: float  # when the result that reported it finished
    fresh_until: float  # after this the fact is stale (validator max age)


@dataclass(frozen=True)
class Snapshot:
    config: Config
    validators: dict[tuple[str, str], ValidatorStats] = field(default_factory=dict)
    attestations: dict[tuple[str, str], Attestation] = field(default_factory=dict)
    copy_bytes: dict[tuple[str, str], int] = field(default_factory=dict)
    generation: int = 0
    # Verification economy: ledger summaries per (asset, copy) and request/egress counters, as stored.
    # Not changed by with_result: the ledger is written during runs, so they come from the store (refresh).
    verify: dict[tuple[str, str], CopySummary] = field(default_factory=dict)
    verify_counters: dict[tuple[str, str], int] = field(default_factory=dict)
    acks: dict[tuple[str, str], Ack] = field(default_factory=dict)  # (asset, validator) -> newest `drwatch ack`
    # The restore-time model's rolling samples (drwatch.store.rates), as stored; with_result appends the same way.
    rates: dict[SampleKey, tuple[RateSample, ...]] = field(default_factory=dict)

    @classmethod
    def from_state(cls, config: Config, state: StoredState) -> Snapshot:
        return cls(config, dict(state.validators), dict(state.attestations), dict(state.copy_bytes),
                   verify=dict(state.verify), verify_counters=dict(state.verify_counters), acks=dict(state.acks),
                   rates=dict(state.rates))

    def refreshed(self, state: StoredState) -> Snapshot:
        """The same config over a newer stored state (e.g. results or attestations another process wrote)."""
        return replace(self, validators=dict(state.validators), attestations=dict(state.attestations),
                       copy_bytes=dict(state.copy_bytes), generation=self.generation + 1,
                       verify=dict(state.verify), verify_counters=dict(state.verify_counters),
                       acks=dict(state.acks), rates=dict(state.rates))

    @cached_property
    def _rate_index(self) -> tuple[dict[str, list[SampleKey]], dict[str, list[SampleKey]]]:
        """Which sample keys are a location's (copies' reads, drills' dump fetches from it) and an asset's drills.
        Carried to the next snapshot while no key is added (``with_result``): only the samples are re-read."""
        by_location: dict[str, list[SampleKey]] = {}
        drills: dict[str, list[SampleKey]] = {}
        for key in self.rates:
            kind, asset, name = key
            location = name if kind == "read" else self.drill_location(asset, name)
            if location is not None:
                by_location.setdefault(location, []).append(key)
            if kind == "drill":
                drills.setdefault(asset, []).append(key)
        return by_location, drills

    @cached_property
    def _sample_cache(self) -> dict[tuple[str, str], tuple[RateSample, ...]]:
        return {}

    def samples_at(self, location: str) -> tuple[RateSample, ...]:
        """The rate samples of a location, oldest first: its copies' timed reads and the drills' dump fetches from it
        (a drill's location is its config's ``location``); computed once per snapshot and location."""
        return self._samples(("location", location), self._rate_index[0].get(location, ()))

    def drills_of(self, asset: str) -> tuple[RateSample, ...]:
        """The asset's drill samples, oldest first."""
        return self._samples(("drills", asset), self._rate_index[1].get(asset, ()))

    def _samples(self, key: tuple[str, str], keys: Iterable[SampleKey]) -> tuple[RateSample, ...]:
        got = self._sample_cache.get(key)
        if got is None:
            # oldest first (each key's rows are; the merge is sorted once here, not by every reader)
            got = self._sample_cache[key] = tuple(sorted((s for k in keys for s in self.rates.get(k, ())),
                                                         key=lambda s: s.at))
        return got

    def drill_location(self, asset: str, validator: str) -> str | None:
        """The location a drill fetches its dumps from (its config's ``location``), if it has one."""
        acfg = self.config.assets.get(asset)
        vcfg = next((v for v in acfg.validators if v.label == validator), None) if acfg is not None else None
        location = getattr(vcfg, "location", None)
        return location if isinstance(location, str) else None

    def with_config(self, config: Config) -> Snapshot:
        return replace(self, config=config, generation=self.generation + 1)

    def with_result(self, result: Result, now: float) -> Snapshot:
        """The snapshot after ``result`` was stored at wall-clock ``now``."""
        key = (result.asset, result.validator)
        stats = self.validators.get(key) or ValidatorStats(result.asset, result.validator)
        validators = {**self.validators, key: stats.with_result(result, now)}
        copy_bytes = dict(self.copy_bytes)
        for rep in result.copies:
            if rep.bytes_verified > 0:
                k = (result.asset, rep.copy)
                copy_bytes[k] = copy_bytes.get(k, 0) + rep.bytes_verified
        rates = appended(self.rates, samples_of(result))
        new = replace(self, validators=validators, copy_bytes=copy_bytes, generation=self.generation + 1, rates=rates)
        if "_rate_index" in self.__dict__ and rates.keys() == self.rates.keys():
            new.__dict__["_rate_index"] = self.__dict__["_rate_index"]  # same keys, same config: same index
        return new

    def with_attestation(self, att: Attestation) -> Snapshot:
        return replace(self, attestations={**self.attestations, (att.asset, att.copy): att},
                       generation=self.generation + 1)

    def stats(self, asset: str, validator: str) -> ValidatorStats | None:
        return self.validators.get((asset, validator))

    def last_result(self, asset: str, validator: str) -> Result | None:
        """The validator's latest stored result (drwatch.validators.base.ResultsView)."""
        stats = self.validators.get((asset, validator))
        return stats.last_result if stats is not None else None

    def last_read(self, location: str) -> float | None:
        """When the newest stored timed read of ``location`` finished (any asset's: its rate samples)."""
        rows = self.samples_at(location)
        return rows[-1].at if rows else None

    def copy_facts(self, asset: str) -> dict[str, CopyFact]:
        """Per copy label, the newest report of it among the asset's configured validators."""
        acfg = self.config.assets.get(asset)
        if acfg is None:
            return {}
        facts: dict[str, CopyFact] = {}
        for vcfg in acfg.validators:
            stats = self.validators.get((asset, vcfg.label))
            if stats is None or stats.last_result is None:
                continue
            res = stats.last_result
            fresh_until = res.finished_at + vcfg.effective_max_age(self.config)
            for rep in res.copies:
                have = facts.get(rep.copy)
                if have is None or have.observed_at < res.finished_at:
                    facts[rep.copy] = CopyFact(rep, res.finished_at, fresh_until)
        return facts

    def recovery_point(self, asset: str) -> float | None:
        acfg = self.config.assets.get(asset)
        if acfg is None:
            return None
        points = [
            s.last_result.recovery_point
            for v in acfg.validators
            if (s := self.validators.get((asset, v.label))) is not None
            and s.last_result is not None and s.last_result.recovery_point is not None
        ]
        return max(points) if points else None


async def load_snapshot(config: Config) -> Snapshot:
    """The stored state as a snapshot, as a (re)started daemon builds it: the store opened, read and closed."""
    store = open_store(config)
    await store.open()
    try:
        return Snapshot.from_state(config, await store.load_state())
    finally:
        await store.close()
