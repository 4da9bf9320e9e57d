"""A sealed filesystem production is not hashed again while its files are unchanged by stat; every file is
still re-read within ``production_reread`` (issue 14 item 4).

Real files, a real SQLite store (the verification ledger), a controlled clock (days pass between runs). The
bit-rot case is real damage below the filesystem: production lives on an ext4 image mounted through a loop
device; the image is unmounted, one byte of the file's data block is flipped in the image, and it is mounted
again, so size, mtime, inode and ctime are all unchanged (the test asserts it) while the bytes differ.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from drwatch.core.model import CopyState, Outcome, Result
from tests.support.helpers import basic_config, populate, write_tree
from tests.support.s3helpers import run
from tests.test_replica import codes, copy_report, flip_keep_mtime, seal

DAY = 86400.0


def day_start() -> float:
    """The tests' clock start: now, or just after the next UTC midnight when less than 4 hours of today are left.
    The verification ledger budgets re-reads per UTC day (``ledger.day``) and these tests step up to 2 hours within
    their first day: started at 22:12 UTC, the 00:12 run had a fresh day's budget and re-read early (CI at that
    hour). Never before now: a seal written now is never ahead of the clock."""
    now = time.time()
    midnight = (now // DAY + 1) * DAY
    return now if midnight - now > 4 * 3600 else midnight + 60


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def cfg(tmp: Path, copies: int = 1, **replica: Any) -> dict[str, Any]:
    return basic_config(tmp, copies=copies, rpo="3650d",
                        validator={"kind": "replica", "schedule": {"every": "1d"}, **replica})


def prod_evidence(result: Result) -> dict[str, int]:
    return dict(copy_report(result, "production").evidence)


async def test_unchanged_production_is_proven_by_stat(tmp_path: Path) -> None:
    """The first run reads every production file; the next (same day) reads none of them and proves them
    ``unchanged``; the copies are still read every run."""
    files = populate(tmp_path, copies=1)
    await seal(tmp_path / "prod" / "data")
    T0 = day_start()  # per test: a seal written now is never ahead of the clock
    clock = Clock(T0)
    first, _ = await run(tmp_path, cfg(tmp_path), clock=clock)
    assert first.outcome == Outcome.OK, first.findings
    assert prod_evidence(first) == {"read": len(files)}
    assert copy_report(first, "production").bytes_verified == sum(len(b) for b in files.values())

    clock.t += 3600
    second, _ = await run(tmp_path, cfg(tmp_path), clock=clock)
    assert second.outcome == Outcome.OK, second.findings
    assert prod_evidence(second) == {"unchanged": len(files)}
    assert copy_report(second, "production").bytes_verified == 0
    assert copy_report(second, "production").state == CopyState.VERIFIED
    assert dict(copy_report(second, "copy1").evidence) == {"read": len(files)}


@pytest.mark.parametrize("how", ["in_place", "replaced"])
async def test_changed_file_is_rehashed_at_once(tmp_path: Path, how: str) -> None:
    """A production file changed after the first run with its size and mtime kept — rewritten in place (its
    ctime moves) or replaced by another file renamed over it (a new inode) — is hashed by the very next run
    and found corrupt, though it is not due for its re-read for days."""
    files = populate(tmp_path, copies=1)
    prod = tmp_path / "prod" / "data"
    await seal(prod)
    T0 = day_start()  # per test: a seal written now is never ahead of the clock
    clock = Clock(T0)
    assert (await run(tmp_path, cfg(tmp_path), clock=clock))[0].outcome == Outcome.OK
    victim = sorted(files)[3]
    if how == "in_place":
        flip_keep_mtime(prod / victim, offset=7)
    else:
        st = (prod / victim).stat()
        aside = prod / "replacement.tmp"
        data = bytearray(files[victim])
        data[7] ^= 1
        aside.write_bytes(bytes(data))
        os.utime(aside, ns=(st.st_atime_ns, st.st_mtime_ns))
        aside.rename(prod / victim)

    clock.t += 60
    result, _ = await run(tmp_path, cfg(tmp_path), clock=clock)
    assert result.outcome == Outcome.FAILED
    assert "production_corrupt" in codes(result)
    assert [f.subject for f in result.findings if f.code == "content_mismatch"] == [f"production:{victim}"]
    assert prod_evidence(result) == {"unchanged": len(files) - 1}  # the victim counts as a mismatch
    assert copy_report(result, "production").objects["mismatch"] == 1

    # Still unchanged since that read: it stays bad without another read.
    clock.t += 60
    again, _ = await run(tmp_path, cfg(tmp_path), clock=clock)
    assert again.outcome == Outcome.FAILED
    assert [f.subject for f in again.findings if f.code == "content_mismatch"] == [f"production:{victim}"]


async def test_rereads_off_hash_every_run(tmp_path: Path) -> None:
    """``production_reread: null``: every production file is hashed on every run (the old behaviour)."""
    files = populate(tmp_path, copies=1)
    await seal(tmp_path / "prod" / "data")
    T0 = day_start()  # per test: a seal written now is never ahead of the clock
    clock = Clock(T0)
    for _ in range(2):
        result, _ = await run(tmp_path, cfg(tmp_path, production_reread=None), clock=clock)
        assert result.outcome == Outcome.OK, result.findings
        assert prod_evidence(result) == {"read": len(files)}
        clock.t += 3600


def test_reread_below_a_day_is_refused(tmp_path: Path) -> None:
    """Re-reads are paced per day: a period under one day is a config error naming the field."""
    from tests.support.s3helpers import parse

    with pytest.raises(Exception, match="production_reread must be at least 1d"):
        parse(tmp_path, cfg(tmp_path, production_reread="12h"))


def make_ext4(image: Path) -> None:
    """A fresh 16 MiB ext4 file system (no journal) in the file ``image``."""
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image), "16M"], check=True, timeout=60,
                   capture_output=True)


@contextmanager
def ext4(image: Path, mount_point: Path) -> Iterator[None]:
    """``image`` (an ext4 file system) mounted on ``mount_point`` through a loop device, unmounted after."""
    mount_point.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True, timeout=60)
    try:
        yield
    finally:
        subprocess.run(["umount", str(mount_point)], check=True, timeout=60)


def stat_of(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


async def test_bit_rot_below_the_filesystem_is_found_within_the_period(tmp_path: Path) -> None:
    """One byte of a production file flipped on the disk itself (no stat changes): runs before the file's
    re-read is due still pass (the documented window), the rolling re-read reads half the bytes a day
    (``production_reread: 2d``), least recently read first, and the run that re-reads the file — day 2, the
    end of the period — fails it as silent corruption of production."""
    rng = random.Random(5)
    files = {f"shard-{i}.bin": rng.randbytes(8192) for i in range(8)}
    victim = "shard-7.bin"  # last in key order: re-read on the last day of the period
    image, mount_point = tmp_path / "prod.img", tmp_path / "prod"
    make_ext4(image)
    write_tree(tmp_path / "copy1" / "data", files)
    config = cfg(tmp_path, production_reread="2d")
    T0 = day_start()  # per test: a seal written now is never ahead of the clock
    clock = Clock(T0)
    with ext4(image, mount_point):
        write_tree(mount_point / "data", files)
        await seal(mount_point / "data")
        first, _ = await run(tmp_path, config, clock=clock)
        before = stat_of(mount_point / "data" / victim)
    assert first.outcome == Outcome.OK, first.findings
    assert prod_evidence(first) == {"read": 8}

    disk = bytearray(image.read_bytes())
    at = disk.find(files[victim])
    assert at >= 0 and disk.find(files[victim], at + 1) < 0
    disk[at + 100] ^= 0x10
    image.write_bytes(bytes(disk))

    reads = []
    with ext4(image, mount_point):
        assert stat_of(mount_point / "data" / victim) == before  # nothing the file system shows has changed
        assert (mount_point / "data" / victim).read_bytes() != files[victim]
        for day, hour in ((0, 2), (1, 0), (2, 0)):
            clock.t = T0 + day * DAY + hour * 3600
            result, _ = await run(tmp_path, config, clock=clock)
            reads.append(prod_evidence(result).get("read", 0) + copy_report(result, "production").objects["mismatch"])
            if day < 2:
                assert result.outcome == Outcome.OK, (day, result.findings)
    assert reads == [0, 4, 4]
    assert result.outcome == Outcome.FAILED
    assert "production_corrupt" in codes(result)
    assert [f.subject for f in result.findings if f.code == "content_mismatch"] == [f"production:{victim}"]
