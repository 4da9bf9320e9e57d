"""The verification ledger across replica runs on real filesystem locations, a real SQLite store and a
controlled clock (days pass between runs): what a run proves is kept, and what the ledger knows is used.

* a copy object proven bad by a read stays bad in later runs while it is unchanged, even when no budget is
  left to read it again; a read proves it good again, a change re-queues it;
* an object larger than the whole daily budget is reported, never blocks the others, and never makes the
  budget finding claim a period it cannot keep;
* with a seal, production is verified like a copy: its reads are planned and charged to the same budget.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from drwatch.config.model import Config
from drwatch.core.model import CopyState, Outcome, Result
from drwatch.formats.sealing import seal_directory
from drwatch.metrics.verify import verify_families
from drwatch.state.snapshot import Snapshot
from drwatch.storage.filesystem import MANIFEST_NAME, Entry
from drwatch.store import open_store
from drwatch.validators.copies.ledger import DAY, LedgerEntry, day_of
from drwatch.validators.copies.verification import VerifySession
from tests.support.helpers import basic_config, write_tree
from tests.support.s3helpers import codes, parse, report, run, subjects

UNIT = 64 * 1024
T0 = 1_900_000_000.0  # a fixed start, at a UTC day boundary plus some hours (days counted from it)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def estate(tmp: Path, files: dict[str, bytes], verification: dict[str, Any]) -> dict[str, Any]:
    """Production tmp/prod/data and one copy tmp/copy1/data holding ``files``; one daily replica run."""
    write_tree(tmp / "prod" / "data", files)
    write_tree(tmp / "copy1" / "data", files)
    cfg = basic_config(tmp, copies=1, every="1d", rpo="3650d")
    cfg["assets"]["data"]["verification"] = verification
    return cfg


async def sealed(tmp: Path) -> None:
    """Seal production as it is now (the replica finds the seal at the production root)."""
    root = tmp / "prod" / "data"
    await seal_directory(root, out_path=root / MANIFEST_NAME)


def blobs(sizes: dict[str, int], seed: int = 5) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {name: rng.randbytes(size) for name, size in sizes.items()}


def flip_bit_keep_mtime(path: Path, offset: int = 500) -> None:
    """Bit rot: one bit flipped, same size, modification time preserved (metadata cannot see it)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


async def ledger(tmp: Path, cfg: dict[str, Any], copy: str = "copy1") -> dict[str, LedgerEntry]:
    store = open_store(parse(tmp, cfg))
    await store.open()
    try:
        return {e.key: e for e in await store.ledger_page("data", copy, "", 1000)}
    finally:
        await store.close()


async def spent(tmp: Path, cfg: dict[str, Any], now: float) -> int:
    store = open_store(parse(tmp, cfg))
    await store.open()
    try:
        return (await store.ledger_spent("data", day_of(now)))[0]
    finally:
        await store.close()


async def samples(tmp: Path, cfg: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    config: Config = parse(tmp, cfg)
    store = open_store(config)
    await store.open()
    try:
        st = await store.load_state()
    finally:
        await store.close()
    out = {}
    for fam in verify_families(config, Snapshot.from_state(config, st)):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def coverage(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], copy: str, evidence: str = "read") -> float:
    return found[("drwatch_verify_coverage_ratio", (("asset", "data"), ("copy", copy), ("evidence", evidence)))]


def mismatch_message(result: Result) -> str:
    return next(f.message for f in result.findings if f.code == "content_mismatch")


async def test_a_copy_proven_bad_stays_bad_until_a_read_proves_it_good(tmp_path: Path) -> None:
    """A bit flipped in a copy (same size and mtime) is found by the day's only read. Later runs the same
    day, with the budget spent, still fail with content_mismatch citing that read (the ledger keeps the
    row as a mismatch) instead of calling the copy verified on its size. Repaired in place with the mtime
    kept, its new ctime shows the change: no longer known bad, it waits for its next read, which proves it
    good; changed (new mtime), it is re-queued and read first."""
    files = blobs({f"{k}.bin": UNIT for k in "abcde"})
    cfg = estate(tmp_path, files, {"read_every": "1d", "budget": {"egress_bytes_per_day": int(1.5 * UNIT)}})
    bad = tmp_path / "copy1" / "data" / "a.bin"
    flip_bit_keep_mtime(bad)
    clock = Clock(T0)

    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.FAILED
    assert subjects(result, "content_mismatch") == ["copy1:a.bin"]
    assert mismatch_message(result) == "content differs from the recovery point (read)"
    assert result.figures["verify_objects_read"] == 1

    for hours in (1, 2):  # the same UTC day: nothing left to read with
        clock.t = T0 + hours * 3600
        result, _ = await run(tmp_path, cfg, clock=clock)
        assert result.figures["verify_objects_read"] == 0
        assert result.outcome == Outcome.FAILED, result.findings
        assert report(result, "copy1").state == CopyState.FAILED
        assert subjects(result, "content_mismatch") == ["copy1:a.bin"]
        assert mismatch_message(result) == \
            "content differs from the recovery point (read 2030-03-17T17:46:40Z, unchanged since)"
    row = (await ledger(tmp_path, cfg))["a.bin"]
    assert row.evidence == "mismatch" and row.read_at == T0 and row.value.startswith("read|")

    # repaired in place with the old mtime: its new ctime shows the change, so it is no longer known bad and
    # is re-queued (the day's budget is spent: it waits for its read) ...
    st = bad.stat()
    bad.write_bytes(files["a.bin"])
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    clock.t = T0 + 3 * 3600
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.OK and result.figures["verify_objects_read"] == 0, result.findings
    assert (await ledger(tmp_path, cfg))["a.bin"].read_at is None
    # ... and its next read proves it good (a budget that reads everything due from now on)
    cfg["assets"]["data"]["verification"]["budget"]["egress_bytes_per_day"] = 5 * UNIT
    clock.t = T0 + DAY
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.OK, result.findings
    row = (await ledger(tmp_path, cfg))["a.bin"]
    assert row.evidence != "mismatch" and row.read_at == T0 + DAY

    # bad again (found by the day's reads), then changed (a new mtime): re-queued, read at the next chance
    clock.t = T0 + 2 * DAY
    flip_bit_keep_mtime(bad)
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert subjects(result, "content_mismatch") == ["copy1:a.bin"]
    bad.write_bytes(files["a.bin"])  # repaired: new mtime
    clock.t = T0 + 2 * DAY + 3600  # the day's budget is spent
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.OK, result.findings  # no longer known bad; waits for its read
    assert (await ledger(tmp_path, cfg))["a.bin"].read_at is None
    clock.t = T0 + 3 * DAY
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.OK and (await ledger(tmp_path, cfg))["a.bin"].read_at == T0 + 3 * DAY


def replace_with_zeros_keep_mtime(path: Path) -> None:
    """A file replaced by zeros of the same size: written aside and renamed over it, its mtime set back
    (a new inode and a new ctime; size and mtime alone cannot tell)."""
    st = path.stat()
    aside = path.with_name(path.name + ".new")
    aside.write_bytes(bytes(st.st_size))
    os.utime(aside, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(aside, path)


async def test_a_file_replaced_with_the_same_size_and_mtime_is_read_at_once(tmp_path: Path) -> None:
    """Under verification, a copy's file replaced by zeros of the same size and mtime (a new inode), or
    rewritten in place with its mtime set back (a new ctime), is due for reading at once: after a day whose
    budget reads nothing (everything was read the day before, read_every 30d), the next run reads exactly the
    replaced file and fails with content_mismatch, and the next one the rewritten file."""
    files = blobs({f"{k}.bin": UNIT for k in "abcdef"})
    cfg = estate(tmp_path, files, {"read_every": "30d", "budget": {"egress_bytes_per_day": 6 * UNIT}})
    copy = tmp_path / "copy1" / "data"
    clock = Clock(T0)
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.OK and result.figures["verify_objects_read"] == 6, result.findings
    clock.t = T0 + DAY
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.OK and result.figures["verify_objects_read"] == 0, result.findings

    before = (copy / "b.bin").stat()
    replace_with_zeros_keep_mtime(copy / "b.bin")
    after = (copy / "b.bin").stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino != before.st_ino
    clock.t = T0 + DAY + 3600
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.outcome == Outcome.FAILED, result.findings
    assert result.figures["verify_objects_read"] == 1
    assert subjects(result, "content_mismatch") == ["copy1:b.bin"]

    before = (copy / "c.bin").stat()
    flip_bit_keep_mtime(copy / "c.bin")
    after = (copy / "c.bin").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    clock.t = T0 + DAY + 2 * 3600
    result, _ = await run(tmp_path, cfg, clock=clock)
    assert result.figures["verify_objects_read"] == 1
    assert subjects(result, "content_mismatch") == ["copy1:b.bin", "copy1:c.bin"]  # b.bin: known bad


async def test_rows_written_before_inodes_were_recorded_match_on_their_mtime(tmp_path: Path) -> None:
    """A ledger row from before inodes and ctimes were recorded (version ``mtime:...`` alone) is unchanged for
    a file listed with the same mtime, so an upgrade does not re-read every file; its next write records the
    full version, which then must match in inode and ctime too."""
    files = blobs({"a.bin": UNIT})
    cfg = estate(tmp_path, files, {"read_every": "30d"})
    config = parse(tmp_path, cfg)
    policy = config.assets["data"].verification
    assert policy is not None
    store = open_store(config)
    await store.open()
    try:
        session = VerifySession(store, "data", policy, T0, 1.0)
        old = LedgerEntry("a.bin", UNIT, "mtime:1.0", "", "size", "", T0, T0)
        seen = Entry("a.bin", UNIT, 1.0, ino=12, ctime_ns=7)
        assert not session.changed(seen, old)
        assert session.changed(Entry("a.bin", UNIT, 2.0, ino=12, ctime_ns=7), old)
        full = LedgerEntry("a.bin", UNIT, "mtime:1.0;ino:12;ctime:7", "", "size", "", T0, T0)
        assert not session.changed(seen, full)
        assert session.changed(Entry("a.bin", UNIT, 1.0, ino=13, ctime_ns=7), full)  # replaced by another file
        assert session.changed(Entry("a.bin", UNIT, 1.0, ino=12, ctime_ns=8), full)  # rewritten in place
    finally:
        await store.close()


async def test_a_changed_object_found_bad_before_may_use_the_planned_reservation(tmp_path: Path) -> None:
    """The session on a real store: when the plan reserves the whole allowance, a new object waits, but a
    changed object the ledger had found bad is read first (it may use the reservation). A row found bad
    stays bad only while the object, its provider checksum and the reference are all unchanged."""
    files = blobs({f"{k}.bin": UNIT for k in "abcd"})
    cfg = estate(tmp_path, files, {"read_every": "2d", "budget": {"egress_bytes_per_day": 2 * UNIT}})
    clock = Clock(T0)
    flip_bit_keep_mtime(tmp_path / "copy1" / "data" / "d.bin")
    for day in range(2):  # a, b read on day 0; c, d on day 1 (d found bad)
        clock.t = T0 + day * DAY
        await run(tmp_path, cfg, clock=clock)
    rows = await ledger(tmp_path, cfg)
    assert rows["d.bin"].evidence == "mismatch" and rows["a.bin"].read_at == T0
    config = parse(tmp_path, cfg)
    store = open_store(config)
    await store.open()
    try:
        policy = config.assets["data"].verification
        assert policy is not None
        session = VerifySession(store, "data", policy, T0 + 2 * DAY, 1.0)
        session.add_copy("copy1", "copy1", None)
        await session.start()
        assert set(session.plan.reads) == {("copy1", "a.bin"), ("copy1", "b.bin")}  # due: read 2 days ago
        changed = Entry("d.bin", UNIT, T0 + DAY + 1)
        new = Entry("n.bin", UNIT, T0 + DAY + 1)
        ref = "sha256:" + "0" * 64
        assert session.requeued(changed, rows["d.bin"], ref) and not session.known_bad(changed, rows["d.bin"], ref)
        assert not session.take("copy1", new, 0)  # only what the plan does not reserve: nothing
        assert session.take("copy1", changed, 0, priority=True)
        # a known-bad row stays bad while the object, its provider checksum and the reference are unchanged
        row = LedgerEntry("x.bin", UNIT, "mtime:1.0", "", "mismatch", f"read|{ref}|SHA256:aaa", T0, T0)
        same = Entry("x.bin", UNIT, 1.0)
        assert session.known_bad(same, row, ref, "SHA256:aaa") and session.known_bad(same, row, ref)
        assert not session.known_bad(same, row, ref, "SHA256:bbb")  # its checksum changed
        assert not session.known_bad(same, row, "sha256:" + "1" * 64)  # the reference changed (a new seal)
        assert session.requeued(same, row, "sha256:" + "1" * 64)
    finally:
        await store.close()


async def test_an_object_over_the_daily_budget_never_blocks_the_others(tmp_path: Path) -> None:
    """big.bin (3 units) cannot be read under a budget of 2 units a day: every other object is still read
    within read_every (3d) day after day, big.bin never, and the run says so precisely (how many objects,
    how many bytes, the budget it would take) without claiming a period for it; its bytes stay uncovered
    in drwatch_verify_coverage_ratio."""
    sizes = {"a.bin": UNIT, "big.bin": 3 * UNIT, "c.bin": UNIT, "d.bin": UNIT, "e.bin": UNIT}
    cfg = estate(tmp_path, blobs(sizes), {"read_every": "3d", "budget": {"egress_bytes_per_day": 2 * UNIT}})
    clock = Clock(T0)
    for day in range(9):
        clock.t = T0 + day * DAY
        result, _ = await run(tmp_path, cfg, clock=clock)
        assert result.outcome == Outcome.OK, result.findings
        assert result.figures["verify_bytes_read"] <= 2 * UNIT
        over_findings = [f for f in result.findings if f.code == "verify_object_over_budget"]
        assert len(over_findings) == 1, result.findings
        over = over_findings[0]
        assert over.message.startswith("1 object(s) (192.0 KiB) each cost more to read than the whole daily budget "
                                       "of 128.0 KiB: they are never read-verified (largest copy1:big.bin"), over
        assert "needs a budget of at least 192.0 KiB/day" in over.message, over.message
        assert "verify_budget_too_small" not in codes(result)  # the other 4 units need 1.4 units a day
        rows = await ledger(tmp_path, cfg)
        assert rows["big.bin"].read_at is None
        if day >= 2:
            for key in ("a.bin", "c.bin", "d.bin", "e.bin"):
                read_at = rows[key].read_at
                assert read_at is not None and clock.t - read_at <= 3 * DAY, (day, key, read_at)
    found = await samples(tmp_path, cfg)
    assert coverage(found, "copy1") == pytest.approx(4 / 7)


async def test_budget_finding_never_claims_a_period_an_over_budget_object_cannot_keep(tmp_path: Path) -> None:
    """When the other objects are short of budget too, verify_budget_too_small speaks of the other bytes
    only; its period is theirs, and big.bin is named in its own finding."""
    sizes = {"big.bin": 3 * UNIT, **{f"s{i}.bin": UNIT for i in range(8)}}
    cfg = estate(tmp_path, blobs(sizes), {"read_every": "2d", "budget": {"egress_bytes_per_day": 2 * UNIT}})
    result, _ = await run(tmp_path, cfg, clock=Clock(T0))
    short = [f.message for f in result.findings if f.code == "verify_budget_too_small"]
    assert short == [("reading every other byte (all but the 1 object(s) over the daily budget) within 2d needs "
                     "256.0 KiB/day of reads (budget 128.0 KiB/day); at this budget each of those bytes is read "
                     "every 4d")]
    assert "verify_object_over_budget" in codes(result)


async def test_sealed_production_is_read_within_the_budget_like_a_copy(tmp_path: Path) -> None:
    """With a seal, production's files are proven by the ledger like the copy's: reads of both share one
    budget (3 units a day), the run's spending figure equals what the store recorded, and after read_every
    (4d) every byte of both is read once; coverage is exported for production too."""
    files = blobs({f"f{i}.bin": UNIT for i in range(6)})
    cfg = estate(tmp_path, files, {"read_every": "4d", "budget": {"egress_bytes_per_day": 3 * UNIT}})
    await sealed(tmp_path)
    clock = Clock(T0)
    reads = {"production": 0, "copy1": 0}
    for day in range(4):
        clock.t = T0 + day * DAY
        result, _ = await run(tmp_path, cfg, clock=clock)
        assert result.outcome == Outcome.OK, result.findings
        for name in reads:
            reads[name] += report(result, name).evidence.get("read", 0)
        assert result.figures["verify_bytes_read"] == 3 * UNIT
        assert result.figures["verify_spent_bytes_today"] == await spent(tmp_path, cfg, clock.t) == 3 * UNIT
    assert reads == {"production": 6, "copy1": 6}
    prod_rows = await ledger(tmp_path, cfg, "production")
    assert sorted(prod_rows) == sorted(files) and all(r.read_at is not None for r in prod_rows.values())
    found = await samples(tmp_path, cfg)
    assert coverage(found, "production") == 1.0 and coverage(found, "copy1") == 1.0
    # `drwatch status` shows production's coverage beside the copy's.
    from drwatch.state.report import verification_doc

    config = parse(tmp_path, cfg)
    store = open_store(config)
    await store.open()
    try:
        doc = verification_doc(Snapshot.from_state(config, await store.load_state()))
    finally:
        await store.close()
    assert set(doc["data"]) == {"production", "copy1"}
    assert doc["data"]["production"]["coverage"]["read"] == 1.0
