"""/metrics rendered incrementally (``SnapshotRenderer``) is byte for byte what prometheus-client renders of the
whole snapshot (``SnapshotCollector``), while results arrive and while time alone moves verdicts (staleness,
RPO, Object Lock horizon, attestation age, failure window); only the assets that changed are rendered again.

Snapshots are built from real ``Result``/``CopyReport`` objects folded in the way the store folds them.
"""

from __future__ import annotations

import gzip
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from drwatch.config.model import Config, parse_config
from drwatch.core.model import Ack, Attestation, CopyReport, CopyState, Outcome, Result
from drwatch.engine.process import ProcessState
from drwatch.metrics.collector import SnapshotCollector
from drwatch.metrics.incremental import SnapshotRenderer, standing_changes_at
from drwatch.metrics.textformat import gzip_member
from drwatch.state.snapshot import Snapshot

NOW = 1_700_000_000.0
HOUR = 3600.0
DAY = 86400.0


def _config(assets: int, metrics: dict[str, Any] | None = None) -> Config:
    """``assets`` assets (names in sorted order), each with production, a near and a far copy and an offline vault;
    label values that need escaping ride on the observed facts of the reports."""
    locations = {
        "prod": {"kind": "filesystem", "path": "/srv/prod", "site": "dc-a", "region": "eu-west", "media": "ssd"},
        "near": {"kind": "filesystem", "path": "/srv/near", "site": "dc-a", "region": "eu-west", "media": "ssd"},
        "far": {"kind": "filesystem", "path": "/srv/far", "site": "dc-b", "region": "eu-central", "media": "hdd"},
        "vault": {"kind": "filesystem", "path": "/mnt/tape", "site": "bunker", "media": "tape", "offline": True},
    }
    data: dict[str, Any] = {
        "locations": locations,
        "assets": {
            f"a{i:03d}": {
                "rpo": "1d",
                "rto": "2h",
                "production": {"location": "prod"},
                "copies": [{"location": "near"}, {"location": "far"}, {"location": "vault"}],
                "validators": [{"kind": "replica", "max_age": "6h"},
                               {"kind": "replica", "name": "deep", "max_age": "2d"}],
            }
            for i in range(assets)
        },
        "compliance": {"window": "3d", "min_retention_remaining": "1d", "offline_attestation_max_age": "5d"},
        "metrics": metrics or {},
    }
    return parse_config(yaml.safe_dump(data), source="incremental.yaml")


def _result(asset: str, validator: str, at: float, i: int, outcome: Outcome = Outcome.OK) -> Result:
    """A replica run of ``asset`` ending at ``at``; ``i`` varies the reports (locks, escaping, object counts)."""
    reports = [
        CopyReport("production", "prod", "production", CopyState.VERIFIED, recovery_point=at - 2 * HOUR,
                   media="ssd", site="dc-a", region="eu-west", provider="local", objects={"verified": 10 + i}),
        CopyReport("near", "near", "copy", CopyState.VERIFIED if i % 4 else CopyState.FAILED,
                   recovery_point=at - 3 * HOUR, media='ss"d\\x\n', site="dc-a", region="eu-west",
                   provider="local", objects={"verified": 9, "missing": i % 3}, bytes_verified=1000 + i),
        CopyReport("far", "far", "copy", CopyState.VERIFIED, recovery_point=at - (i % 5) * 5 * HOUR,
                   media="hdd", site="dc-b", region="eu-central", provider="ünï", immutable=True,
                   retain_until_min=at + (1 + i % 3) * DAY, objects={"verified": 10}, bytes_verified=7 * i),
        CopyReport("vault", "vault", "copy", CopyState.OFFLINE, media="tape", site="bunker", offline=True),
    ]
    return Result(run_id=f"{asset}-{validator}-{at}", asset=asset, validator=validator, kind="replica",
                  outcome=outcome, started_at=at - 0.25 * (i + 1), finished_at=at, copies=tuple(reports),
                  figures={"restore_seconds": 1.5 * i} if i % 2 else {}, recovery_point=at - 2 * HOUR)


def _reference(snap: Snapshot, process: ProcessState, now: float) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snap, process, lambda: now))
    return generate_latest(registry)


def _estate(assets: int) -> Snapshot:
    cfg = _config(assets)
    snap = Snapshot(cfg)
    for i, name in enumerate(cfg.assets):
        if i % 7 == 6:
            continue  # never ran
        snap = snap.with_result(_result(name, "replica", NOW - (i % 6) * HOUR, i,
                                        Outcome.FAILED if i % 5 == 4 else Outcome.OK), NOW)
        if i % 3:
            snap = snap.with_result(_result(name, "deep", NOW - 2 * HOUR, i + 1), NOW)
            snap = snap.with_result(_result(name, "deep", NOW - HOUR, i + 2), NOW)
        if i % 4 == 1:
            snap = snap.with_attestation(Attestation(name, "vault", "by hand", NOW - (i % 6) * DAY, NOW - DAY))
    acks = {(name, "replica"): Ack(name, "replica", "ops", "known", NOW - HOUR)
            for i, name in enumerate(cfg.assets) if i % 5 == 4}
    return Snapshot(snap.config, snap.validators, snap.attestations, snap.copy_bytes, snap.generation, acks=acks)


def test_incremental_rendering_equals_prometheus_client_while_time_moves_verdicts() -> None:
    """At every time a verdict may change (and just before and after it), over six days, the incremental
    rendering is byte for byte prometheus-client's rendering of the whole snapshot; and the verdicts do change
    over that span (so the comparison covers changes that come from time alone)."""
    snap = _estate(30)
    cfg = snap.config
    process = ProcessState(started_at=NOW - DAY)
    clock = [NOW]
    renderer = SnapshotRenderer(lambda: snap, process, lambda: clock[0])
    times = sorted({t + d for name in cfg.assets for t in standing_changes_at(cfg, snap, name)
                    for d in (-0.5, 0.0, 0.5) if NOW <= t + d <= NOW + 6 * DAY})
    assert len(times) > 50
    rule_lines: set[bytes] = set()
    for now in [NOW, *times]:
        clock[0] = now
        got = renderer.render()
        assert got == _reference(snap, process, now), now
        rule_lines |= {line for line in got.splitlines() if line.startswith(b"drwatch_asset_rule_state{")
                       and line.endswith(b" 1.0")}
    assert len(rule_lines) > 3 * len(cfg.assets)  # states moved with time alone
    assert renderer.asset_renders < len(cfg.assets) * len(times) / 10  # kept while nothing of an asset changed


def test_only_assets_whose_results_changed_are_rendered_again() -> None:
    """A new result re-renders its asset alone; the rendering still equals prometheus-client's, escaping of
    label values, counters' ``_total`` and histogram buckets included; a process figure changes no asset."""
    snap = _estate(20)
    process = ProcessState(started_at=NOW - DAY)
    state = {"snap": snap}
    renderer = SnapshotRenderer(lambda: state["snap"], process, lambda: NOW + 60)
    first = renderer.render()
    assert first == _reference(snap, process, NOW + 60)
    segments = renderer.segments()  # nothing changed: the same pieces, deflated one by one, make one gzip body
    assert b"".join(segments.plain) == first and len(segments.deflated) == len(segments.plain) > 20
    assert gzip.decompress(gzip_member(segments.deflated, segments.plain)) == first
    assert b'media="ss\\"d\\\\x\\n"' in first and b'provider="\xc3\xbcn\xc3\xaf"' in first
    assert b"drwatch_validator_runs_total{" in first and b"drwatch_copy_bytes_verified_total{" in first
    assert b'drwatch_validator_duration_seconds_bucket{asset="a000",le="+Inf",validator="replica"}' in first
    rendered = renderer.asset_renders
    assert rendered == 20
    state["snap"] = snap = snap.with_result(_result("a005", "replica", NOW + 30, 3), NOW + 30)
    process.store_errors = 2
    second = renderer.render()
    assert second == _reference(snap, process, NOW + 60)
    assert second != first
    assert renderer.asset_renders == rendered + 1
    segments = renderer.segments()
    assert gzip.decompress(gzip_member(segments.deflated, segments.plain)) == second
    # A new config renders every asset again (its layout may differ).
    state["snap"] = snap = snap.with_config(_config(20))
    assert renderer.render() == _reference(snap, process, NOW + 60)
    assert renderer.asset_renders == rendered + 1 + 20


def test_duration_buckets_are_opt_in() -> None:
    """By default the duration histogram has only le="+Inf" with _sum and _count (3 series per validator);
    ``metrics: {duration_histograms: true}`` exports all 16 buckets. Both render like prometheus-client."""
    snap = _estate(3)
    process = ProcessState(started_at=NOW)
    lean = SnapshotRenderer(lambda: snap, process, lambda: NOW).render()
    assert lean == _reference(snap, process, NOW)
    full_cfg = _config(3, {"duration_histograms": True})
    full_snap = Snapshot(full_cfg, snap.validators, snap.attestations, snap.copy_bytes, acks=snap.acks)
    full = SnapshotRenderer(lambda: full_snap, process, lambda: NOW).render()
    assert full == _reference(full_snap, process, NOW)

    def buckets(text: bytes) -> list[bytes]:
        return [line for line in text.splitlines()
                if line.startswith(b'drwatch_validator_duration_seconds_bucket{asset="a000",')
                and b'validator="replica"' in line]

    assert [b.split(b'le="')[1].split(b'"')[0] for b in buckets(lean)] == [b"+Inf"]
    assert len(buckets(full)) == 16
    assert b'drwatch_validator_duration_seconds_count{asset="a000",validator="replica"} 1.0' in lean
