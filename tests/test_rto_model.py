"""The restore-time model's bookkeeping: rate samples persisted and bounded on both store backends (the projection
after a restart equals the one before), declared inputs of an offline copy, the sample window, and a model that
keeps missing real restores becoming a finding."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from drwatch.config.model import Config, parse_config
from drwatch.core.model import Attestation, CopyReport, CopyState, Outcome, Result
from drwatch.state.compliance import evaluate
from drwatch.state.rto import AssetProjection, project
from drwatch.state.rto_drills import settled
from drwatch.state.snapshot import Snapshot
from drwatch.store import open_store
from drwatch.store.rates import KEEP

NOW = time.time()


def config(tmp: Path, store: dict[str, Any] | None = None, **asset: Any) -> Config:
    data = {
        "store": store or {"sqlite": str(tmp / "state.sqlite")},
        "locations": {
            "prod": {"kind": "filesystem", "path": str(tmp / "prod"), "site": "a"},
            "near": {"kind": "filesystem", "path": str(tmp / "near"), "site": "a"},
            "vault": {"kind": "filesystem", "path": str(tmp / "vault"), "site": "b", "offline": True,
                      "restore": {"retrieval_time": "24h", "bytes_per_second": 100e6}},
            "dumps": {"kind": "filesystem", "path": str(tmp / "dumps"), "site": "a"},
        },
        "assets": {"data": {"rpo": "1d", "rto": "4h", "production": {"location": "prod"},
                            "copies": [{"location": "near"}, {"location": "vault"}],
                            "validators": [{"kind": "replica"},
                                           {"kind": "postgres_restore", "location": "dumps"}], **asset}},
    }
    return parse_config(yaml.safe_dump(data), source=str(tmp / "drwatch.yaml"))


def replica(run: int, at: float, nbytes: int = 10**9, read: tuple[int, float] = (10**8, 1.0)) -> Result:
    """A replica result: production and ``near`` verified, ``near`` read ``read`` = (bytes, seconds)."""
    reps = (CopyReport("production", "prod", "production", CopyState.VERIFIED, at, site="a"),
            CopyReport("near", "near", "copy", CopyState.VERIFIED, at, site="a", read_bytes=read[0],
                       read_seconds=read[1]))
    return Result(f"r{run}", "data", "replica", "replica", Outcome.OK, at - 5, at, copies=reps,
                  figures={"bytes_reference": float(nbytes)}, recovery_point=at)


def drill(run: int, at: float, restore: float, fetch: float = 1.0, nbytes: int = 10**8) -> Result:
    return Result(f"d{run}", "data", "postgres_restore", "postgres_restore", Outcome.OK, at - restore, at,
                  figures={"bytes": float(nbytes), "fetch_seconds": fetch, "restore_seconds": restore},
                  recovery_point=at)


def projected(cfg: Config, snap: Snapshot, now: float = NOW) -> AssetProjection:
    return project(cfg, snap, evaluate(cfg, snap, now), now)["data"]


async def test_rate_samples_survive_a_restart_and_stay_bounded(tmp_path: Path, store_config: dict[str, Any]) -> None:
    """Read and drill samples written with their results (SQLite and PostgreSQL) load back equal to what the live
    snapshot holds, the newest KEEP per location; the projection from the reloaded state equals the live one."""
    cfg = config(tmp_path, store_config)
    live = Snapshot(cfg)
    store = open_store(cfg)
    await store.open()
    try:
        for i in range(KEEP + 6):
            for result in (replica(i, NOW - 600 + i, read=(10**8 + i, 1.0)), drill(i, NOW - 600 + i, 3.0)):
                await store.record(result)
                live = live.with_result(result, NOW)
        loaded = Snapshot.from_state(cfg, await store.load_state())
    finally:
        await store.close()
    reads = loaded.rates[("read", "data", "near")]
    assert len(reads) == KEEP and [s.bytes for s in reads] == [10**8 + i for i in range(6, KEEP + 6)]
    assert loaded.rates == live.rates
    assert projected(cfg, loaded) == projected(cfg, live)


def test_projection_from_measured_reads_and_drills(tmp_path: Path) -> None:
    """size / throughput + retrieval + drills' restore work: the drill's 100 MB dump is the recovery point (not
    the replica's 1 GB prefix); ``near`` read at 100 MB/s, the drill spent 2 s beyond its 1 s fetch: 1 + 2 = 3 s.
    The vault (declared 24 h + 100 MB/s) is projected too but does not count: it is not attested."""
    cfg = config(tmp_path)
    snap = Snapshot(cfg).with_result(replica(1, NOW - 60), NOW).with_result(drill(1, NOW - 30, 3.0), NOW)
    p = projected(cfg, snap)
    near, vault = (next(c for c in p.copies if c.copy == n) for n in ("near", "vault"))
    assert near.throughput == 100e6 and near.samples == 1 and near.size_bytes == 1e8
    assert near.seconds == 3.0 and near.fixed_seconds == 2.0
    assert vault.seconds == 1 + 86400 + 2 and not vault.counted
    assert p.copy == "near" and p.seconds == 3.0 and p.findings == ()


def test_sample_window_and_declared_offline_inputs(tmp_path: Path) -> None:
    """Samples older than sample_max_age are not used (no throughput: no projection for ``near``); the offline,
    attested vault uses its declared 24 h retrieval and 100 MB/s, and as the only immutable and off-site copy over
    the 4 h RTO it raises both warnings — and rto_at_risk, being the only copy projected."""
    cfg = config(tmp_path, validators=[{"kind": "replica"}])
    old = NOW - 31 * 86400
    snap = Snapshot(cfg).with_result(replica(1, NOW - 60, read=(10**8, 1.0)), NOW)
    snap = replace_rates_time(snap, old)
    snap = snap.with_attestation(Attestation("data", "vault", "checked", NOW - 3600, NOW - 3600))
    p = projected(cfg, snap)
    near, vault = (next(c for c in p.copies if c.copy == n) for n in ("near", "vault"))
    assert near.seconds is None and near.throughput is None
    assert vault.counted and vault.immutable and vault.offsite and vault.throughput_from == "declared"
    assert vault.seconds == 10**9 / 100e6 + 86400
    codes = {f.code for f in p.findings}
    # near (counted) is not projected: no rto_at_risk, and the RTO cannot be judged (it may be the fast copy)
    assert codes == {"rto_offsite_slow", "rto_immutable_slow", "rto_not_judged"}
    assert p.seconds is None


def test_an_rto_that_cannot_be_judged_says_so_and_an_empty_recovery_point_restores_in_no_time(
        tmp_path: Path) -> None:
    """An attested offline vault with nothing declared (no throughput, no retrieval time) and a projected copy over
    the RTO: the RTO cannot be judged (the vault may be the fast one): `rto_not_judged` and
    drwatch_asset_restore_judged 0, never silence.
    Once the vault declares its throughput the asset is judged (1). A proven recovery point of 0 bytes (ok run)
    is a size: projected at the retrieval latency, not 'size not known' forever."""
    from drwatch.metrics.restore import restore_families

    def judged(cfg: Config, snap: Snapshot) -> list[tuple[dict[str, str], float]]:
        p = projected(cfg, snap)
        fams = {f.name: f for f in restore_families(["data"], {"data": p})}
        return [(s.labels, s.value) for s in fams["drwatch_asset_restore_judged"].samples]

    cfg = config(tmp_path, rto="1s", validators=[{"kind": "replica"}])
    vault = cfg.locations["vault"]
    object.__setattr__(vault, "restore", None)  # nothing declared: neither throughput nor retrieval time
    snap = Snapshot(cfg).with_result(replica(1, NOW - 60, read=(10**8, 1.0)), NOW)
    snap = snap.with_attestation(Attestation("data", "vault", "checked", NOW - 3600, NOW - 3600))
    p = projected(cfg, snap)
    assert p.seconds is None and "rto_at_risk" not in {f.code for f in p.findings}
    assert "rto_not_judged" in {f.code for f in p.findings}
    assert judged(cfg, snap) == [({"asset": "data"}, 0.0)]

    cfg = config(tmp_path, rto="1s", validators=[{"kind": "replica"}])  # the vault declares 100 MB/s again
    p = projected(cfg, snap)
    assert p.seconds is not None and {"rto_at_risk"} <= {f.code for f in p.findings}
    assert "rto_not_judged" not in {f.code for f in p.findings}
    assert judged(cfg, snap) == [({"asset": "data"}, 1.0)]

    empty = Snapshot(cfg).with_result(replica(2, NOW - 60, nbytes=0), NOW)
    near = next(c for c in projected(cfg, empty).copies if c.copy == "near")
    assert near.size_bytes == 0 and near.seconds == 0.0, near


def replace_rates_time(snap: Snapshot, at: float) -> Snapshot:
    from dataclasses import replace
    rates = {k: tuple(replace(s, at=at) for s in rows) for k, rows in snap.rates.items()}
    return replace(snap, rates=rates)


def test_drills_far_from_their_projection_make_the_model_unreliable(tmp_path: Path) -> None:
    """Drills of the same dump whose restore time keeps growing (3, 10, 30, 100, 300 s: the database outgrew the
    restore host): each misses the projection made from the ones before by more than 50 %; three in a row are
    rto_projection_unreliable. Steady drills are not."""
    cfg = config(tmp_path)
    steady = erratic = Snapshot(cfg).with_result(replica(1, NOW - 600), NOW)
    for i in range(5):
        steady = steady.with_result(drill(i, NOW - 500 + i * 10, 3.0), NOW)
        erratic = erratic.with_result(drill(i, NOW - 500 + i * 10, (3.0, 10.0, 30.0, 100.0, 300.0)[i]), NOW)
    assert "rto_projection_unreliable" not in {f.code for f in projected(cfg, steady).findings}
    assert all(abs(c.error) < 0.01 for c in projected(cfg, steady).drills.comparisons)
    p = projected(cfg, erratic)
    assert len(p.drills.comparisons) == 4 and all(c.error < -0.5 for c in p.drills.comparisons), p.drills
    assert "rto_projection_unreliable" in {f.code for f in p.findings}, p.drills


def test_drills_of_different_sizes_separate_a_fixed_cost(tmp_path: Path) -> None:
    """Drills of 100 MB (3 s) and 400 MB (6 s) beyond a 1 s fetch: 1 s fixed + 1 s per 100 MB, so a 1 GB
    restore's work is projected at 11 s — not the 15 s that seconds-per-byte alone (7 s / 500 MB) would give.
    One size only: seconds per byte."""
    from drwatch.state.rto_drills import restore_work
    cfg = config(tmp_path)
    one = Snapshot(cfg).with_result(drill(1, NOW - 50, 3.0), NOW)
    assert restore_work(cfg, one, "data", 1e9, NOW) == 20.0  # 2 s per 100 MB
    two = one.with_result(drill(2, NOW - 40, 6.0, nbytes=4 * 10**8), NOW)
    work = restore_work(cfg, two, "data", 1e9, NOW)
    assert work is not None and abs(work - 11.0) < 1e-6


def test_one_slow_drill_does_not_move_the_projection_of_the_ones_after_it(tmp_path: Path) -> None:
    """Drills of one size, 2 s of work each, but one took 8 s (a busy host): the work projected for the next is
    the median, 2 s per 100 MB (the mean would make it 3.5 s, and every later drill look 75 % off the model)."""
    from drwatch.state.rto_drills import restore_work
    cfg = config(tmp_path)
    snap = Snapshot(cfg)
    for run, restore in enumerate((3.0, 9.0, 3.0, 3.0)):
        snap = snap.with_result(drill(run, NOW - 100 + 10 * run, restore), NOW)
    work = restore_work(cfg, snap, "data", 10**8, NOW)
    assert work is not None and abs(work - 2.0) < 1e-9


def test_status_page_shows_projection_copy_and_why(tmp_path: Path) -> None:
    """The status page (the same document as /api/v1/status) has the restore-time table: declared RTO, projected
    time, the copy it comes from and why."""
    from drwatch.reporting.page import render
    from drwatch.state.report import document
    cfg = config(tmp_path)
    snap = Snapshot(cfg).with_result(replica(1, NOW - 60), NOW).with_result(drill(1, NOW - 30, 3.0), NOW)
    html = render(document(snap, NOW), "test", {"data": 4 * 3600.0})
    section = html[html.index("<h2>Restore time</h2>"):]
    assert 'class="n restore-projected">3s<' in section and '<td data-label="from copy">near</td>' in section
    assert "fastest counted copy &#x27;near&#x27;" in section and "within RTO" in section


def test_incremental_metrics_follow_a_shared_locations_throughput_and_the_sample_window(tmp_path: Path) -> None:
    """Two assets with copies on one location: a read measured by one asset's run changes the other's projection
    too (once the minute it was recorded in has ended: a read in the current minute moves nothing yet), and samples
    ageing out of ``sample_max_age`` change them with time alone; the incremental /metrics stays
    byte for byte prometheus-client's rendering of the whole snapshot."""
    from prometheus_client import CollectorRegistry, generate_latest

    from drwatch.engine.process import ProcessState
    from drwatch.metrics.collector import SnapshotCollector
    from drwatch.metrics.incremental import SnapshotRenderer

    data = {"locations": {"prod": {"kind": "filesystem", "path": str(tmp_path / "p"), "site": "a"},
                          "near": {"kind": "filesystem", "path": str(tmp_path / "n"), "site": "a"}},
            "restore_time": {"sample_max_age": "2d"},
            "assets": {n: {"rpo": "30d", "rto": "1m", "production": {"location": "prod", "prefix": n},
                           "copies": [{"location": "near", "prefix": n}], "validators": [{"kind": "replica"}]}
                       for n in ("a", "b")}}
    cfg = parse_config(yaml.safe_dump(data), source=str(tmp_path / "drwatch.yaml"))

    def run(asset: str, i: int, at: float, read: tuple[int, float]) -> Result:
        return replace_asset(replica(i, at, nbytes=10**9, read=read), asset)

    minute = settled(NOW)  # the start of a rate step (samples recorded after it join the figure when it ends)
    state = {"snap": Snapshot(cfg).with_result(run("a", 1, minute - 3 * 86400, (10**8, 1.0)), NOW)
             .with_result(run("b", 2, minute - 86400, (0, 0.0)), NOW)}
    clock = [minute + 30]
    process = ProcessState(started_at=NOW - 86400)
    renderer = SnapshotRenderer(lambda: state["snap"], process, lambda: clock[0])

    def reference() -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(lambda: state["snap"], process, lambda: clock[0]))
        return generate_latest(registry)

    first = renderer.render()
    assert first == reference()
    assert b'drwatch_copy_restore_projected_seconds{asset="b",copy="near"}' not in first  # sample too old
    state["snap"] = state["snap"].with_result(run("a", 3, minute - 60, (10**9, 2.0)), NOW)  # only a ran
    second = renderer.render()
    assert second == reference()
    assert b'drwatch_copy_restore_projected_seconds{asset="b",copy="near"} 2.0' in second  # 1 GB at 500 MB/s
    # A read in the current minute (b's run, 1 GB in 20 s): it joins the location's figure when the minute ends,
    # so now only b (whose own result changed) is evaluated again, and nobody's projection moves yet (at 10,000
    # assets on shared locations, every read had re-rendered every asset).
    evaluations = renderer.evaluations
    state["snap"] = state["snap"].with_result(run("b", 4, minute + 40, (10**9, 20.0)), NOW)
    clock[0] = minute + 45
    held = renderer.render()
    assert held == reference()
    assert renderer.evaluations - evaluations == 1
    assert b'drwatch_copy_restore_projected_seconds{asset="a",copy="near"} 2.0' in held
    # The minute ends: the sample joins the figure (2 GB in 22 s), both assets' projections move together.
    clock[0] = minute + 61
    moved = renderer.render()
    assert moved == reference()
    assert b'drwatch_copy_restore_projected_seconds{asset="a",copy="near"} 2.0' not in moved
    assert b'drwatch_copy_restore_projected_seconds{asset="b",copy="near"} 2.0' not in moved
    clock[0] = minute + 2 * 86400 + 120  # the last samples age out too
    third = renderer.render()
    assert third == reference()
    assert b'drwatch_copy_restore_projected_seconds{asset="b"' not in third


def replace_asset(result: Result, asset: str) -> Result:
    from dataclasses import replace
    return replace(result, asset=asset, run_id=f"{asset}-{result.run_id}")


def test_a_location_shared_by_many_assets_is_read_by_its_window_only(tmp_path: Path) -> None:
    """Three assets read one location 30 times each: a projection averages the location's newest
    ``restore_time.samples`` (5) not older than ``sample_max_age``, and an asset's series are due again only when
    one of those 5 ages out (not at each of the location's 90 samples' expiries: at thousands of assets on one
    location, each evaluation walked every asset's samples)."""
    from drwatch.metrics.restore import rate_expiries
    from drwatch.state.rto_drills import throughput

    data = {"locations": {"prod": {"kind": "filesystem", "path": str(tmp_path / "p"), "site": "a"},
                          "near": {"kind": "filesystem", "path": str(tmp_path / "n"), "site": "b"}},
            "restore_time": {"samples": 5, "sample_max_age": "1d"},
            "assets": {n: {"rpo": "30d", "production": {"location": "prod", "prefix": n},
                           "copies": [{"location": "near", "prefix": n}], "validators": [{"kind": "replica"}]}
                       for n in ("a", "b", "c")}}
    cfg = parse_config(yaml.safe_dump(data), source=str(tmp_path / "drwatch.yaml"))
    snap = Snapshot(cfg)
    for i in range(90):
        result = replica(i, NOW - 80_000 + i * 600, read=(10**6 * (i + 1), 1.0))
        snap = snap.with_result(replace_asset(result, "abc"[i % 3]), NOW)
    newest = sorted(snap.samples_at("near"), key=lambda s: s.at)[-5:]
    rate, n = throughput(cfg, snap, "near", NOW, before=NOW)
    assert n == 5 and rate == sum(s.bytes for s in newest) / 5.0
    expiries = rate_expiries(cfg, snap, "a")
    assert sorted(expiries) == [s.at + 86400 for s in newest]
    # just after the oldest of those 5 aged out: the 4 newer ones, not an older one in its place
    later = NOW + 86400 - 80_000 + 85 * 600 + 1
    assert throughput(cfg, snap, "near", later, before=later)[1] == 4


def test_sizes_read_the_same_in_every_report(tmp_path: Path) -> None:
    """One byte formatter (binary units) for the restore-time why, the status page and budget messages: the
    why of 100 MB read at 100 MB/s says MiB as the page's tables do."""
    from drwatch.core.sizes import format_size

    assert [format_size(n) for n in (0, 1023, 1024, 1.5 * 2**30, 3 * 2**40, 2**50)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 GiB", "3.0 TiB", "1024.0 TiB"]
    cfg = config(tmp_path)
    snap = Snapshot(cfg).with_result(replica(1, NOW - 60), NOW).with_result(drill(1, NOW - 30, 3.0), NOW)
    assert projected(cfg, snap).why.startswith("fastest counted copy 'near': 95.4 MiB at 95.4 MiB/s (measured")


def test_a_lower_bound_within_the_rto_does_not_meet_it(tmp_path: Path) -> None:
    """The attested vault declares its courier (1 h) but no throughput: projected at a lower bound of 1 h, within
    the 4 h RTO, while the measured copy ``near`` takes ~28 h. A lower bound shows an RTO missed, never met (the
    vault's read may take days): not judged, never 'within the RTO' from the vault. Once its 1 h bound exceeds a
    30 min RTO, the RTO is missed (rto_at_risk)."""
    cfg = config(tmp_path, validators=[{"kind": "replica"}])
    object.__setattr__(cfg.locations["vault"].restore, "bytes_per_second", None)
    object.__setattr__(cfg.locations["vault"].restore, "retrieval_time", timedelta(hours=1))
    snap = Snapshot(cfg).with_result(replica(1, NOW - 60, read=(10**6, 100.0)), NOW)
    snap = snap.with_attestation(Attestation("data", "vault", "checked", NOW - 3600, NOW - 3600))
    p = projected(cfg, snap)
    vault = next(c for c in p.copies if c.copy == "vault")
    assert vault.counted and vault.lower_bound and vault.seconds == 3600
    assert p.seconds is None and p.copy is None, p
    assert {f.code for f in p.findings} == {"rto_not_judged"}, p.findings
    assert "vault only bounded below" in p.why
    from drwatch.state.report import document, table
    text = table(document(snap, NOW))
    assert "  data: warning rto_not_judged: the RTO 4h cannot be judged" in text, text  # no empty "[]" subject

    cfg = config(tmp_path, rto="30m", validators=[{"kind": "replica"}])
    object.__setattr__(cfg.locations["vault"].restore, "bytes_per_second", None)
    object.__setattr__(cfg.locations["vault"].restore, "retrieval_time", timedelta(hours=1))
    p = projected(cfg, snap)
    assert p.copy == "vault" and p.seconds == 3600 and "rto_at_risk" in {f.code for f in p.findings}


def test_reads_of_a_run_or_copy_that_could_not_be_checked_are_no_sample(tmp_path: Path) -> None:
    """A read that failed (throttled, timed out, location down) is busy time without bytes: a run ending error or
    timeout, or a copy in state error, yields no read sample, so one monitor failure does not cut the location's
    throughput (and raise rto_at_risk) for the whole sample window. A failed run (a bad backup) still measured
    its reads."""
    from dataclasses import replace

    from drwatch.store.rates import samples_of

    good = replica(1, NOW - 60)
    assert [s.name for s in samples_of(good)] == ["near"]
    assert [s.name for s in samples_of(replace(good, outcome=Outcome.FAILED))] == ["near"]
    for outcome in (Outcome.ERROR, Outcome.TIMEOUT):
        assert samples_of(replace(good, outcome=outcome)) == []
    down = replace(good.copies[1], state=CopyState.ERROR, read_bytes=10**6, read_seconds=60.0)
    assert samples_of(replace(good, outcome=Outcome.FAILED, copies=(good.copies[0], down))) == []
    cfg = config(tmp_path)
    snap = Snapshot(cfg).with_result(good, NOW).with_result(
        replace(good, run_id="r2", outcome=Outcome.ERROR, finished_at=NOW - 30,
                copies=(good.copies[0], replace(down, state=CopyState.VERIFIED))), NOW)
    assert next(c for c in projected(cfg, snap).copies if c.copy == "near").throughput == 100e6
