"""The `redis_restore` validator against a real redis-server (Debian's package) as production, real RDB and AOF
snapshots it wrote, on a filesystem and on a real moto S3 server.

Each run goes through a real Runner (store, S3 client pool, sandboxes) as in the daemon. Faults are real: a
truncated and a byte-flipped RDB, production holding far more keys than the snapshot, production down (nothing
listens), ``redis-check-rdb`` absent from the tools directory, a run cut off by its timeout and by cancellation
while its sandbox server loads (kept loading by Redis's key-load-delay, and SIGSTOPped for the timeout), and a
drill process SIGKILLed with its sandbox server running (the start-up sweep kills the server). Processes are
looked for in /proc, not assumed gone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drwatch.core.model import Outcome, Result, Severity
from drwatch.core.sandbox import SandboxManager
from drwatch.validators.plugin import Latest
from drwatch.validators.redisdb import restore as redis_restore
from drwatch.validators.redisdb.snapshot import parse_rdb_head
from tests.faults.estate import flip_byte, truncate
from tests.support.helpers import free_port, processes_mentioning
from tests.support.redisserver import RedisServer
from tests.support.s3helpers import Locations, bucket, codes, config, parse, run, upload
from tests.support.s3servers import MotoServer

DAY = 86400.0


@pytest.fixture(scope="module")
def prod() -> Iterator[RedisServer]:
    """Production: one redis-server for the module, 500 keys in db0 and 50 in db1 (five types)."""
    server = RedisServer().start()
    server.fill(0, 500)
    server.fill(1, 50, prefix="s")
    yield server
    server.stop()


def redis_config(tmp: Path, locs: Locations, monkeypatch: pytest.MonkeyPatch, url: str | None = None,
                 **validator: Any) -> dict[str, Any]:
    """Asset ``data``: production on a filesystem location, snapshots under ``backups/redis``."""
    for loc in ("prod", "backups"):
        (tmp / loc).mkdir(exist_ok=True)
    locs.fs("prod", tmp / "prod", site="dc-a")
    locs.fs("backups", tmp / "backups", site="dc-b")
    v: dict[str, Any] = {"kind": "redis_restore", "location": "backups", "prefix": "redis", **validator}
    if url is not None:
        monkeypatch.setenv("DRW_TEST_REDIS_URL", url)
        v["production"] = {"url_env": "DRW_TEST_REDIS_URL"}
    return config(tmp, locs, ("prod", "data"), [], validators=[v])


def critical(result: Result) -> list[str]:
    return sorted(f.code for f in result.findings if f.severity == Severity.CRITICAL)


def sandbox_servers(tmp: Path) -> list[int]:
    return processes_mentioning(str(tmp / "sandboxes")) + [
        p for p in processes_mentioning("redis-server") if _cwd_inside(p, tmp / "sandboxes")]


def _cwd_inside(pid: int, root: Path) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/cwd").startswith(str(root))
    except OSError:
        return False


def assert_nothing_left(tmp: Path) -> None:
    assert not list((tmp / "sandboxes").glob("drwatch-sbx-*")), "a sandbox directory was left"
    assert sandbox_servers(tmp) == [], "a sandbox redis-server was left running"


async def test_a_fresh_snapshot_restores_and_matches_production(tmp_path: Path, locs: Locations,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                prod: RedisServer) -> None:
    """Production's own RDB restores; key counts per database and a sample of 200 keys match; the recovery point
    is the RDB's ctime (not the file time: the copy is backdated a day); the snapshot file is untouched."""
    snap = prod.save(tmp_path / "backups" / "redis" / "dump-1.rdb")
    os.utime(snap, (time.time() - DAY / 2, time.time() - DAY / 2))
    before = (snap.read_bytes(), snap.stat().st_mtime)
    result, _ = await run(tmp_path, redis_config(tmp_path, locs, monkeypatch, prod.url))
    assert result.outcome == Outcome.OK, result.findings
    assert critical(result) == []
    assert result.figures["keys_restored"] == result.figures["keys_production"] == 550
    assert result.figures["keys_checked"] == 550
    assert result.figures["sample_keys"] >= 150 and result.figures["sample_missing"] == 0
    assert result.figures["sample_type_mismatch"] == 0
    assert result.figures["sample_size_ratio"] == pytest.approx(1.0)
    ctime = parse_rdb_head(snap.read_bytes()[:4096]).created
    assert ctime is not None and abs(ctime - time.time()) < 120
    assert result.recovery_point == ctime
    assert (snap.read_bytes(), snap.stat().st_mtime) == before
    assert_nothing_left(tmp_path)
    samples = list(redis_restore.project([Latest("data", parse(tmp_path, redis_config(
        tmp_path, locs, monkeypatch, prod.url)).assets["data"].validators[0], result)]))
    assert ("drwatch_redis_keys", ("data", "redis_restore", "snapshot"), 550.0) in samples
    assert ("drwatch_redis_sample_bad_ratio", ("data", "redis_restore"), 0.0) in samples


async def test_an_aof_directory_restores(tmp_path: Path, locs: Locations, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis 7 multi-part AOF directory (base RDB + incremental file with timestamps) is checked with
    redis-check-aof and loaded; its recovery point is the newest #TS annotation."""
    aof = RedisServer(appendonly=True).start()
    try:
        aof.fill(0, 40)
        aof.client().set("last", "write")
        shutil.copytree(aof.dir / "appendonlydir", tmp_path / "backups" / "redis" / "appendonlydir")
        url = aof.url
        result, _ = await run(tmp_path, redis_config(tmp_path, locs, monkeypatch, url))
    finally:
        aof.stop()
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["keys_restored"] == 41
    assert result.recovery_point is not None and abs(result.recovery_point - time.time()) < 120
    assert_nothing_left(tmp_path)


async def test_from_s3(tmp_path: Path, locs: Locations, monkeypatch: pytest.MonkeyPatch, prod: RedisServer,
                       moto: MotoServer) -> None:
    """The newest RDB object of an S3 prefix is fetched into the sandbox and restored."""
    snap = prod.save(tmp_path / "dump.rdb")
    name = bucket(moto, "redis-snaps")
    upload(moto, name, {"old.rdb": b"REDIS0010 not the newest", "dump.rdb": snap.read_bytes()}, prefix="redis/")
    cfg = redis_config(tmp_path, locs, monkeypatch, prod.url, pattern="dump*")
    locs.s3("s3snaps", moto, name, site="dc-c")
    cfg["locations"] = dict(locs.data)
    cfg["assets"]["data"]["validators"][0]["location"] = "s3snaps"
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["keys_restored"] == 550
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("damage", [truncate, flip_byte])
async def test_a_truncated_or_corrupt_snapshot_fails(tmp_path: Path, locs: Locations, monkeypatch: pytest.MonkeyPatch,
                                                     prod: RedisServer, damage: Any) -> None:
    """An RDB cut in half, or with one byte flipped, fails (redis-check-rdb rejects it); no server is left."""
    snap = prod.save(tmp_path / "backups" / "redis" / "dump.rdb")
    damage(snap)
    result, _ = await run(tmp_path, redis_config(tmp_path, locs, monkeypatch, prod.url))
    assert result.outcome == Outcome.FAILED, result.findings
    assert critical(result) in (["snapshot_truncated"], ["snapshot_corrupt"])
    assert_nothing_left(tmp_path)


async def test_not_an_rdb_and_no_snapshot_fail(tmp_path: Path, locs: Locations,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that is not an RDB fails (`snapshot_unreadable`); an empty prefix fails (`no_recovery_point`)."""
    cfg = redis_config(tmp_path, locs, monkeypatch)
    (tmp_path / "backups" / "redis").mkdir()
    result, _ = await run(tmp_path, cfg)
    assert critical(result) == ["no_recovery_point"]
    (tmp_path / "backups" / "redis" / "dump.rdb").write_bytes(b"PGDMP not redis")
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED and critical(result) == ["snapshot_unreadable"]


async def test_a_snapshot_that_cannot_be_read_is_error(tmp_path: Path, locs: Locations,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest snapshot answers reads with an I/O error (a link to /proc/self/mem, whose page 0 is never mapped:
    EIO, as a failing disk or a dropped network mount answers): could not check, error (`location_unavailable`),
    never failed, never a crash (`internal_error`); no server or sandbox left."""
    cfg = redis_config(tmp_path, locs, monkeypatch)
    (tmp_path / "backups" / "redis").mkdir()
    (tmp_path / "backups" / "redis" / "dump.rdb").symlink_to("/proc/self/mem")
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR and critical(result) == [], result.findings
    assert codes(result) == {"location_unavailable"}, result.findings
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("where", ["prefix", "aof_file"])
async def test_snapshots_that_cannot_be_listed_or_staged_are_error(tmp_path: Path, locs: Locations,
                                                                   monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """The snapshots' prefix cannot be listed (a symlink loop: ELOOP, as a stale NFS handle would answer), or an
    AOF directory's incremental file reads EIO: could not check (`location_unavailable`), never "no snapshot"
    (failed) and never a crash; nothing left behind."""
    cfg = redis_config(tmp_path, locs, monkeypatch)
    redis = tmp_path / "backups" / "redis"
    if where == "prefix":
        redis.symlink_to(redis)
    else:
        aof = RedisServer(appendonly=True).start()
        try:
            aof.fill(0, 10)
            shutil.copytree(aof.dir / "appendonlydir", redis / "appendonlydir")
        finally:
            aof.stop()
        incr = next((redis / "appendonlydir").glob("*.incr.aof"))
        incr.unlink()
        incr.symlink_to("/proc/self/mem")
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR and critical(result) == [], result.findings
    assert codes(result) == {"location_unavailable"}, result.findings
    assert_nothing_left(tmp_path)


async def test_production_with_many_more_keys_fails(tmp_path: Path, locs: Locations, monkeypatch: pytest.MonkeyPatch,
                                                    prod: RedisServer) -> None:
    """A snapshot taken before production grew threefold (beyond the 5 % tolerance): `key_count_low` for db0, and
    the sample finds the missing keys (`sample_keys_missing`)."""
    snap = prod.save(tmp_path / "backups" / "redis" / "dump.rdb")
    prod.fill(0, 1500, prefix="late")
    try:
        result, _ = await run(tmp_path, redis_config(tmp_path, locs, monkeypatch, prod.url))
    finally:
        prod.client().delete(*[f"late:{i}" for i in range(1500)])
    assert snap.exists()
    assert result.outcome == Outcome.FAILED, result.findings
    assert critical(result) == ["key_count_low", "sample_keys_missing"]
    assert [f.subject for f in result.findings if f.code == "key_count_low"] == ["db0"]
    assert result.figures["sample_missing"] > result.figures["sample_keys"] / 2


async def test_production_moving_within_tolerance_does_not_page(tmp_path: Path, locs: Locations,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                prod: RedisServer) -> None:
    """Production 2 % ahead of the snapshot (keys written since): ok, the changed sample keys only an info."""
    prod.save(tmp_path / "backups" / "redis" / "dump.rdb")
    prod.fill(0, 11, prefix="new")
    try:
        result, _ = await run(tmp_path, redis_config(tmp_path, locs, monkeypatch, prod.url, sample=550))
    finally:
        prod.client().delete(*[f"new:{i}" for i in range(11)])
    assert result.outcome == Outcome.OK, result.findings
    assert critical(result) == []


async def test_a_database_above_the_sandbox_databases_is_error_until_configured(
        tmp_path: Path, locs: Locations, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot of a server with 32 databases holding keys in db 20: the default sandbox (16 databases) cannot
    load it, which is the configuration's fault (error, `databases_too_few`), not the backup's; `databases: 32`
    restores it."""
    wide = RedisServer(databases=32).start()
    try:
        wide.fill(20, 10)
        wide.save(tmp_path / "backups" / "redis" / "dump.rdb")
    finally:
        wide.stop()
    result, _ = await run(tmp_path, redis_config(tmp_path, locs, monkeypatch))
    assert result.outcome == Outcome.ERROR, result.findings
    assert "databases_too_few" in codes(result)
    assert_nothing_left(tmp_path)
    result, _ = await run(tmp_path, redis_config(tmp_path, locs, monkeypatch, databases=32))
    assert result.outcome == Outcome.OK, result.findings
    assert result.figures["keys_restored"] == 10


async def test_production_down_is_error(tmp_path: Path, locs: Locations, monkeypatch: pytest.MonkeyPatch,
                                        prod: RedisServer) -> None:
    """Nothing listens where production should be: error (`production_unavailable`), never failed."""
    prod.save(tmp_path / "backups" / "redis" / "dump.rdb")
    result, _ = await run(tmp_path, redis_config(tmp_path, locs, monkeypatch, f"redis://127.0.0.1:{free_port()}/0"))
    assert result.outcome == Outcome.ERROR, result.findings
    assert "production_unavailable" in codes(result) and critical(result) == []
    assert_nothing_left(tmp_path)


async def test_missing_check_tool_is_error(tmp_path: Path, locs: Locations, monkeypatch: pytest.MonkeyPatch,
                                           prod: RedisServer) -> None:
    """A tools directory with redis-server but no redis-check-rdb: error (`tools_missing`)."""
    prod.save(tmp_path / "backups" / "redis" / "dump.rdb")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "redis-server").symlink_to(shutil.which("redis-server") or "/usr/bin/redis-server")
    result, _ = await run(tmp_path, redis_config(tmp_path, locs, monkeypatch, prod.url, bin_dir=str(tools)))
    assert result.outcome == Outcome.ERROR
    assert "tools_missing" in codes(result)
    assert_nothing_left(tmp_path)


async def test_an_old_snapshot_exceeds_the_rpo(tmp_path: Path, locs: Locations, monkeypatch: pytest.MonkeyPatch,
                                               prod: RedisServer) -> None:
    """The RDB's own ctime decides: two days later (the run's clock moved), it is past the 1d RPO."""
    prod.save(tmp_path / "backups" / "redis" / "dump.rdb")
    result, _ = await run(tmp_path, redis_config(tmp_path, locs, monkeypatch), clock=lambda: time.time() + 2 * DAY)
    assert result.outcome == Outcome.FAILED
    assert critical(result) == ["rpo_exceeded"]


def slow_loading_tools(tmp: Path) -> Path:
    """A tools directory whose ``redis-server`` is the real one run with Redis's own debug setting
    ``key-load-delay`` (10 ms per key read) and ``loading-process-events-interval-bytes`` at its minimum (it
    answers ``LOADING`` every ~1 KB read): the snapshot of ``many_keys_snapshot`` takes ~20 s to load however
    fast the machine (a large snapshot alone loads within a short timeout on a quiet one)."""
    tools = tmp / "bin"
    tools.mkdir()
    real = shutil.which("redis-server") or "/usr/bin/redis-server"
    wrapper = tools / "redis-server"
    wrapper.write_text(f'#!/bin/sh\nexec {real} "$@" --key-load-delay 10000 '
                       '--loading-process-events-interval-bytes 1024\n')
    wrapper.chmod(0o755)
    (tools / "redis-check-rdb").symlink_to(shutil.which("redis-check-rdb") or "/usr/bin/redis-check-rdb")
    return tools


def many_keys_snapshot(tmp: Path) -> Path:
    """An RDB of 2,000 uncompressed strings of 512 bytes (~1 MB): fetched and checked in a moment."""
    server = RedisServer().start()
    try:
        c = server.client()
        c.config_set("rdbcompression", "no")
        pipe = c.pipeline(transaction=False)
        for i in range(2000):
            pipe.set(f"blob:{i}", os.urandom(512))
        pipe.execute()
        return server.save(tmp / "backups" / "redis" / "dump.rdb")
    finally:
        server.stop()


async def loading_sandbox_server(tmp: Path, task: asyncio.Future[Any]) -> int:
    """The drill's sandbox redis-server once it answers ``LOADING`` on its socket (reached through its cwd: a
    short path at any depth); fails when the run ends first."""
    import redis.asyncio as aioredis
    from redis.exceptions import BusyLoadingError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    deadline = time.monotonic() + 60
    while True:
        assert not task.done(), f"the run ended before its sandbox server was seen loading: {task.result()}"
        assert time.monotonic() < deadline, "no sandbox server ever loaded"
        for pid in set(sandbox_servers(tmp)):
            client = aioredis.Redis(unix_socket_path=f"/proc/{pid}/cwd/redis.sock", socket_timeout=5,
                                    socket_connect_timeout=5)
            try:
                await client.ping()
                raise AssertionError("the sandbox server finished loading: key-load-delay had no effect")
            except BusyLoadingError:
                return pid
            except (RedisConnectionError, RedisTimeout, OSError):
                pass  # not listening yet, busy, or gone
            finally:
                await client.aclose()
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_a_run_cut_off_leaves_no_server_and_no_sandbox(tmp_path: Path, locs: Locations,
                                                             monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Timed out, or cancelled, while the sandbox redis-server is loading a snapshot (seen answering
    ``LOADING``; Redis's ``key-load-delay`` keeps it loading, so the cut-off does not race the machine's
    speed): the outcome says so, and no redis-server and no sandbox directory is left (looked for in /proc).
    For the timeout the server is also SIGSTOPped once seen: the drill's SIGKILL must reap a stopped process."""
    many_keys_snapshot(tmp_path)
    cfg = redis_config(tmp_path, locs, monkeypatch, timeout="8s" if how == "timeout" else "120s",
                       bin_dir=str(slow_loading_tools(tmp_path)))
    task = asyncio.ensure_future(run(tmp_path, cfg))
    pid = await loading_sandbox_server(tmp_path, task)
    if how == "timeout":
        os.kill(pid, signal.SIGSTOP)
        result, _ = await task
        assert result.outcome == Outcome.TIMEOUT, result.findings
    else:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert_nothing_left(tmp_path)


CRASHING_DRILL = """
import asyncio, sys
from pathlib import Path
from drwatch.core.sandbox import SandboxManager
from drwatch.validators.redisdb.server import Sandboxed

async def main():
    rdb = Path(sys.argv[2])
    async with SandboxManager(Path(sys.argv[1])).directory("crash0") as sbx:
        srv = Sandboxed(Path("/usr/bin"), sbx)
        (sbx / "staged").mkdir()
        (sbx / "staged" / rdb.name).symlink_to(rdb)
        await srv.start(srv.argv(sbx / "staged", rdb.name, "", 16), sbx / "staged")
        await srv.wait_loaded(asyncio.get_running_loop().time() + 30)
        print("ready", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


def test_a_crashed_drill_leaves_a_server_the_sweep_kills(tmp_path: Path, prod: RedisServer) -> None:
    """A drill process SIGKILLed while its sandbox redis-server runs (its own session: it survives): the sandbox
    sweep at the next start kills the server and removes the sandbox."""
    rdb = prod.save(tmp_path / "dump.rdb")
    root = tmp_path / "sandboxes"
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_DRILL, str(root), str(rdb)], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        survivors = sandbox_servers(tmp_path)
        assert survivors, "the sandbox server should outlive the killed drill"
        removed = SandboxManager(root).sweep_orphans()
        assert [p.name for p in removed] == ["drwatch-sbx-crash0"]
        deadline = time.monotonic() + 10
        while sandbox_servers(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert_nothing_left(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


async def test_dump_and_snapshot_directories_are_listed_by_their_marker(tmp_path: Path) -> None:
    """The listing shared by pg_dump dumps and Redis snapshots: a pg_dump -Fd directory is a recovery point by its
    toc.dat and timed by it, a Redis AOF directory by its manifest and timed by its newest file (the incremental
    file appended to); a directory without its marker and hidden entries are no recovery point; files are."""
    from drwatch.validators.postgres.pgdump import FilesystemDumps, RecoveryPoint
    from drwatch.validators.redisdb.snapshot import FilesystemSnapshots

    root = tmp_path / "backups"
    for folder, files in (("dump-1", {"toc.dat": 100, "3001.dat.gz": 300}),
                          ("aof-1", {"appendonly.aof.manifest": 100, "appendonly.aof.1.incr.aof": 300}),
                          ("junk", {"notes.txt": 500})):
        (root / folder).mkdir(parents=True)
        for name, when in files.items():
            (root / folder / name).write_bytes(b"x" * 10)
            os.utime(root / folder / name, (when, when))
    (root / "dump.rdb").write_bytes(b"y" * 7)
    os.utime(root / "dump.rdb", (50, 50))
    (root / ".hidden").write_bytes(b"z")
    dumps = sorted(await FilesystemDumps(tmp_path, "backups", "*").list() or [], key=lambda p: p.name)
    snaps = sorted(await FilesystemSnapshots(tmp_path, "backups", "*").list() or [], key=lambda p: p.name)
    assert dumps == [RecoveryPoint("dump-1", 100, 20, True), RecoveryPoint("dump.rdb", 50, 7, False)]
    assert snaps == [RecoveryPoint("aof-1", 300, 20, True), RecoveryPoint("dump.rdb", 50, 7, False)]
