"""The snapshot's families rendered incrementally: only the assets whose series changed are rendered again.

:class:`SnapshotRenderer` keeps each asset's sample lines (rendered by prometheus-client) in chunks, joined and
deflated per family, and finds per render the assets to look at again: inputs replaced in the snapshot, or a
verdict reaching a time it may change at (:func:`standing_changes_at`). The exposition
(:class:`drwatch.metrics.exposition.Exposition`) serves its segments off the event loop.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import generate_latest

from drwatch.config.model import Config
from drwatch.engine.process import ProcessState
from drwatch.metrics.collector import AssetStanding, asset_families, global_families, process_families
from drwatch.metrics.restore import rate_expiries, rate_inputs, rates_changed
from drwatch.metrics.textformat import Fixed, deflate, sample_lines, split_family
from drwatch.state.snapshot import Snapshot

_EPSILON = 0.001  # seconds: a verdict is re-evaluated this much before (and after) a time it may change at


def standing_changes_at(cfg: Config, snap: Snapshot, asset: str) -> list[float]:
    """Every time at which the asset's verdict states may change while its results stay the same.

    The verdict (:func:`drwatch.state.compliance.evaluate_asset`) reads ``now`` only to compare it with these: a
    result going stale (finished + max age), a recovery point leaving the RPO, an Object Lock retain-until
    coming within the minimum horizon, an attestation ageing out (or its recovery point leaving the RPO), a
    failure leaving the evaluation window.
    """
    acfg = cfg.assets[asset]
    comp = cfg.compliance
    rpo = acfg.rpo.total_seconds()
    horizon = comp.min_retention_remaining.total_seconds()
    times: list[float] = []
    for vcfg in acfg.validators:
        stats = snap.validators.get((asset, vcfg.label))
        if stats is None:
            continue
        if stats.last_failure_at is not None:
            times.append(stats.last_failure_at + comp.window.total_seconds())
        res = stats.last_result
        if res is None:
            continue
        times.append(res.finished_at + vcfg.effective_max_age(cfg))
        for rep in res.copies:
            if rep.recovery_point is not None:
                times.append(rep.recovery_point + rpo)
            if rep.retain_until_min is not None:
                times.append(rep.retain_until_min - horizon)
    for ref in ("production", *(c.label for c in acfg.copies)):
        att = snap.attestations.get((asset, ref))
        if att is not None:
            times.append(att.created_at + comp.offline_attestation_max_age.total_seconds())
            if att.recovery_point is not None:
                times.append(att.recovery_point + rpo)
    return times + rate_expiries(cfg, snap, asset)


@dataclass
class _AssetEntry:
    inputs: tuple[object, ...]
    standing: AssetStanding
    valid_from: float  # the standing holds for valid_from <= now < valid_until
    valid_until: float
    fragments: tuple[bytes, ...]  # sample lines per family of asset_families


def _inputs(snap: Snapshot, asset: str, validators: tuple[str, ...], refs: tuple[str, ...],
            now: float) -> tuple[object, ...]:
    """Everything of the snapshot an asset's series depend on (objects are replaced, never mutated)."""
    return (*(snap.validators.get((asset, v)) for v in validators), *(snap.acks.get((asset, v)) for v in validators),
            *(snap.attestations.get((asset, r)) for r in refs), *(snap.copy_bytes.get((asset, r)) for r in refs),
            *(snap.verify.get((asset, r)) for r in refs), *rate_inputs(snap, asset, now))


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b, strict=True))


_MISSING = object()


def _changed_assets(old: Mapping[tuple[str, str], object], new: Mapping[tuple[str, str], object]) -> set[str]:
    """Assets with an entry replaced, added or removed between two versions of a snapshot mapping."""
    if old is new:
        return set()
    out = {key[0] for key, value in new.items() if old.get(key, _MISSING) is not value}
    out.update(key[0] for key in old.keys() - new.keys())
    return out


@dataclass(frozen=True)
class Segments:
    """An exposition in pieces: the text, and each piece deflated (see :func:`deflate`)."""

    plain: list[bytes]
    deflated: list[bytes]


CHUNK = 64  # assets whose sample lines are joined (and deflated) together, per family


class SnapshotRenderer:
    """The snapshot's families in the text format, re-rendering only the assets whose series changed.

    Byte for byte what :class:`drwatch.metrics.collector.SnapshotCollector` renders through prometheus-client (each
    asset's series are rendered by prometheus-client too, then kept). Per render it finds the assets whose
    inputs changed by comparing the snapshot's mappings with the previous snapshot's (entries are replaced,
    never mutated: identity tells), plus the assets whose verdict reached a time it may change at
    (:func:`standing_changes_at`, kept in a heap); only those are evaluated, and only those whose series
    differ are rendered again. Assets are kept in chunks of :data:`CHUNK`, joined and deflated per family,
    so a render costs the changed chunks plus one pass over the chunks, and the gzip body needs no
    compression of what did not change. Not thread-safe: one render at a time (:class:`Exposition`).
    """

    def __init__(self, snapshot: Callable[[], Snapshot], process: ProcessState, clock: Callable[[], float]) -> None:
        self._snapshot = snapshot
        self._process = process
        self._clock = clock
        self._config: Config | None = None
        self._previous: Snapshot | None = None
        self._last_now = -math.inf
        self._headers: tuple[bytes, ...] = ()
        self._deflated_headers: tuple[bytes, ...] = ()
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._layout: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self._entries: list[_AssetEntry | None] = []
        self._chunks: list[tuple[tuple[bytes, ...], tuple[bytes, ...]]] = []  # per chunk: plain, deflated
        self._expiry: list[tuple[float, int]] = []  # (valid_until, asset index), lazily deleted
        self.asset_renders = 0  # assets whose series were rendered (tests, benchmarks)
        self.evaluations = 0  # verdicts evaluated

    def render(self) -> bytes:
        return b"".join(self.segments().plain)

    def segments(self) -> Segments:
        snap = self._snapshot()
        cfg = snap.config
        now = self._clock()
        dirty = self._dirty(snap, cfg, now)
        chunks = set()
        for i in dirty:
            if self._refresh(cfg, snap, i, now):
                chunks.add(i // CHUNK)
        for c in chunks:
            self._chunks[c] = self._join(c)
        self._previous, self._last_now = snap, now
        if len(self._expiry) > 4 * len(self._names) + 64:
            self._expiry = [(e.valid_until, i) for i, e in enumerate(self._entries)
                            if e is not None and e.valid_until < math.inf]
            heapq.heapify(self._expiry)
        head = generate_latest(Fixed(process_families(self._process)))
        tail = generate_latest(Fixed(global_families(cfg, snap, now)))
        plain, deflated = [head], [deflate(head)]
        for f, (header, zheader) in enumerate(zip(self._headers, self._deflated_headers, strict=True)):
            plain.append(header)
            deflated.append(zheader)
            for pieces, zpieces in self._chunks:
                if pieces[f]:
                    plain.append(pieces[f])
                    deflated.append(zpieces[f])
        plain.append(tail)
        deflated.append(deflate(tail))
        return Segments(plain, deflated)

    def _dirty(self, snap: Snapshot, cfg: Config, now: float) -> set[int]:
        """Indexes of the assets to look at again: inputs replaced, or a verdict's time reached."""
        prev = self._previous
        if cfg is not self._config or prev is None or now < self._last_now:
            if cfg is not self._config:
                self._reset(cfg, snap)
            return set(range(len(self._names)))
        names: set[str] = set()
        for old, new in ((prev.validators, snap.validators), (prev.acks, snap.acks),
                         (prev.attestations, snap.attestations), (prev.copy_bytes, snap.copy_bytes),
                         (prev.verify, snap.verify)):
            names |= _changed_assets(old, new)
        names |= rates_changed(cfg, prev, snap, self._last_now, now)
        dirty = {self._index[n] for n in names if n in self._index}
        while self._expiry and self._expiry[0][0] <= now:
            _, i = heapq.heappop(self._expiry)
            dirty.add(i)
        return dirty

    def _reset(self, cfg: Config, snap: Snapshot) -> None:
        self._config = cfg
        self._headers = tuple(split_family(f)[0] for f in asset_families(cfg, snap, [], {}))
        self._deflated_headers = tuple(deflate(h) for h in self._headers)
        self._names = list(cfg.assets)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._layout = [(tuple(v.label for v in a.validators), ("production", *(c.label for c in a.copies)))
                        for a in cfg.assets.values()]
        self._entries = [None] * len(self._names)
        empty = tuple(b"" for _ in self._headers)
        self._chunks = [(empty, empty)] * ((len(self._names) + CHUNK - 1) // CHUNK)
        self._expiry = []

    def _refresh(self, cfg: Config, snap: Snapshot, i: int, now: float) -> bool:
        """Bring asset ``i`` up to date; whether its sample lines changed."""
        name = self._names[i]
        validators, refs = self._layout[i]
        inputs = _inputs(snap, name, validators, refs, now)
        entry = self._entries[i]
        same_inputs = entry is not None and _same(entry.inputs, inputs)
        if entry is not None and same_inputs and entry.valid_from <= now < entry.valid_until:
            return False
        standing = AssetStanding.evaluate(cfg, snap, name, now)
        self.evaluations += 1
        upcoming = [t for t in standing_changes_at(cfg, snap, name) if t + _EPSILON >= now]
        valid_until = min(upcoming, default=math.inf) - _EPSILON
        if valid_until < math.inf:
            heapq.heappush(self._expiry, (max(valid_until, now), i))
        if entry is not None and same_inputs and entry.standing == standing:
            self._entries[i] = _AssetEntry(inputs, standing, now, valid_until, entry.fragments)
            return False
        fragments = tuple(sample_lines(f) for f in asset_families(cfg, snap, [name], {name: standing}))
        self.asset_renders += 1
        self._entries[i] = _AssetEntry(inputs, standing, now, valid_until, fragments)
        return entry is None or fragments != entry.fragments

    def _join(self, c: int) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        entries = [e for e in self._entries[c * CHUNK:(c + 1) * CHUNK] if e is not None]
        pieces = tuple(b"".join(e.fragments[f] for e in entries) for f in range(len(self._headers)))
        return pieces, tuple(deflate(p) for p in pieces)
