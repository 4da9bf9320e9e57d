"""``vector_restore`` with the Pinecone backend, against the Pinecone stand-in (tests/support/pinecone_standin.py: a
local aiohttp server speaking the documented REST contract, NOT Pinecone) and, when ``PINECONE_API_KEY`` is
set, against the real Pinecone service."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from drwatch.config.model import parse_config
from drwatch.core.errors import ConfigError
from drwatch.core.model import Outcome, Result, Severity
from drwatch.validators.vector.pinecone_api import PineconeClient
from drwatch.validators.vector.pinecone_temp import (
    created_from_name,
    sweep_pinecone_orphans,
    temp_index_name,
)
from tests.support.helpers import free_port
from tests.support.pinecone_standin import BackupFault, PineconeStandIn, pinecone_standin
from tests.support.runs import open_runner

PROD = "prod-index"
KEY_ENV = "DRW_TEST_PINECONE_KEY"
N, DIM = 300, 8


@pytest.fixture
def standin() -> Iterator[PineconeStandIn]:
    with pinecone_standin() as server:
        yield server


def vectors(n: int = N, dim: int = DIM, seed: int = 1) -> dict[str, list[float]]:
    rng = random.Random(seed)
    return {f"doc-{i:05d}": [rng.gauss(0.0, 1.0) for _ in range(dim)] for i in range(n)}


def seed_production(server: PineconeStandIn, *, backup: bool = True, age: float = 60.0, metric: str = "cosine",
                    fault: BackupFault | None = None) -> str | None:
    server.create_index(PROD, DIM, metric, vectors())
    return server.create_backup(PROD, created=time.time() - age, fault=fault) if backup else None


def config_doc(tmp: Path, server_url: str, *, rpo: str = "1d", timeout: str = "60s", **backend: Any) -> dict[str, Any]:
    validator: dict[str, Any] = {"kind": "vector_restore", "k": 10, "queries": 20, "sample": 100,
                                 "min_recall": 0.9, "timeout": timeout}
    for key in list(backend):
        if key.startswith("v_"):
            validator[key[2:]] = backend.pop(key)
    validator["backend"] = {"type": "pinecone", "index": PROD, "api_key_env": KEY_ENV, "control_url": server_url,
                            "poll_interval": "20ms", "request_timeout": "5s", "max_attempts": 3,
                            "max_drills_per_day": 100, **backend}
    return {"store": {"sqlite": str(tmp / "state.sqlite")},
            "locations": {"prod": {"kind": "filesystem", "path": str(tmp)}},
            "assets": {"vectors": {"rpo": rpo, "rto": "1h", "production": {"location": "prod"},
                                   "validators": [validator]}}}


async def check(tmp: Path, server: PineconeStandIn, monkeypatch: pytest.MonkeyPatch, *, key: str | None = None,
                url: str | None = None, clock: Callable[[], float] = time.time, **options: Any) -> Result:
    monkeypatch.setenv(KEY_ENV, server.api_key if key is None else key)
    cfg = parse_config(yaml.safe_dump(config_doc(tmp, url or server.url, **options)), source=str(tmp / "drwatch.yaml"))
    async with open_runner(cfg, tmp / "sbx", clock) as runner:
        return await runner.execute("vectors", cfg.assets["vectors"].validators[0])


async def wait_until(predicate: Callable[[], Awaitable[bool]], within: float, interval: float = 0.02) -> None:
    deadline = time.monotonic() + within
    for _ in itertools.count():
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


def codes(result: Result, severity: Severity = Severity.CRITICAL) -> set[str]:
    return {f.code for f in result.findings if f.severity == severity}


def temp_indexes(server: PineconeStandIn) -> list[str]:
    return [n for n in server.index_names() if n.startswith("drwatch-drill-")]


def assert_production_untouched(server: PineconeStandIn) -> None:
    """Only reads reached the production index: no DELETE, no create, and POSTs only for query/stats."""
    assert not server.requests_matching("DELETE", PROD)
    posts = {p for m, p in server.requests if m == "POST" and PROD in p}
    assert posts <= {f"/data/{PROD}/query", f"/data/{PROD}/describe_index_stats"}, posts
    assert PROD in server.indexes and len(server.indexes[PROD].namespaces[""]) == N


async def test_fresh_backup_restores_and_answers_like_production(tmp_path: Path, standin: PineconeStandIn,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh backup restores into a temporary index that holds every vector, gives the same exact top-k
    and full recall: ok, with every figure; the temporary index is deleted, production only read."""
    seed_production(standin)
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.OK, result.findings
    assert codes(result, Severity.WARNING) == set()
    f = result.figures
    assert f["rows_restored"] == N and f["id_coverage_ratio"] == 1.0 and f["vector_checksum_mismatches"] == 0
    assert f["recall_at_k"] == 1.0 and f["exact_match_ratio"] == 1.0
    assert f["k"] == 10 and f["queries"] == 20 and f["recall_threshold"] == 0.9
    assert 0 < f["restore_seconds"] < 30
    assert abs(f["backup_timestamp_seconds"] - (time.time() - 60)) < 30
    assert result.recovery_point == f["backup_timestamp_seconds"]
    created = standin.requests_matching("POST", "/create-index")
    assert len(created) == 1
    assert temp_indexes(standin) == []
    deleted = standin.requests_matching("DELETE", "/indexes/")
    assert len(deleted) == 1 and deleted[0].startswith("/indexes/drwatch-drill-")
    assert_production_untouched(standin)


@pytest.mark.parametrize("metric", ["dotproduct", "euclidean"])
async def test_other_index_metrics(tmp_path: Path, standin: PineconeStandIn, monkeypatch: pytest.MonkeyPatch,
                                   metric: str) -> None:
    """The index's own metric drives the exact top-k (dotproduct → inner product, euclidean → L2): an intact
    restore agrees exactly; perturbed vectors still lower recall under that metric."""
    seed_production(standin, metric=metric)
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["exact_match_ratio"] == 1.0 and result.figures["recall_at_k"] == 1.0
    standin.indexes.clear()
    standin.backups.clear()
    seed_production(standin, metric=metric, fault=BackupFault(perturb=N // 2, replace=True))
    result = await check(tmp_path, standin, monkeypatch)
    assert {"exact_topk_mismatch", "recall_low"} <= codes(result)


async def test_restored_index_carries_owner_tags(tmp_path: Path, standin: PineconeStandIn,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """While it exists, the temporary index is tagged with this host and PID (what the orphan sweep reads),
    and its name encodes its creation time."""
    seed_production(standin)
    standin.ready_delay = 0.5
    task = asyncio.create_task(check(tmp_path, standin, monkeypatch))

    async def restoring() -> bool:
        return bool(temp_indexes(standin))

    await wait_until(restoring, 10)
    name = temp_indexes(standin)[0]
    tags = standin.indexes[name].tags
    assert tags["drwatch_host"] == socket.gethostname().replace(" ", "_")[:120]
    assert tags["drwatch_pid"] == str(os.getpid())
    created = created_from_name(name)
    assert created is not None and abs(created - time.time()) < 10
    assert (await task).outcome == Outcome.OK
    assert temp_indexes(standin) == []


async def test_no_backup_fails(tmp_path: Path, standin: PineconeStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index without any finished backup: failed (no_backup); a backup still pending does not count."""
    seed_production(standin, backup=False)
    standin.create_backup(PROD, status="Pending")
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.FAILED
    assert codes(result) == {"no_backup"}
    assert not standin.requests_matching("POST", "/create-index")


async def test_backup_older_than_rpo_fails_without_a_drill(tmp_path: Path, standin: PineconeStandIn,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest backup is two hours old against a one-hour RPO: failed (backup_stale); no restore is paid
    for, and the backup time is still a figure."""
    seed_production(standin, age=7200)
    standin.create_backup(PROD, created=time.time() - 3 * 86400)  # older ones do not matter
    result = await check(tmp_path, standin, monkeypatch, rpo="1h")
    assert result.outcome == Outcome.FAILED
    assert codes(result) == {"backup_stale"}
    assert abs(result.figures["backup_timestamp_seconds"] - (time.time() - 7200)) < 30
    assert not standin.requests_matching("POST", "/create-index")


async def test_missing_vectors_fail_count_and_coverage(tmp_path: Path, standin: PineconeStandIn,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The restore lacks 15 vectors: fewer than the backup's record count, and production's ids not all
    present: failed (count_mismatch, missing_rows); the temporary index is deleted all the same."""
    seed_production(standin, fault=BackupFault(drop=15))
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.FAILED
    assert {"count_mismatch", "missing_rows"} <= codes(result)
    assert result.figures["rows_restored"] == N - 15
    assert result.figures["id_coverage_ratio"] == pytest.approx((N - 15) / N)
    assert temp_indexes(standin) == []


async def test_slightly_perturbed_vectors_fail_checksums(tmp_path: Path, standin: PineconeStandIn,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every sampled vector is changed by 1e-4 per component (too little to move neighbours): the
    checksums catch it (vector_mismatch) even though recall stays perfect."""
    seed_production(standin, fault=BackupFault(perturb=N, noise=1e-4))
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.FAILED
    assert "vector_mismatch" in codes(result)
    assert "recall_low" not in codes(result)
    assert result.figures["vector_checksum_mismatches"] == 100
    assert result.figures["recall_at_k"] == 1.0


async def test_replaced_vectors_fail_exact_topk_and_recall(tmp_path: Path, standin: PineconeStandIn,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Half of the vectors restored as random values: the exact top-k no longer agree and recall against
    production collapses: failed (exact_topk_mismatch, recall_low, vector_mismatch)."""
    seed_production(standin, fault=BackupFault(perturb=N // 2, replace=True))
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.FAILED
    assert {"exact_topk_mismatch", "recall_low", "vector_mismatch"} <= codes(result)
    assert result.figures["recall_at_k"] < 0.9
    assert result.figures["exact_match_ratio"] < 0.5


async def test_degraded_ann_answers_fail_recall_only(tmp_path: Path, standin: PineconeStandIn,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Data intact but the restored index's query answers drop their best match: exact top-k (computed
    from the vectors) agree, recall@10 is 0.9 against a 0.95 threshold: failed (recall_low) alone."""
    seed_production(standin, fault=BackupFault(skip_rank=0))
    result = await check(tmp_path, standin, monkeypatch, v_min_recall=0.95)
    assert result.outcome == Outcome.FAILED
    assert codes(result) == {"recall_low"}
    assert result.figures["recall_at_k"] == pytest.approx(0.9)
    assert result.figures["exact_match_ratio"] == 1.0
    assert result.figures["recall_threshold"] == 0.95


async def test_large_namespace_samples_and_says_exact_was_skipped(tmp_path: Path, standin: PineconeStandIn,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Above exact_scan_max_vectors the sample and queries come from production's id listing (paged):
    perturbed vectors still fail the checksums, and the skipped exact comparison is a warning."""
    seed_production(standin, fault=BackupFault(perturb=40, noise=1e-3))
    result = await check(tmp_path, standin, monkeypatch, exact_scan_max_vectors=50)
    assert result.outcome == Outcome.FAILED
    assert codes(result) == {"vector_mismatch"}
    assert "exact_check_skipped" in codes(result, Severity.WARNING)
    assert "exact_match_ratio" not in result.figures
    assert 0 < result.figures["vector_checksum_mismatches"] < 100
    assert result.figures["id_coverage_ratio"] == 1.0
    assert len(standin.requests_matching("GET", f"/data/{PROD}/vectors/list")) >= 3  # 300 ids, 100 a page

    standin.indexes.clear()
    standin.backups.clear()
    seed_production(standin)
    result = await check(tmp_path, standin, monkeypatch, exact_scan_max_vectors=50)
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["recall_at_k"] == 1.0


async def test_failed_restore_job_fails_and_cleans_up(tmp_path: Path, standin: PineconeStandIn,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinecone reports the restore job Failed: the backup does not restore (restore_failed); the index the
    job created is deleted."""
    seed_production(standin)
    standin.restore_fails = True
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.FAILED
    assert codes(result) == {"restore_failed"}
    assert temp_indexes(standin) == []
    assert len(standin.requests_matching("DELETE", "/indexes/drwatch-drill-")) == 1


async def test_slow_readiness_times_out_and_still_deletes(tmp_path: Path, standin: PineconeStandIn,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The restored index stays not-ready past the validator's 1 s timeout: outcome timeout, and the
    temporary index is deleted after the deadline (the clean-up has its own budget)."""
    seed_production(standin)
    standin.ready_delay = 30
    result = await check(tmp_path, standin, monkeypatch, timeout="1s")
    assert result.outcome == Outcome.TIMEOUT
    assert temp_indexes(standin) == []


async def test_cancelled_drill_deletes_the_temporary_index(tmp_path: Path, standin: PineconeStandIn,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A drill cancelled while it waits for readiness (daemon shutdown) is recorded as cancelled and the
    temporary index is deleted before the cancellation completes."""
    seed_production(standin)
    standin.ready_delay = 30
    task = asyncio.create_task(check(tmp_path, standin, monkeypatch))

    async def restoring() -> bool:
        return bool(temp_indexes(standin))

    await wait_until(restoring, 10)
    assert temp_indexes(standin)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert temp_indexes(standin) == []


async def test_transient_server_errors_are_retried(tmp_path: Path, standin: PineconeStandIn,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two 503s on the backups listing, a 429 on a query and a 500 on a fetch: retried with backoff, ok."""
    seed_production(standin)
    standin.fail(f"/indexes/{PROD}/backups", 503, times=2)
    standin.fail("/query", 429, times=1)
    standin.fail("/vectors/fetch", 500, times=1)
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.OK, result.findings
    assert len(standin.requests_matching("GET", f"/indexes/{PROD}/backups")) == 3


async def test_persistent_server_errors_are_error_not_failed(tmp_path: Path, standin: PineconeStandIn,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinecone keeps answering 500: drwatch could not check (error, server_error), not a bad backup."""
    seed_production(standin)
    standin.fail(f"/indexes/{PROD}/backups", 500, times=100)
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.ERROR
    assert codes(result, Severity.WARNING) == {"server_error"}


async def test_server_error_during_comparison_still_deletes(tmp_path: Path, standin: PineconeStandIn,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The restored index's data plane fails mid-comparison: error, and the temporary index is deleted."""
    seed_production(standin)
    standin.fail("/data/drwatch-drill-", 502, times=100)
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.ERROR
    assert codes(result, Severity.WARNING) == {"server_error"}
    assert temp_indexes(standin) == []


async def test_wrong_api_key_is_error_and_never_logged(tmp_path: Path, standin: PineconeStandIn,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected key: error (access_denied); the key appears in no finding and no log line."""
    seed_production(standin)
    wrong = "pcsk-wrong-" + secrets.token_hex(8)
    with structlog.testing.capture_logs() as logs:
        result = await check(tmp_path, standin, monkeypatch, key=wrong)
    assert result.outcome == Outcome.ERROR
    assert codes(result, Severity.WARNING) == {"access_denied"}
    text = repr(result.to_dict()) + repr(logs)
    assert wrong not in text and standin.api_key not in text


async def test_unreachable_api_is_error(tmp_path: Path, standin: PineconeStandIn,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens at the control URL: error (unreachable)."""
    result = await check(tmp_path, standin, monkeypatch, url=f"http://127.0.0.1:{free_port()}")
    assert result.outcome == Outcome.ERROR
    assert codes(result, Severity.WARNING) == {"unreachable"}


async def test_slow_api_times_out_as_error(tmp_path: Path, standin: PineconeStandIn,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer of the control plane comes after 2 s with a 0.3 s request timeout: error (timeout)."""
    seed_production(standin)
    standin.slow("/indexes", 2.0)
    result = await check(tmp_path, standin, monkeypatch, request_timeout="300ms", max_attempts=1)
    assert result.outcome == Outcome.ERROR
    assert codes(result, Severity.WARNING) == {"timeout"}


async def test_cost_guard_refuses_large_backups_parallel_indexes_and_daily_count(
        tmp_path: Path, standin: PineconeStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each guard refuses before anything is created: error (cost_guard), never failed."""
    seed_production(standin)
    result = await check(tmp_path, standin, monkeypatch, max_records=N - 1)
    assert result.outcome == Outcome.ERROR and codes(result, Severity.WARNING) == {"cost_guard"}
    assert not standin.requests_matching("POST", "/create-index")

    # A fresh temporary index of a drill running on another host counts against max_temporary_indexes.
    other = temp_index_name(time.time())
    standin.create_index(other, DIM)
    standin.indexes[other].tags = {"drwatch_host": "another-host", "drwatch_pid": "1"}
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.ERROR and codes(result, Severity.WARNING) == {"cost_guard"}
    assert other in standin.indexes  # not an orphan: young, and its owner is elsewhere
    del standin.indexes[other]

    assert (await check(tmp_path, standin, monkeypatch, max_drills_per_day=1)).outcome == Outcome.OK
    result = await check(tmp_path, standin, monkeypatch, max_drills_per_day=1)
    assert result.outcome == Outcome.ERROR and codes(result, Severity.WARNING) == {"cost_guard"}
    assert len(standin.requests_matching("POST", "/create-index")) == 1


async def test_orphan_sweep_at_start_deletes_only_orphans(tmp_path: Path, standin: PineconeStandIn,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The start-up sweep deletes temporary indexes whose owner process on this host is gone and those
    older than the longest drill timeout (+5 min), keeps young ones of live owners and indexes whose names
    drwatch does not make, and never touches production."""
    seed_production(standin)
    host = socket.gethostname()
    now = time.time()
    dead_pid = temp_index_name(now)
    standin.create_index(dead_pid, DIM)
    standin.indexes[dead_pid].tags = {"drwatch_host": host, "drwatch_pid": "999999999"}
    live = temp_index_name(now - 5)
    standin.create_index(live, DIM)
    standin.indexes[live].tags = {"drwatch_host": host, "drwatch_pid": str(os.getpid())}
    foreign_young = temp_index_name(now - 30)
    standin.create_index(foreign_young, DIM)
    standin.indexes[foreign_young].tags = {"drwatch_host": "elsewhere", "drwatch_pid": "1"}
    foreign_old = temp_index_name(now - 60 - 301)  # the validator's timeout is 60 s
    standin.create_index(foreign_old, DIM)
    standin.indexes[foreign_old].tags = {"drwatch_host": "elsewhere", "drwatch_pid": "1"}
    not_ours = "drwatch-drill-made-by-hand"
    standin.create_index(not_ours, DIM)

    monkeypatch.setenv(KEY_ENV, standin.api_key)
    cfg = parse_config(yaml.safe_dump(config_doc(tmp_path, standin.url)), source=str(tmp_path / "drwatch.yaml"))
    removed = await sweep_pinecone_orphans(cfg, structlog.get_logger())
    assert sorted(removed) == sorted([dead_pid, foreign_old])
    assert set(standin.indexes) == {PROD, live, foreign_young, not_ours}

    # Pinecone down: the sweep logs and returns, it never stops the daemon from starting.
    cfg = parse_config(yaml.safe_dump(config_doc(tmp_path, f"http://127.0.0.1:{free_port()}")),
                       source=str(tmp_path / "drwatch.yaml"))
    with structlog.testing.capture_logs() as logs:
        assert await sweep_pinecone_orphans(cfg, structlog.get_logger(), budget=5) == []
    assert [e["error"] for e in logs if e["event"] == "pinecone_orphan_sweep_failed"] == ["unreachable"]


async def test_each_run_sweeps_orphans_first(tmp_path: Path, standin: PineconeStandIn,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash's leftover (owner PID gone) is deleted by the next run, which then proceeds (info finding)."""
    seed_production(standin)
    leftover = temp_index_name(time.time() - 10)
    standin.create_index(leftover, DIM)
    standin.indexes[leftover].tags = {"drwatch_host": socket.gethostname(), "drwatch_pid": "999999999"}
    result = await check(tmp_path, standin, monkeypatch)
    assert result.outcome == Outcome.OK, result.findings
    assert "orphans_deleted" in codes(result, Severity.INFO)
    assert leftover not in standin.indexes


async def test_client_fence_refuses_production(standin: PineconeStandIn) -> None:
    """The client creates and deletes only drwatch-drill-* indexes: anything else is refused before a
    request leaves."""
    seed_production(standin)
    async with PineconeClient(standin.api_key, control_url=standin.url) as client:
        with pytest.raises(ValueError, match="refusing"):
            await client.delete_index(PROD)
        with pytest.raises(ValueError, match="refusing"):
            await client.create_index_from_backup("x", "restored-prod", {})
        with pytest.raises(ValueError, match="refusing"):
            await client.delete_index("drwatch-drill-")  # the bare prefix is not a valid temporary name
    assert standin.requests == []
    assert PROD in standin.indexes


async def test_client_creates_a_temporary_index_and_upserts_into_it(standin: PineconeStandIn) -> None:
    """The write side of a drill from a Parquet export (issue 17 item 5, first part): ``create_index`` makes an
    empty serverless drwatch-drill-* index carrying the owner tags (production's name is refused before a request
    leaves); ``upsert`` writes 250 vectors in batches of 100 (three requests), metadata included, and they are
    fetched back as float32; values of another dimension are Pinecone's 400 (`api_error`)."""
    from drwatch.validators.vector.pinecone_api import UPSERT_BATCH, PineconeUnavailable

    seed_production(standin, backup=False)
    data = vectors(250)
    async with PineconeClient(standin.api_key, control_url=standin.url) as client:
        with pytest.raises(ValueError, match="refusing"):
            await client.create_index(PROD, DIM, "cosine", {})
        assert standin.requests == []
        name = "drwatch-drill-20261207t145500-abcd"
        info = await client.create_index(name, DIM, "cosine", {"drwatch-run": "r1"})
        assert (info.name, info.dimension, info.metric, info.tags) == (name, DIM, "cosine", {"drwatch-run": "r1"})
        rows = [(i, v, {"n": n} if n % 2 else None) for n, (i, v) in enumerate(sorted(data.items()))]
        assert await client.upsert(info.host, rows, namespace="ns") == 250
        assert len(standin.requests_matching("POST", "/vectors/upsert")) == -(-250 // UPSERT_BATCH) == 3
        back = await client.fetch(info.host, ["doc-00000", "doc-00249"], namespace="ns")
        assert list(back["doc-00249"]) == pytest.approx(data["doc-00249"], rel=1e-6)
        assert sorted(standin.indexes[name].namespaces["ns"]) == sorted(data)
        with pytest.raises(PineconeUnavailable) as err:
            await client.upsert(info.host, [("bad", [1.0, 2.0], None)])
        assert err.value.code == "api_error" and "dimension" in err.value.message
        assert await client.delete_index(name)
    assert name not in standin.indexes and PROD in standin.indexes


async def test_plain_http_data_host_needs_plain_http_control_plane() -> None:
    """A data-plane host is HTTPS unless the control plane itself is plain HTTP (the stand-in)."""
    async with PineconeClient("k", control_url="https://api.pinecone.io") as client:
        assert client.data_url("idx-abc.svc.pinecone.io") == "https://idx-abc.svc.pinecone.io"
        with pytest.raises(Exception, match="scheme"):
            client.data_url("http://evil.example/")


@pytest.mark.parametrize(("backend", "message"), [
    ({}, "set exactly one of 'api_key_env' or 'api_key_file'"),
    ({"api_key_env": "A", "api_key_file": "b"}, "set exactly one of 'api_key_env' or 'api_key_file'"),
    ({"api_key_env": "A", "index": "Prod_Index"}, "backend.pinecone.index"),
    ({"api_key_env": "A", "max_temporary_indexes": 0}, "max_temporary_indexes"),
    ({"api_key_env": "A", "control_url": "api.pinecone.io"}, "control_url"),
    ({"api_key_env": "A", "surprise": 1}, "surprise"),
])
def test_config_errors_name_the_field(tmp_path: Path, backend: dict[str, Any], message: str) -> None:
    """Invalid backend settings are config errors with their field path."""
    doc = {"locations": {"p": {"kind": "filesystem", "path": str(tmp_path)}},
           "assets": {"v": {"rpo": "1d", "production": {"location": "p"}, "validators": [
               {"kind": "vector_restore", "backend": {"type": "pinecone", "index": "prod", **backend}}]}}}
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_dump(doc))
    assert message in str(err.value)


@pytest.mark.skipif(not os.environ.get("PINECONE_API_KEY"), reason="live Pinecone test: PINECONE_API_KEY not set")
@pytest.mark.timeout(1800)
async def test_live_pinecone_drill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the real Pinecone (billed): creates a small serverless index (PINECONE_CLOUD/PINECONE_REGION,
    default aws/us-east-1), upserts 200 vectors, backs it up, runs the drill (ok; the temporary index is
    gone afterwards), then deletes the backup and the index."""
    import aiohttp

    key = os.environ["PINECONE_API_KEY"]
    api = "https://api.pinecone.io"
    headers = {"Api-Key": key, "X-Pinecone-API-Version": "2025-10"}
    name = f"drwatch-live-{secrets.token_hex(4)}"
    data = vectors(200, DIM, seed=3)
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def call(method: str, url: str, **kw: Any) -> Any:
            async with http.request(method, url, **kw) as resp:
                assert resp.status < 300, (method, url, resp.status, await resp.text())
                return await resp.json() if resp.content_type == "application/json" else None

        spec = {"serverless": {"cloud": os.environ.get("PINECONE_CLOUD", "aws"),
                               "region": os.environ.get("PINECONE_REGION", "us-east-1")}}
        await call("POST", f"{api}/indexes", json={"name": name, "dimension": DIM, "metric": "cosine", "spec": spec})
        backup_id = None
        try:
            info: dict[str, Any] = {}

            async def index_ready() -> bool:
                info.update(await call("GET", f"{api}/indexes/{name}"))
                return bool(info["status"]["ready"])

            await wait_until(index_ready, 300, 2)
            host = f"https://{info['host']}"
            items = [{"id": i, "values": v} for i, v in data.items()]
            for start in range(0, len(items), 100):
                await call("POST", f"{host}/vectors/upsert", json={"vectors": items[start:start + 100]})

            async def all_visible() -> bool:
                stats = await call("POST", f"{host}/describe_index_stats", json={})
                return int(stats.get("totalVectorCount", 0)) >= len(data)

            await wait_until(all_visible, 300, 2)
            backup = await call("POST", f"{api}/indexes/{name}/backups", json={"name": f"{name}-bk"})
            backup_id = backup["backup_id"]

            async def backup_ready() -> bool:
                doc = await call("GET", f"{api}/backups/{backup_id}")
                return str(doc["status"]).lower() in ("ready", "completed")

            await wait_until(backup_ready, 900, 5)
            monkeypatch.setenv(KEY_ENV, key)
            doc = config_doc(tmp_path, api, timeout="20m", poll_interval="5s", request_timeout="30s",
                             max_drills_per_day=10, max_temporary_indexes=3)
            doc["assets"]["vectors"]["validators"][0]["backend"]["index"] = name
            cfg = parse_config(yaml.safe_dump(doc), source=str(tmp_path / "drwatch.yaml"))
            async with open_runner(cfg, tmp_path / "sbx") as runner:
                result = await runner.execute("vectors", cfg.assets["vectors"].validators[0])
            assert result.outcome == Outcome.OK, result.findings
            assert result.figures["rows_restored"] == len(data)
            indexes = (await call("GET", f"{api}/indexes"))["indexes"]
            assert not [i for i in indexes if i["name"].startswith("drwatch-drill-")
                        and i["tags"].get("drwatch_pid") == str(os.getpid())
                        and i["status"]["state"] != "Terminating"]
        finally:
            if backup_id is not None:
                await call("DELETE", f"{api}/backups/{backup_id}")
            await call("DELETE", f"{api}/indexes/{name}")


async def test_configured_query_vectors_are_used_and_checked_before_restoring(
        tmp_path: Path, standin: PineconeStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """``query_vectors`` (JSON Lines, relative to the config file) replaces the drawn queries: 7 queries
    near stored vectors give ok with ``queries`` = 7. A file whose vectors have another dimension than the
    index (real 384-dimension embeddings against this 8-dimension index) is error
    ``query_dimension_mismatch`` before any restore is started (nothing billed)."""
    import json

    import numpy as np

    from tests.support.vectorcorpus import corpus

    rng = random.Random(5)
    stored = list(vectors().values())
    queries = [[x + rng.gauss(0.0, 0.05) for x in stored[i * 40]] for i in range(7)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"id": i, "vector": q}) + "\n"
                                              for i, q in enumerate(queries)))
    seed_production(standin)
    result = await check(tmp_path, standin, monkeypatch, v_query_vectors="q.jsonl")
    assert result.outcome == Outcome.OK, result.findings
    f = result.figures
    assert f["queries"] == 7 and f["exact_match_ratio"] == 1.0 and f["recall_at_k"] == 1.0
    assert len([p for m, p in standin.requests if m == "POST" and p.endswith("/query")]) == 7  # one per query
    np.save(tmp_path / "other.npy", corpus().vectors[:3])
    created = len(standin.requests_matching("POST", "/create-index"))
    other = await check(tmp_path, standin, monkeypatch, v_query_vectors="other.npy")
    assert other.outcome == Outcome.ERROR
    assert {f.code for f in other.findings} == {"query_dimension_mismatch"}
    assert "384-dimension" in other.findings[0].message and "8 dimensions" in other.findings[0].message
    assert len(standin.requests_matching("POST", "/create-index")) == created
