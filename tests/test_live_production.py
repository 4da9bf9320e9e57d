"""Production is live data: changes since the seal or since a copy was taken are expected, corruption is not.

Real files (times set with ``os.utime`` where a test needs a copy taken long ago) and a real moto S3 server
(LastModified at S3's resolution, so the changed side is written a second later). The last tests run a
production that changes every 0.2 s while a backup job snapshots, seals and swaps its copies in and the
validator runs again and again: no run may be ``failed``; one flipped byte in a copy must be.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drwatch.core.model import CopyState, Outcome, Result
from drwatch.formats.sealing import seal_directory
from drwatch.state.compliance import evaluate
from drwatch.state.snapshot import Snapshot
from tests.support.helpers import basic_config, populate, run_cli
from tests.support.s3helpers import Locations, bucket, config, parse, report, run, subjects, upload
from tests.support.s3proxy import RecordingProxy, s3_operation
from tests.support.s3servers import MotoServer
from tests.test_replica import codes, copy_report, flip_keep_mtime, run_replica, seal

DAY = 86400.0


def finding(result: Result, code: str, subject: str | None = None) -> str:
    return next(f.message for f in result.findings if f.code == code and (subject is None or f.subject == subject))


def age_tree(root: Path, seconds: float) -> None:
    """Date every file under ``root`` ``seconds`` in the past (a copy taken that long ago)."""
    when = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def append(path: Path, text: bytes = b"one more line\n") -> None:
    with path.open("ab") as fh:
        fh.write(text)


# ----------------------------------------------------------------------------- production under a seal


async def test_production_changed_after_the_seal_is_counted_not_bad(tmp_path: Path) -> None:
    """After the seal production gets an appended line, a new file and a deleted file: ok, production stays
    a verified copy, the changes are counted (info finding and figure), the copies still prove the seal."""
    files = populate(tmp_path)
    prod = tmp_path / "prod" / "data"
    await seal(prod)
    names = sorted(files)
    await asyncio.sleep(0.01)
    append(prod / names[0])
    (prod / "created-after-seal.log").write_bytes(b"new\n")
    (prod / names[1]).unlink()
    result = await run_replica(tmp_path, basic_config(tmp_path))

    assert result.outcome == Outcome.OK, result.findings
    assert copy_report(result, "production").state == CopyState.VERIFIED
    assert copy_report(result, "production").objects == {
        "verified": len(files) - 2, "missing": 0, "mismatch": 0, "extra": 0, "changed": 1, "new": 1, "deleted": 1}
    assert "1 modified, 1 new, 1 deleted" in finding(result, "production_changed_since_seal")
    assert result.figures["production_changed_since_seal"] == 3
    assert not codes(result) & {"size_mismatch", "production_drift", "production_corrupt", "missing_file"}
    assert [copy_report(result, c).state for c in ("copy1", "copy2")] == [CopyState.VERIFIED] * 2


@pytest.mark.parametrize("how", ["touched", "copied_again"])
async def test_a_copy_written_after_productions_last_change_must_hold_it(tmp_path: Path, how: str) -> None:
    """Production's file changes after the seal (only its time: `touch`; or its content, copied again by the
    backup), then a copy's file is written after that change: a newer state than the seal, which the copy must
    hold as production has it now. A corrupted copy file written then (the new-user trial: corruption plus a
    `touch`, or a `cp -r` without -p) was excused as `copy_newer_than_seal` and the copy counted verified; it is
    content_mismatch (size_mismatch where the seal's size differs: failed). The copy that does hold production's
    content is ahead: ok, a warning."""
    files = populate(tmp_path)
    prod, copy1 = tmp_path / "prod" / "data", tmp_path / "copy1" / "data"
    await seal(prod)
    victim = sorted(files)[2]
    await asyncio.sleep(0.01)
    if how == "touched":
        (prod / victim).touch()
    else:
        append(prod / victim)
    await asyncio.sleep(0.01)
    (copy1 / victim).write_bytes((prod / victim).read_bytes())  # the backup copies production's state
    (tmp_path / "copy2" / "data" / victim).write_bytes((prod / victim).read_bytes())
    good = await run_replica(tmp_path, basic_config(tmp_path))
    assert good.outcome == Outcome.OK, good.findings
    assert copy_report(good, "copy1").state == CopyState.VERIFIED

    flip_keep_mtime(copy1 / victim, offset=3)  # then corrupted, its time kept: still "after production's change"
    bad = await run_replica(tmp_path, basic_config(tmp_path))
    assert bad.outcome == Outcome.FAILED, bad.findings
    code = "content_mismatch" if how == "touched" else "size_mismatch"  # the seal's size differs from the latter
    assert [f.subject for f in bad.findings if f.code == code] == [f"copy1:{victim}"]
    assert copy_report(bad, "copy1").state == CopyState.FAILED
    assert copy_report(bad, "copy2").state == CopyState.VERIFIED


async def test_frozen_production_that_changed_fails(tmp_path: Path) -> None:
    """`production: {frozen: true}` (model weights, a frozen dataset): the same appended line is drift: failed."""
    files = populate(tmp_path)
    prod = tmp_path / "prod" / "data"
    await seal(prod)
    await asyncio.sleep(0.01)
    append(prod / sorted(files)[0])
    cfg = basic_config(tmp_path)
    cfg["assets"]["data"]["production"]["frozen"] = True
    result = await run_replica(tmp_path, cfg)

    assert result.outcome == Outcome.FAILED
    assert copy_report(result, "production").state == CopyState.FAILED
    assert "frozen" in finding(result, "production_drift")
    assert "size_mismatch" in codes(result) and "production_changed_since_seal" not in codes(result)
    assert [copy_report(result, c).state for c in ("copy1", "copy2")] == [CopyState.VERIFIED] * 2


async def test_bit_rot_in_production_fails(tmp_path: Path) -> None:
    """A production file whose bytes changed while its modification time did not (restored with os.utime):
    silent corruption of production, failed, although production is live."""
    files = populate(tmp_path)
    prod = tmp_path / "prod" / "data"
    await seal(prod)
    victim = sorted(files)[4]
    flip_keep_mtime(prod / victim, offset=5)
    result = await run_replica(tmp_path, basic_config(tmp_path))

    assert result.outcome == Outcome.FAILED
    assert copy_report(result, "production").state == CopyState.FAILED
    assert "silent corruption" in finding(result, "production_corrupt")
    assert [f.subject for f in result.findings if f.code == "content_mismatch"] == [f"production:{victim}"]
    assert [copy_report(result, c).state for c in ("copy1", "copy2")] == [CopyState.VERIFIED] * 2


async def test_seal_taken_at_dates_the_backup(tmp_path: Path) -> None:
    """A seal written after the backup says when the backup read production (`drwatch seal --meta taken_at=`):
    production changed between the backup and the seal is a live change, and the recovery point is the
    backup's time."""
    files = populate(tmp_path)
    prod = tmp_path / "prod" / "data"
    taken = time.time()
    await asyncio.sleep(0.05)
    append(prod / sorted(files)[0])  # after the backup read it, before the seal
    backup = tmp_path / "backup"
    shutil.copytree(tmp_path / "copy1" / "data", backup)
    out = await asyncio.to_thread(run_cli, "seal", "--location-path", str(backup), "--out",
                                  str(tmp_path / "seal.jsonl"), "--meta", f"taken_at={taken}")
    assert out.returncode == 0, out.stderr
    cfg = basic_config(tmp_path, manifest=str(tmp_path / "seal.jsonl"))
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert result.recovery_point == pytest.approx(taken)
    assert result.figures["production_changed_since_seal"] == 1

    # The same seal without taken_at: the change predates the seal, so it is taken for corruption.
    await seal_directory(backup, out_path=tmp_path / "seal.jsonl")
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert "production_corrupt" in codes(result)


async def test_without_production_nothing_is_excused(tmp_path: Path) -> None:
    """Seal kept outside production, production not there: nothing can say a copy is merely behind, so a file
    missing from a copy is missing (failed), even from a copy older than the seal."""
    files = populate(tmp_path)
    await seal_directory(tmp_path / "prod" / "data", out_path=tmp_path / "seal.jsonl")
    age_tree(tmp_path / "copy1" / "data", 3600)
    victim = sorted(files)[2]
    (tmp_path / "copy1" / "data" / victim).unlink()
    shutil.rmtree(tmp_path / "prod" / "data")
    result = await run_replica(tmp_path, basic_config(tmp_path, manifest=str(tmp_path / "seal.jsonl")))

    assert result.outcome == Outcome.FAILED
    assert [f.subject for f in result.findings if f.code == "missing_file"] == [f"copy1:{victim}"]
    assert "copy_behind" not in codes(result)


# ----------------------------------------------------------------------------- copies without a seal


def behind_estate(tmp_path: Path, copy_age: float) -> tuple[dict[str, bytes], Path, Path]:
    """Production and one copy taken ``copy_age`` seconds ago; production then changed one file (appended)
    and created another one."""
    files = populate(tmp_path, copies=1)
    prod, copy = tmp_path / "prod" / "data", tmp_path / "copy1" / "data"
    age_tree(prod, copy_age + 60)
    age_tree(copy, copy_age)
    append(prod / sorted(files)[0])
    (prod / "created-after-copy.log").write_bytes(b"new\n")
    return files, prod, copy


async def test_copy_behind_within_the_rpo_is_ok_with_a_warning(tmp_path: Path) -> None:
    """A copy taken an hour ago, production changed since (RPO 1d): the copy holds an older recovery point,
    not a corrupt one: ok, `copy_behind`, the copy verified with its own (older) recovery point; compliant."""
    files, _, copy = behind_estate(tmp_path, 3600)
    cfg = basic_config(tmp_path, copies=1, rpo="1d")
    result = await run_replica(tmp_path, cfg)

    assert result.outcome == Outcome.OK, result.findings
    rep = copy_report(result, "copy1")
    assert rep.state == CopyState.VERIFIED
    assert rep.objects["behind"] == 2 and rep.objects["missing"] == 0 and rep.objects["mismatch"] == 0
    assert rep.recovery_point == pytest.approx(max(p.stat().st_mtime for p in copy.rglob("*") if p.is_file()))
    assert result.recovery_point is not None and rep.recovery_point < result.recovery_point
    assert sorted(s for s in subjects(result, "copy_behind") if ":" in s) == \
        ["copy1:created-after-copy.log", f"copy1:{sorted(files)[0]}"]
    assert "within the RPO" in finding(result, "copy_behind", "copy1")
    assert not codes(result) & {"missing_file", "size_mismatch", "content_mismatch"}
    verdict = evaluate(parse(tmp_path, cfg), Snapshot(parse(tmp_path, cfg)).with_result(result, time.time()),
                       time.time())["data"]
    assert {c.name: c.status for c in verdict.copies}["copy1"] == "verified"  # a valid, older recovery point


async def test_copy_behind_past_the_rpo_fails(tmp_path: Path) -> None:
    """The same copy taken two days ago (RPO 1d): its recovery point is older than the RPO: failed, although
    production itself is fresh."""
    behind_estate(tmp_path, 2 * DAY)
    result = await run_replica(tmp_path, basic_config(tmp_path, copies=1, rpo="1d"))

    assert result.outcome == Outcome.FAILED
    assert copy_report(result, "copy1").state == CopyState.FAILED
    assert "behind production" in finding(result, "rpo_exceeded", "copy1")
    assert not any(f.code == "rpo_exceeded" and f.subject == "production" for f in result.findings)


@pytest.mark.parametrize("how", ["bit_rot", "rewritten"])
async def test_copy_corrupt_in_an_object_production_did_not_change_fails(tmp_path: Path, how: str) -> None:
    """Next to objects that are merely behind, a copy object that differs although production has not changed
    it since the copy was taken is corruption: failed at once (bit rot with the time kept, or a rewrite)."""
    files, _, copy = behind_estate(tmp_path, 3600)
    victim = sorted(files)[3]
    if how == "bit_rot":
        flip_keep_mtime(copy / victim, offset=9)
    else:
        (copy / victim).write_bytes(b"x" * len(files[victim]))
    result = await run_replica(tmp_path, basic_config(tmp_path, copies=1, rpo="1d"))

    assert result.outcome == Outcome.FAILED
    assert copy_report(result, "copy1").state == CopyState.FAILED
    assert [f.subject for f in result.findings if f.code == "content_mismatch"] == [f"copy1:{victim}"]
    # A rewrite dates the copy now: the file production created an hour after the copy was taken is then
    # judged missing, not behind (the copy's newest time is all that says when it was taken).
    assert copy_report(result, "copy1").objects["behind"] == (2 if how == "bit_rot" else 1)


async def test_a_file_left_out_of_a_copy_is_missing_not_behind(tmp_path: Path) -> None:
    """A file production has not changed since before the copy was taken, absent from the copy: missing."""
    files, _, copy = behind_estate(tmp_path, 3600)
    victim = sorted(files)[5]
    (copy / victim).unlink()
    result = await run_replica(tmp_path, basic_config(tmp_path, copies=1, rpo="1d"))

    assert result.outcome == Outcome.FAILED
    assert [f.subject for f in result.findings if f.code == "missing_file"] == [f"copy1:{victim}"]


async def test_production_dated_in_the_future_explains_nothing(tmp_path: Path) -> None:
    """Production touched to 2099 cannot make a corrupt copy object look merely behind."""
    files = populate(tmp_path, copies=1)
    victim = sorted(files)[2]
    (tmp_path / "copy1" / "data" / victim).write_bytes(b"y" * len(files[victim]))
    future = time.time() + 60 * 365 * DAY
    os.utime(tmp_path / "prod" / "data" / victim, (future, future))
    result = await run_replica(tmp_path, basic_config(tmp_path, copies=1, rpo="1d"))

    assert result.outcome == Outcome.FAILED
    assert [f.subject for f in result.findings if f.code == "content_mismatch"] == [f"copy1:{victim}"]


# ----------------------------------------------------------------------------- S3 (LastModified)


SMALL = {f"part-{i:02d}.bin": bytes([i]) * (1500 + i) for i in range(6)}


async def test_s3_copy_behind_and_corrupt(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """S3 copy uploaded before production changed (a later LastModified): behind, ok; the same estate with
    a copy object overwritten after production's: corrupt, failed."""
    prod, copy = bucket(moto, "liveprod"), bucket(moto, "livecopy")
    upload(moto, prod, SMALL)
    upload(moto, copy, SMALL)
    await asyncio.sleep(2.1)  # LastModified is in whole seconds: production more than a second later
    names = sorted(SMALL)
    upload(moto, prod, {names[0]: SMALL[names[0]] + b"appended", "new-object.bin": b"new"})
    locs.s3("prod", moto, prod, site="dc-a", access_key="AKIDPROD")
    locs.s3("vault", moto, copy, site="dc-b", access_key="AKIDVAULT")
    cfg = config(tmp_path, locs, ("prod", "data"), [("vault", "data")])
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert report(result, "vault").state == CopyState.VERIFIED
    assert report(result, "vault").objects["behind"] == 2
    assert "within the RPO" in finding(result, "copy_behind", "vault")

    await asyncio.sleep(1.1)
    upload(moto, copy, {names[3]: bytes(len(SMALL[names[3]]))})  # production did not change it
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert [f.subject for f in result.findings if f.code == "content_mismatch"] == [f"vault:{names[3]}"]


async def test_s3_copy_behind_past_the_rpo_fails(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """An S3 copy whose newest object is older than the RPO while production changed since: failed."""
    prod, copy = bucket(moto, "liveprod"), bucket(moto, "livecopy")
    upload(moto, prod, SMALL)
    upload(moto, copy, SMALL)
    await asyncio.sleep(3.2)
    name = sorted(SMALL)[1]
    upload(moto, prod, {name: SMALL[name] + b"later"})
    locs.s3("prod", moto, prod, site="dc-a", access_key="AKIDPROD")
    locs.s3("vault", moto, copy, site="dc-b", access_key="AKIDVAULT")
    result, _ = await run(tmp_path, config(tmp_path, locs, ("prod", "data"), [("vault", "data")], rpo="3s"))
    assert result.outcome == Outcome.FAILED
    assert report(result, "vault").state == CopyState.FAILED
    assert "behind production" in finding(result, "rpo_exceeded", "vault")


@pytest.mark.parametrize("case", ["same_etag", "content_reads_off", "budget_spent", "production_unreadable"])
async def test_s3_copy_ahead_of_the_seal_is_compared_with_production_within_bounds(
        tmp_path: Path, moto: MotoServer, locs: Locations, case: str) -> None:
    """A copy object written after production changed it since the seal is compared with production's object,
    within bounds: equal single-part ETags prove it without a read (no GET of production's object, whose egress
    is paid for); with `verify_content: false`, or a verification budget without room for both reads, neither
    side is read (a corrupted copy stays `ahead`, as sizes alone say); a production object that cannot be read
    (its GETs time out) leaves the copy's object unchecked (`error`, a warning naming production), never
    `failed`."""
    files = {"a.bin": b"a" * 3000, "b.bin": b"b" * 3000}
    prod, copy = bucket(moto, "liveprod"), bucket(moto, "livecopy")
    upload(moto, prod, files)
    upload(moto, copy, files)
    staged = tmp_path / "staged"
    staged.mkdir()
    for name, body in files.items():
        (staged / name).write_bytes(body)
    await seal_directory(staged, out_path=tmp_path / "seal.jsonl")
    await asyncio.sleep(1.1)
    upload(moto, prod, {"b.bin": b"B" * 3010})  # production changed it after the seal
    await asyncio.sleep(1.1)
    upload(moto, copy, {"b.bin": b"B" * 3010 if case == "same_etag" else bytes(3010)})  # then the backup ran
    slow = case == "production_unreadable"
    with RecordingProxy("127.0.0.1", moto.port, get_delay=1.5 if slow else 0.0) as proxy:
        locs.s3("prod", moto, prod, site="dc-a", endpoint_url=proxy.endpoint_url,
                **({"read_timeout": "1s", "max_attempts": 1} if slow else {}))
        locs.s3("vault", moto, copy, site="dc-b")
        cfg = config(tmp_path, locs, ("prod", "data"), [("vault", "data")],
                     validators=[{"kind": "replica", "verify_content": case != "content_reads_off"}])
        cfg["assets"]["data"]["manifest"] = str(tmp_path / "seal.jsonl")
        if case == "budget_spent":
            cfg["assets"]["data"]["verification"] = {"read_every": "1d", "budget": {"egress_bytes_per_day": 4000}}
        result, _ = await run(tmp_path, cfg)
        gets = [r.key for r in proxy.snapshot(prod) if s3_operation(r) == "get"]
        proxy.settle()  # the GETs the client gave up on are still served: before the proxy stops
    vault = report(result, "vault")
    if case == "production_unreadable":
        assert result.outcome == Outcome.ERROR, result.findings
        assert vault.state == CopyState.ERROR
        assert "production's object could not be read" in finding(result, "unreadable", "vault:b.bin")
        assert not codes(result) & {"size_mismatch", "content_mismatch"}
        return
    assert "data/b.bin" not in gets, gets
    assert subjects(result, "copy_newer_than_seal") == ["vault:b.bin"]
    if case == "budget_spent":  # what the budget left unread is not proven: never failed for it
        assert result.outcome != Outcome.FAILED and vault.state != CopyState.FAILED, result.findings
        return
    assert result.outcome == Outcome.OK, result.findings
    assert vault.state == CopyState.VERIFIED


@pytest.mark.parametrize("frozen", [False, True])
async def test_s3_production_changed_after_the_seal(tmp_path: Path, moto: MotoServer, locs: Locations,
                                                    frozen: bool) -> None:
    """An S3 production object overwritten after the seal (LastModified newer): counted, ok; failed when
    the asset's production is frozen."""
    prod, copy = bucket(moto, "liveprod"), bucket(moto, "livecopy")
    upload(moto, prod, SMALL)
    upload(moto, copy, SMALL)
    staged = tmp_path / "staged"
    staged.mkdir()
    for name, body in SMALL.items():
        (staged / name).write_bytes(body)
    await seal_directory(staged, out_path=tmp_path / "seal.jsonl")
    await asyncio.sleep(1.1)
    name = sorted(SMALL)[2]
    upload(moto, prod, {name: SMALL[name] + b"later"})
    locs.s3("prod", moto, prod, site="dc-a", access_key="AKIDPROD")
    locs.s3("vault", moto, copy, site="dc-b", access_key="AKIDVAULT")
    cfg = config(tmp_path, locs, ("prod", "data"), [("vault", "data")])
    cfg["assets"]["data"]["manifest"] = str(tmp_path / "seal.jsonl")
    cfg["assets"]["data"]["production"]["frozen"] = frozen
    result, _ = await run(tmp_path, cfg)
    assert report(result, "vault").state == CopyState.VERIFIED
    if frozen:
        assert result.outcome == Outcome.FAILED
        assert "production_drift" in codes(result)
        assert report(result, "production").state == CopyState.FAILED
    else:
        assert result.outcome == Outcome.OK, result.findings
        assert report(result, "production").state == CopyState.VERIFIED
        assert result.figures["production_changed_since_seal"] == 1


# ----------------------------------------------------------------------------- a live estate

_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (renameat2 RENAME_EXCHANGE): a copy is replaced in one step."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class LiveEstate:
    """Production that changes every 0.2 s (appends, new files) and a backup job that every ``every`` seconds
    takes an atomic snapshot (production paused for it, as an LVM/ZFS snapshot is atomic), optionally seals
    it (``taken_at``: the snapshot's time), and swaps it into each copy in one rename. Files keep their
    modification times through snapshot and copies, as with rsync -a."""

    def __init__(self, tmp: Path, copies: int, sealed: bool, every: float = 0.8) -> None:
        self.tmp, self.copies, self.sealed, self.every = tmp, copies, sealed, every
        self.prod = tmp / "prod" / "data"
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.cycles = 0
        self.rng = random.Random(7)
        self.threads = [threading.Thread(target=self._writer), threading.Thread(target=self._backup)]
        self.errors: list[BaseException] = []

    def __enter__(self) -> LiveEstate:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        assert not self.errors, self.errors

    def _writer(self) -> None:
        n = 0
        try:
            while not self.stop.wait(0.2):
                with self.lock:
                    names = sorted(p for p in self.prod.rglob("*") if p.is_file())
                    append(self.rng.choice(names), f"line {n}\n".encode())
                    if n % 5 == 0:
                        (self.prod / f"log-{n:04d}.txt").write_bytes(b"created\n")
                n += 1
        except BaseException as exc:  # pragma: no cover - reported by __exit__
            self.errors.append(exc)

    def _backup(self) -> None:
        try:
            while not self.stop.wait(self.every):
                self.backup_once()
        except BaseException as exc:  # pragma: no cover - reported by __exit__
            self.errors.append(exc)

    def backup_once(self) -> None:
        gen = self.tmp / "gens" / f"{self.cycles:04d}"
        snap = gen / "snap"
        with self.lock:
            taken = time.time()
            shutil.copytree(self.prod, snap)  # times kept, as rsync -a does
        if self.sealed:
            asyncio.run(seal_directory(snap, out_path=self.tmp / "seal.jsonl", extra={"taken_at": str(taken)}))
        for i in range(1, self.copies + 1):
            target = self.tmp / f"copy{i}" / "data"
            fresh = gen / f"copy{i}"
            shutil.copytree(snap, fresh)
            if target.exists():
                exchange(fresh, target)  # ``fresh`` is now the previous generation
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                fresh.rename(target)
        shutil.rmtree(snap)
        # The previous generation is kept one cycle (retention), so a check walking it is not cut short.
        for old in (self.tmp / "gens").iterdir():
            if old != gen and int(old.name) < self.cycles - 1:
                shutil.rmtree(old)
        self.cycles += 1


@pytest.fixture
def live_tmp(tmp_path: Path) -> Iterator[Path]:
    populate(tmp_path, copies=0)
    yield tmp_path


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sealed", [False, True], ids=["unsealed", "sealed"])
async def test_live_estate_never_fails_until_a_copy_is_corrupted(live_tmp: Path, sealed: bool) -> None:
    """Production changes every 0.2 s and the backup job replaces the copies (and the seal) every 0.8 s while
    the validator runs again and again: not one run is failed. Then production stops, the job runs once more,
    and one byte of one copy is flipped (its time kept): the next run is failed, naming that object."""
    tmp = live_tmp
    cfg = basic_config(tmp, rpo="1d", manifest=str(tmp / "seal.jsonl") if sealed else None)
    outcomes: list[Outcome] = []
    seen: set[str] = set()
    estate = LiveEstate(tmp, copies=2, sealed=sealed)
    await asyncio.to_thread(estate.backup_once)
    with estate:
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline or estate.cycles < 6:
            result = await run_replica(tmp, cfg)
            outcomes.append(result.outcome)
            seen |= codes(result)
            assert result.outcome != Outcome.FAILED, (estate.cycles, result.findings)
            await asyncio.sleep(0.05)
    assert outcomes.count(Outcome.OK) >= len(outcomes) // 2, outcomes  # mostly proven, not mostly "could not check"
    assert estate.cycles >= 6
    # The runs did meet a changing production: copies behind it, production changed since the seal.
    # Unsealed, a copy taken before production's latest writes is behind; sealed, production changed since the
    # seal (a copy between swaps may also be behind, or the next backup's copy ahead of the seal: timing).
    assert ("copy_behind" in seen) if not sealed else ("production_changed_since_seal" in seen), seen
    assert ("production_changed_since_seal" in seen) == sealed, seen
    print(f"live estate: {len(outcomes)} runs, {estate.cycles} backups, codes {sorted(seen)}")

    await asyncio.to_thread(estate.backup_once)  # production is still now: the copies hold its latest state
    result = await run_replica(tmp, cfg)
    assert result.outcome == Outcome.OK, result.findings
    root = tmp / "copy2" / "data"
    victim = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())[1]
    flip_keep_mtime(root / victim, offset=3)
    result = await run_replica(tmp, cfg)
    assert result.outcome == Outcome.FAILED
    assert [f.subject for f in result.findings if f.code == "content_mismatch"] == [f"copy2:{victim}"]
    assert copy_report(result, "copy1").state == CopyState.VERIFIED


# ----------------------------------------------------------------------------- model weights, datasets


@pytest.mark.parametrize("frozen", [False, True])
async def test_model_weights_production_drift_fails_only_when_frozen(tmp_path: Path, locs: Locations,
                                                                     frozen: bool) -> None:
    """Model weights whose production file changed after the seal: `production_drift`, a warning for a live
    production and critical (failed) for a frozen one; the copy equal to the seal stays verified."""
    files = {"config.json": b"{}", "weights.bin": os.urandom(4096)}
    for side in ("prod", "disk1"):
        (tmp_path / side / "model").mkdir(parents=True)
        for name, body in files.items():
            (tmp_path / side / "model" / name).write_bytes(body)
    await seal(tmp_path / "prod" / "model")
    append(tmp_path / "prod" / "model" / "weights.bin", b"\x00")
    locs.fs("prod", tmp_path / "prod", site="dc-a")
    locs.fs("disk1", tmp_path / "disk1", site="dc-b")
    cfg = config(tmp_path, locs, ("prod", "model"), [("disk1", "model")], validators=[{"kind": "model_weights"}])
    cfg["assets"]["data"]["production"]["frozen"] = frozen
    result, _ = await run(tmp_path, cfg)

    drift = next(f for f in result.findings if f.code == "production_drift")
    assert report(result, "disk1").state == CopyState.VERIFIED
    assert result.outcome == (Outcome.FAILED if frozen else Outcome.OK), result.findings
    assert drift.severity.value == ("critical" if frozen else "warning")


@pytest.mark.parametrize("damage", ["appended", "bit_rot"])
async def test_dataset_production_is_live_but_guarded(tmp_path: Path, damage: str) -> None:
    """`dataset`: production appended after the seal is a counted live change (ok); production whose bytes
    changed under an unchanged modification time is silent corruption (failed, `production_corrupt`)."""
    files = populate(tmp_path)
    prod = tmp_path / "prod" / "data"
    await seal(prod)
    victim = prod / sorted(files)[1]
    if damage == "appended":
        await asyncio.sleep(0.01)
        append(victim)
    else:
        flip_keep_mtime(victim, offset=2)
    result = await run_replica(tmp_path, basic_config(tmp_path, validator={"kind": "dataset"}))

    if damage == "appended":
        assert result.outcome == Outcome.OK, result.findings
        assert copy_report(result, "production").state == CopyState.VERIFIED
        assert result.figures["production_changed_since_seal"] == 1
    else:
        assert result.outcome == Outcome.FAILED
        assert copy_report(result, "production").state == CopyState.FAILED
        assert "production_corrupt" in codes(result)
    assert [copy_report(result, c).state for c in ("copy1", "copy2")] == [CopyState.VERIFIED] * 2
