"""Verification economy on a real S3 server (moto), counted from the server side.

Every request goes through a recording loopback proxy (tests/support/s3proxy.py) in front of moto, so what
drwatch claims to have sent (its persisted request/egress counters, its figures) is compared with what
the server received. The clock is controlled (days pass between runs); the store is real SQLite.
Faults are real: objects overwritten through the S3 API, a run cancelled in the middle of its reads,
the endpoint taken away.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drwatch.config.model import Config
from drwatch.core.model import Outcome, Result
from drwatch.formats.sealing import seal_directory
from drwatch.metrics.verify import verify_families
from drwatch.state.pricing import GB
from drwatch.state.snapshot import Snapshot
from drwatch.store import open_store
from drwatch.store.base import StoredState
from drwatch.validators.copies.ledger import day_of
from tests.support.helpers import write_tree
from tests.support.s3helpers import Locations, bucket, codes, config, parse, run, subjects, upload
from tests.support.s3helpers import client as s3
from tests.support.s3proxy import RecordingProxy, s3_operation
from tests.support.s3servers import MotoServer

SIZE = 4096
N = 24
DAY = 86400.0
T0 = 1_900_000_000.0  # a fixed start (days are counted in UTC from it)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[RecordingProxy]:
    with RecordingProxy("127.0.0.1", moto.port) as p:
        yield p


def objects(seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"part-{i:03d}.bin": rng.randbytes(SIZE) for i in range(N)}


def estate(tmp: Path, moto: MotoServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch,
           verification: dict[str, Any], pricing: dict[str, Any] | None = None) -> tuple[dict[str, Any], str, str]:
    """Production (full-object SHA256 checksums) and one copy (plain PUTs: ETags equal to production's)."""
    prod, copy = bucket(moto, "econ-prod"), bucket(moto, "econ-copy")
    files = objects()
    upload(moto, prod, files, ChecksumAlgorithm="SHA256")
    upload(moto, copy, files)
    locs = Locations(monkeypatch)
    locs.s3("prod", moto, prod, site="a", endpoint_url=proxy.endpoint_url)
    extra = {"pricing": pricing} if pricing else {}
    locs.s3("copy", moto, copy, site="b", endpoint_url=proxy.endpoint_url, **extra)
    cfg = config(tmp, locs, ("prod", "data/"), [("copy", "data/")], rpo="3650d",
                 validators=[{"kind": "replica", "schedule": {"every": "1d"}}])
    cfg["assets"]["data"]["verification"] = verification
    return cfg, prod, copy


def gets(proxy: RecordingProxy, bucket_name: str) -> list[str]:
    return [r.key.removeprefix("data/") for r in proxy.snapshot(bucket_name) if s3_operation(r) == "get"]


async def state(tmp: Path, cfg_dict: dict[str, Any]) -> tuple[Config, StoredState]:
    cfg = parse(tmp, cfg_dict)
    store = open_store(cfg)
    await store.open()
    try:
        return cfg, await store.load_state()
    finally:
        await store.close()


def scrape(cfg: Config, st: StoredState) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in verify_families(cfg, Snapshot.from_state(cfg, st)):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_budget_reads_least_recently_read_first_and_counts_match_the_server(
        tmp_path: Path, moto: MotoServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a budget of 6 objects a day and read_every 4d, each day reads 6 objects never read before, so
    4 days read every byte exactly once; day 5 re-reads day 1's objects. drwatch's persisted counters
    equal the proxy's count of requests per operation and of GET bytes, and the metrics projected from
    two independent loads of the store are identical (a restart changes nothing)."""
    cfg, prod, copy = estate(tmp_path, moto, proxy, monkeypatch,
                             {"read_every": "4d", "budget": {"egress_bytes_per_day": 6 * SIZE}})
    clock = Clock(T0)
    per_day: list[list[str]] = []
    for day in range(5):
        proxy.clear()
        clock.t = T0 + day * DAY
        result, _ = await run(tmp_path, cfg, clock=clock)
        assert result.outcome == Outcome.OK, result.findings
        assert "verify_budget_too_small" not in codes(result)
        read = gets(proxy, copy)
        per_day.append(read)
        assert len(read) == 6 == len(set(read)), read
        assert result.figures["verify_bytes_read"] == 6 * SIZE
        assert gets(proxy, prod) == []  # production's SHA256 is the reference: never read
    first_four = [k for d in per_day[:4] for k in d]
    assert sorted(first_four) == sorted(objects())  # every object read once in 4 days, none twice
    assert sorted(per_day[4]) == sorted(per_day[0])  # then the least recently read come first

    cfg_obj, st = await state(tmp_path, cfg)
    samples = scrape(cfg_obj, st)
    assert value(samples, "drwatch_verify_coverage_ratio", asset="data", copy="copy", evidence="read") == 1.0
    assert value(samples, "drwatch_verify_coverage_ratio", asset="data", copy="copy", evidence="etag") == 1.0
    assert value(samples, "drwatch_verify_oldest_read_timestamp_seconds", asset="data", copy="copy") == T0 + DAY
    assert samples == scrape(*(await state(tmp_path, cfg)))


async def test_counters_equal_the_server_side_counts(
        tmp_path: Path, moto: MotoServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests by operation and egress bytes that drwatch persists per location equal what the proxy saw."""
    cfg, prod, copy = estate(tmp_path, moto, proxy, monkeypatch,
                             {"read_every": "2d", "budget": {"egress_bytes_per_day": 10 * SIZE}})
    proxy.clear()
    result, _ = await run(tmp_path, cfg, clock=Clock(T0))
    assert result.outcome == Outcome.OK, result.findings
    cfg_obj, st = await state(tmp_path, cfg)
    for location, bucket_name in (("prod", prod), ("copy", copy)):
        seen = Counter(s3_operation(r) for r in proxy.snapshot(bucket_name))
        stored = {name.removeprefix("requests:"): n for (loc, name), n in st.verify_counters.items()
                  if loc == location and name.startswith("requests:")}
        assert stored == {op: n for op, n in seen.items() if n}, (location, stored, seen)
        got = sum(r.response_bytes for r in proxy.snapshot(bucket_name) if s3_operation(r) == "get")
        assert st.verify_counters.get((location, "egress_bytes"), 0) == got
    assert st.verify_counters[("copy", "egress_bytes")] == 10 * SIZE
    samples = scrape(cfg_obj, st)
    assert value(samples, "drwatch_verify_egress_bytes_total", location="copy") == 10 * SIZE
    assert value(samples, "drwatch_verify_requests_total", location="copy", operation="get") == 10


async def test_interrupted_run_keeps_its_progress(
        tmp_path: Path, moto: MotoServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run cancelled in the middle of its reads keeps what it proved: the next run (same day) reads
    none of the objects the ledger recorded as read, reads the rest as far as the day's budget left allows (the
    interrupted run's bytes count), and the next day finishes."""
    cfg, _prod, copy = estate(tmp_path, moto, proxy, monkeypatch,
                              {"read_every": "1d", "budget": {"egress_bytes_per_day": N * SIZE}})
    proxy.get_delay = 0.1  # object GETs one at a time, 0.1 s each: ~2.4 s of reads to interrupt
    clock = Clock(T0)
    task = asyncio.ensure_future(run(tmp_path, cfg, clock=clock))
    for _ in range(600):  # up to 30 s
        if len(gets(proxy, copy)) >= 8:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(proxy.settle)  # the GETs the cancelled run had queued at the proxy are served too
    first = [r.key.removeprefix("data/") for r in proxy.snapshot(copy) if s3_operation(r) == "get"
             and r.response_bytes == SIZE]  # delivered (a GET answered after the client went away sends nothing)
    assert len(first) >= 8
    asked = [r for r in proxy.snapshot() if s3_operation(r) == "get"]  # either side, answered or not
    cfg_obj = parse(tmp_path, cfg)
    store = open_store(cfg_obj)
    await store.open()
    try:
        rows = await store.ledger_page("data", "copy", "", 1000)
        spent, _ = await store.ledger_spent("data", day_of(T0))
    finally:
        await store.close()
    recorded = {r.key for r in rows if r.read_at is not None}
    # progress was kept: every proof finished before the cancel is in the ledger, with the bytes spent. The proxy
    # serializes the GETs, but the proofs run in the merge's window: a response delivered whose proof had not
    # finished at the cancel (more of them under CPU load) is not proven, yet the bytes the client received count
    assert recorded <= set(first) and 0 < len(recorded) < N, (recorded, first)
    # the bytes received count, proven or not: the client meters a response as it starts (its length), so a
    # response cut off by the cancel may count in full while the proxy saw it undelivered; never more than asked
    assert len(recorded) * SIZE <= spent <= len(asked) * SIZE, (spent, len(asked), len(first))
    proxy.get_delay = 0.0
    proxy.clear()
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.OK, result.findings
    second = gets(proxy, copy)
    assert not recorded & set(second), recorded & set(second)  # nothing proven is read again
    # the rest is read, as far as the day's budget left after the interrupted run's spending allows
    assert len(second) == len(set(second)) == min(N - len(recorded), (N * SIZE - spent) // SIZE), (second, spent)
    _, st = await state(tmp_path, cfg)
    assert st.verify[("data", "copy")].coverage("read") == (len(recorded) + len(second)) / N
    clock.t = T0 + DAY  # the next day's budget reads what the interrupted day could not
    proxy.clear()
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.OK, result.findings
    assert set(objects()) - recorded - set(second) <= set(gets(proxy, copy))
    _, st = await state(tmp_path, cfg)
    assert st.verify[("data", "copy")].coverage("read") == 1.0


async def test_changed_objects_are_requeued_and_a_corrupt_one_fails(
        tmp_path: Path, moto: MotoServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """After full coverage, a day whose pace reads nothing reads exactly the objects that changed (a new
    version in production and copy: re-queued) and the one overwritten in the copy alone, which fails."""
    cfg, prod, copy = estate(tmp_path, moto, proxy, monkeypatch,
                             {"read_every": "30d", "budget": {"egress_bytes_per_day": "1MiB"}})
    clock = Clock(T0)
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.OK and len(gets(proxy, copy)) == N  # day one: everything is due
    clock.t = T0 + DAY
    proxy.clear()
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.OK and gets(proxy, copy) == []  # nothing due, the pace is < 1 object
    rng = random.Random(99)
    new = {"part-003.bin": rng.randbytes(SIZE), "part-017.bin": rng.randbytes(SIZE)}
    upload(moto, prod, new, ChecksumAlgorithm="SHA256")
    upload(moto, copy, new)
    s3(moto).put_object(Bucket=copy, Key="data/part-010.bin", Body=rng.randbytes(SIZE))  # corrupt, same size
    clock.t = T0 + 2 * DAY
    proxy.clear()
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert sorted(gets(proxy, copy)) == ["part-003.bin", "part-010.bin", "part-017.bin"]
    assert result.outcome == Outcome.FAILED
    assert subjects(result, "content_mismatch") == ["copy:part-010.bin"]


async def test_sealed_production_is_verified_within_the_budget(
        tmp_path: Path, moto: MotoServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a seal as the reference, production on S3 is proven like the copy (it has no provider checksum
    here, so by planned reads), not read in full on every run: per day the GETs of production and copy
    together read exactly the budget (6 objects of 48; read_every 8d), the run's spending figure equals the
    store's record and the bytes the server sent, and in 8 days every object of both is read exactly once."""
    prod, copy = bucket(moto, "econ-sprod"), bucket(moto, "econ-scopy")
    files = objects()
    upload(moto, prod, files)  # no additional checksums: only a read proves production against the seal
    upload(moto, copy, files)
    write_tree(tmp_path / "mirror", files)
    await seal_directory(tmp_path / "mirror", out_path=tmp_path / "seal.jsonl")
    locs = Locations(monkeypatch)
    locs.s3("prod", moto, prod, site="a", endpoint_url=proxy.endpoint_url)
    locs.s3("copy", moto, copy, site="b", endpoint_url=proxy.endpoint_url)
    cfg = config(tmp_path, locs, ("prod", "data/"), [("copy", "data/")], rpo="3650d",
                 validators=[{"kind": "replica", "schedule": {"every": "1d"}}])
    cfg["assets"]["data"]["manifest"] = str(tmp_path / "seal.jsonl")
    cfg["assets"]["data"]["verification"] = {"read_every": "8d", "budget": {"egress_bytes_per_day": 6 * SIZE}}
    clock = Clock(T0)
    read: dict[str, list[str]] = {prod: [], copy: []}
    for day in range(8):
        proxy.clear()
        clock.t = T0 + day * DAY
        result, _ = await run(tmp_path, cfg, clock=clock)
        assert result.outcome == Outcome.OK, result.findings
        sent = sum(r.response_bytes for b in (prod, copy) for r in proxy.snapshot(b) if s3_operation(r) == "get")
        assert sent == 6 * SIZE, (day, gets(proxy, prod), gets(proxy, copy))
        store = open_store(parse(tmp_path, cfg))
        await store.open()
        try:
            stored = (await store.ledger_spent("data", day_of(clock.t)))[0]
        finally:
            await store.close()
        assert result.figures["verify_spent_bytes_today"] == stored == sent
        for b in (prod, copy):
            read[b].extend(gets(proxy, b))
    assert sorted(read[prod]) == sorted(files) and sorted(read[copy]) == sorted(files)  # each once
    _, st = await state(tmp_path, cfg)
    assert st.verify[("data", "production")].coverage("read") == 1.0


async def test_budget_too_small_is_a_finding(
        tmp_path: Path, moto: MotoServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget that cannot read every byte within read_every reads what it may and says what it would
    take (bytes per day) and how long a full read takes at this budget; the backup is not called bad."""
    cfg, _prod, copy = estate(tmp_path, moto, proxy, monkeypatch,
                              {"read_every": "4d", "budget": {"egress_bytes_per_day": SIZE}})
    result, _ = await run(tmp_path, cfg, clock=Clock(T0))
    assert result.outcome == Outcome.OK
    assert len(gets(proxy, copy)) == 1
    finding = next(f for f in result.findings if f.code == "verify_budget_too_small")
    assert "24.0 KiB/day" in finding.message and "every 24d" in finding.message, finding.message
    assert result.figures["verify_reads_deferred"] >= 1


async def test_unreachable_copy_is_an_error_and_keeps_the_ledger(
        tmp_path: Path, moto: MotoServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the copy's endpoint is gone the run is `error` (could not check), not `failed`, and the
    ledger keeps every row it had (nothing is taken for deleted)."""
    cfg, _prod, _copy = estate(tmp_path, moto, proxy, monkeypatch,
                               {"read_every": "4d", "budget": {"egress_bytes_per_day": 6 * SIZE}})
    result, _ = await run(tmp_path, cfg, clock=Clock(T0))
    assert result.outcome == Outcome.OK
    with RecordingProxy("127.0.0.1", moto.port) as other:
        cfg["locations"]["copy"]["endpoint_url"] = other.endpoint_url
        dead = other.endpoint_url
    cfg["locations"]["copy"]["endpoint_url"] = dead  # nothing listens there any more
    result2: Result
    result2, _ = await run(tmp_path, cfg, clock=Clock(T0 + DAY))
    assert result2.outcome == Outcome.ERROR, result2.findings
    cfg_obj = parse(tmp_path, cfg)
    store = open_store(cfg_obj)
    await store.open()
    try:
        rows = await store.ledger_page("data", "copy", "", 1000)
    finally:
        await store.close()
    assert len(rows) == N and sum(r.read_at is not None for r in rows) == 6


async def test_cost_and_status(tmp_path: Path, moto: MotoServer, proxy: RecordingProxy,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The monthly cost of the copy follows its location's price table: storage by class, the planned
    read pace as egress, requests per day by operation; `status` prints coverage and cost."""
    prices = {"storage_gb_month": {"STANDARD": 0.023}, "egress_gb": 0.09,
              "requests_per_1000": {"get": 0.0004, "head": 0.0004, "list": 0.005, "bucket": 0.005}}
    cfg, _prod, _copy = estate(tmp_path, moto, proxy, monkeypatch,
                               {"read_every": "4d", "budget": {"egress_bytes_per_day": 6 * SIZE}}, pricing=prices)
    result, _ = await run(tmp_path, cfg, clock=Clock(T0))
    assert result.outcome == Outcome.OK
    cfg_obj, st = await state(tmp_path, cfg)
    summary = st.verify[("data", "copy")]
    samples = scrape(cfg_obj, st)
    storage = value(samples, "drwatch_cost_monthly_dollars", asset="data", copy="copy", kind="storage")
    assert storage == pytest.approx(N * SIZE / GB * 0.023)
    egress = value(samples, "drwatch_cost_monthly_dollars", asset="data", copy="copy", kind="egress")
    assert egress == pytest.approx(6 * SIZE * 30 / GB * 0.09)  # the pace: 24 objects / 4 days
    reqs = value(samples, "drwatch_cost_monthly_dollars", asset="data", copy="copy", kind="requests")
    expected = sum(n * 30 / 1000 * prices["requests_per_1000"][op] for op, n in summary.requests_per_day.items())
    assert reqs == pytest.approx(expected) and summary.requests_per_day["get"] == pytest.approx(6)

    from drwatch.state.report import document, table

    text = table(document(Snapshot.from_state(cfg_obj, st), T0 + 60))
    assert "Verification coverage" in text and "data/copy" in text and "USD" in text
