"""The `replica` validator on real files: pass, each failure it detects, and "could not check"."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from drwatch.config.model import parse_config
from drwatch.core.model import CopyState, Outcome, Result
from drwatch.formats.sealing import seal_directory
from drwatch.storage.filesystem import MANIFEST_NAME, filesystem_type, media_class, walk_sorted
from drwatch.store import open_store
from tests.support.helpers import REPO, basic_config, drwatch_cmd, populate, sample_files, write_config, write_tree
from tests.support.runs import open_runner


async def run_replica(tmp: Path, cfg_dict: dict[str, Any], asset: str = "data") -> Result:
    cfg = parse_config(yaml.safe_dump(cfg_dict), source=str(tmp / "drwatch.yaml"))
    async with open_runner(cfg, tmp / "sandboxes") as runner:
        return await runner.execute(asset, cfg.assets[asset].validators[0])


def codes(result: Result) -> set[str]:
    return {f.code for f in result.findings}


def copy_report(result: Result, name: str) -> Any:
    return next(c for c in result.copies if c.copy == name)


async def seal(root: Path) -> None:
    await seal_directory(root, out_path=root / MANIFEST_NAME)


def flip_keep_mtime(path: Path, offset: int = 0) -> None:
    """Flip one bit of a file in place and restore its modification time: silent corruption (bit rot)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


async def test_identical_copies_pass(tmp_path: Path) -> None:
    """All copies identical to production: ok, every copy verified, every byte hashed."""
    files = populate(tmp_path, copies=2)
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.OK, result.findings
    assert [c.state for c in result.copies] == [CopyState.VERIFIED] * 3
    total = sum(len(v) for v in files.values())
    assert copy_report(result, "copy1").objects == {"verified": len(files), "missing": 0, "mismatch": 0, "extra": 0}
    assert copy_report(result, "copy1").bytes_verified == total
    assert result.figures["objects_reference"] == len(files)
    assert result.recovery_point is not None


async def test_missing_file_fails(tmp_path: Path) -> None:
    """A file deleted from one copy: failed, named, counted; the other copy stays verified."""
    files = populate(tmp_path)
    victim = sorted(files)[3]
    (tmp_path / "copy2" / "data" / victim).unlink()
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.FAILED
    missing = [f for f in result.findings if f.code == "missing_file"]
    assert [f.subject for f in missing] == [f"copy2:{victim}"]
    assert copy_report(result, "copy2").state == CopyState.FAILED
    assert copy_report(result, "copy2").objects["missing"] == 1
    assert copy_report(result, "copy1").state == CopyState.VERIFIED


async def test_same_size_corruption_fails(tmp_path: Path) -> None:
    """One flipped byte (same size) is caught by sha256."""
    files = populate(tmp_path)
    victim = sorted(files)[-1]
    path = tmp_path / "copy1" / "data" / victim
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.FAILED
    assert "content_mismatch" in codes(result)
    assert copy_report(result, "copy1").objects["mismatch"] == 1


async def test_truncated_file_fails_as_size_mismatch(tmp_path: Path) -> None:
    """A truncated file is a size mismatch (found without hashing)."""
    files = populate(tmp_path)
    victim = sorted(files)[0]
    path = tmp_path / "copy1" / "data" / victim
    path.write_bytes(path.read_bytes()[:-1])
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.FAILED
    assert "size_mismatch" in codes(result)


async def test_extra_file_is_a_finding_not_a_failure(tmp_path: Path) -> None:
    """Files in a copy that are not in the recovery point are reported but do not fail the run."""
    populate(tmp_path)
    write_tree(tmp_path / "copy1" / "data", {"zz-stray.tmp": b"leftover"})
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.OK
    assert "extra_file" in codes(result)
    assert copy_report(result, "copy1").objects["extra"] == 1
    assert copy_report(result, "copy1").state == CopyState.VERIFIED


async def test_missing_copy_directory_fails(tmp_path: Path) -> None:
    """The location is there (it holds another asset's copy) but this copy's directory is gone: the copy is
    missing (failed)."""
    populate(tmp_path, copies=1)
    write_tree(tmp_path / "copy2" / "other-asset", {"x.bin": b"x"})
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.FAILED
    assert "copy_missing" in codes(result)


@pytest.mark.parametrize("offline", [False, True])
async def test_empty_mount_point_is_not_mounted_not_a_missing_copy(tmp_path: Path, offline: bool) -> None:
    """An unmounted disk, tape or USB drive leaves its mount point: an empty directory that is not a mount
    point. That is "not mounted" - offline for an offline location, could-not-check otherwise - never a bad
    backup paged to the data owners."""
    populate(tmp_path, copies=1)
    (tmp_path / "copy2").mkdir()
    cfg = basic_config(tmp_path)
    cfg["locations"]["copy2"]["offline"] = offline
    result = await run_replica(tmp_path, cfg)
    assert copy_report(result, "copy2").state == (CopyState.OFFLINE if offline else CopyState.ERROR)
    assert result.outcome == (Outcome.OK if offline else Outcome.ERROR)
    assert "copy_missing" not in codes(result)


async def test_wiped_mounted_location_is_a_missing_copy(tmp_path: Path) -> None:
    """The same empty directory when it *is* a mount point (a real tmpfs mounted there): the disk is mounted
    and holds nothing, so the copy is missing (failed)."""
    populate(tmp_path, copies=1)
    mnt = tmp_path / "copy2"
    mnt.mkdir()
    await asyncio.to_thread(subprocess.run, ["mount", "-t", "tmpfs", "-o", "size=1m", "drwatch-test", str(mnt)],
                            check=True, capture_output=True, timeout=30)
    try:
        result = await run_replica(tmp_path, basic_config(tmp_path))
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(mnt)], check=False, timeout=30)
    assert result.outcome == Outcome.FAILED
    assert copy_report(result, "copy2").state == CopyState.FAILED and "copy_missing" in codes(result)


async def test_unmounted_location_is_an_error_not_a_failure(tmp_path: Path) -> None:
    """A location whose path does not exist could not be checked: error, never failed."""
    populate(tmp_path, copies=1)  # copy2's location path does not exist at all
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.ERROR
    assert "location_unavailable" in codes(result)
    assert copy_report(result, "copy2").state == CopyState.ERROR
    assert copy_report(result, "copy1").state == CopyState.VERIFIED


async def test_offline_copy_not_mounted_is_neither_error_nor_failure(tmp_path: Path) -> None:
    """A location declared offline that is not mounted is reported offline; the run stays ok."""
    populate(tmp_path, copies=1)
    cfg = basic_config(tmp_path)
    cfg["locations"]["copy2"]["offline"] = True
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.OK
    assert copy_report(result, "copy2").state == CopyState.OFFLINE


async def test_offline_copy_when_mounted_is_verified(tmp_path: Path) -> None:
    """An offline location that happens to be mounted is verified like any copy (and can fail)."""
    files = populate(tmp_path, copies=2)
    (tmp_path / "copy2" / "data" / sorted(files)[1]).unlink()
    cfg = basic_config(tmp_path)
    cfg["locations"]["copy2"]["offline"] = True
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert copy_report(result, "copy2").state == CopyState.FAILED


async def test_stale_recovery_point_fails_rpo(tmp_path: Path) -> None:
    """Production files older than the RPO: the newest recovery point is stale, the run fails."""
    files = populate(tmp_path)
    old = time.time() - 3 * 86400
    for rel in files:
        os.utime(tmp_path / "prod" / "data" / rel, (old, old))
    result = await run_replica(tmp_path, basic_config(tmp_path, rpo="1d"))
    assert result.outcome == Outcome.FAILED
    assert "rpo_exceeded" in codes(result)
    assert result.figures["recovery_point_age_seconds"] > 2 * 86400


async def test_empty_recovery_point_fails(tmp_path: Path) -> None:
    """A recovery point with no files at all is a bad backup."""
    for d in ("prod/data", "copy1/data", "copy2/data"):
        (tmp_path / d).mkdir(parents=True)
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.FAILED
    assert "empty_recovery_point" in codes(result)


async def test_production_unavailable_without_manifest_is_error(tmp_path: Path) -> None:
    """Without a manifest and without production there is no reference: could not check."""
    populate(tmp_path)
    (tmp_path / "prod" / "data").rename(tmp_path / "prod" / "moved")
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.ERROR


async def test_manifest_is_the_reference(tmp_path: Path) -> None:
    """With a seal, copies are checked against it; the recovery point is the seal time."""
    files = populate(tmp_path)
    await seal(tmp_path / "prod" / "data")
    header = json.loads((tmp_path / "prod" / "data" / MANIFEST_NAME).read_text().splitlines()[0])
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.OK, result.findings
    assert result.recovery_point == pytest.approx(header["sealed_at"])
    assert copy_report(result, "copy2").objects["verified"] == len(files)


async def test_manifest_catches_corruption_present_in_production_too(tmp_path: Path) -> None:
    """Damage made in production *and* propagated to copies (modification times kept: silent corruption) is
    caught against the seal: production is corrupt (`production_corrupt`), and so are the copies."""
    files = populate(tmp_path)
    await seal(tmp_path / "prod" / "data")
    victim = sorted(files)[2]
    for side in ("prod", "copy1", "copy2"):
        p = tmp_path / side / "data" / victim
        flip_keep_mtime(p)
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.FAILED
    assert copy_report(result, "copy1").state == CopyState.FAILED
    assert "production_corrupt" in codes(result)
    assert copy_report(result, "production").state == CopyState.FAILED


async def test_production_unavailable_with_manifest_still_verifies_copies(tmp_path: Path) -> None:
    """With a seal kept outside production, copies are still proven while production is unreachable."""
    populate(tmp_path)
    seal_path = tmp_path / "seals" / "data.jsonl"
    await seal_directory(tmp_path / "prod" / "data", out_path=seal_path)
    (tmp_path / "prod" / "data").rename(tmp_path / "prod" / "gone")
    result = await run_replica(tmp_path, basic_config(tmp_path, manifest=str(seal_path)))
    assert copy_report(result, "copy1").state == CopyState.VERIFIED
    assert copy_report(result, "production").state == CopyState.ERROR
    assert result.outcome == Outcome.ERROR  # production could not be checked: not a bad backup


async def test_truncated_manifest_fails(tmp_path: Path) -> None:
    """A manifest that lost lines no longer matches its header totals: the seal is corrupt."""
    populate(tmp_path)
    await seal(tmp_path / "prod" / "data")
    mpath = tmp_path / "prod" / "data" / MANIFEST_NAME
    lines = mpath.read_text().splitlines()
    mpath.write_text("\n".join(lines[:-1]) + "\n")
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.FAILED
    assert "manifest_corrupt" in codes(result)


def _bitflip_high(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] |= 0x80  # an ASCII byte becomes invalid UTF-8: realistic bit rot of a text file
    return bytes(out)


def _seal_damage(kind: str, text: bytes) -> bytes:
    head, _, body = text.partition(b"\n")
    doc = json.loads(head)
    if kind == "bitflip_header":
        return _bitflip_high(text, head.index(b"sealed_at"))
    if kind == "bitflip_entry":
        return _bitflip_high(text, len(head) + 1 + body.index(b"sha256"))
    if kind == "deep_header":
        return b"[" * 100_000 + b"]" * 100_000 + b"\n" + body
    if kind == "huge_int_entry":
        first, _, rest = body.partition(b"\n")
        return head + b"\n" + first.replace(b'"size": ', b'"size": ' + b"9" * 5000 + b"") + b"\n" + rest
    if kind in ("sealed_at_ms", "sealed_at_nan", "sealed_at_inf", "sealed_at_zero"):
        doc["sealed_at"] = {"sealed_at_ms": doc["sealed_at"] * 1000, "sealed_at_nan": float("nan"),
                            "sealed_at_inf": float("inf"), "sealed_at_zero": 0}[kind]
        return json.dumps(doc).encode() + b"\n" + body
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["bitflip_header", "bitflip_entry", "deep_header", "huge_int_entry",
                                  "sealed_at_ms", "sealed_at_nan", "sealed_at_inf", "sealed_at_zero"])
async def test_damaged_or_implausible_seal_fails_as_corrupt(tmp_path: Path, kind: str) -> None:
    """A seal is untrusted input: a flipped bit (invalid UTF-8), nesting past the parser's stack, an integer past
    Python's digit limit, or a seal time that is no time or lies in the future (milliseconds written as seconds)
    is a corrupt seal - ``failed`` with manifest_corrupt and every copy still reported - never a crash of the
    validator (``internal_error``) and never an RPO that can no longer be exceeded."""
    populate(tmp_path)
    await seal(tmp_path / "prod" / "data")
    mpath = tmp_path / "prod" / "data" / MANIFEST_NAME
    mpath.write_bytes(_seal_damage(kind, mpath.read_bytes()))
    result = await run_replica(tmp_path, basic_config(tmp_path))
    assert result.outcome == Outcome.FAILED, result.findings
    assert "manifest_corrupt" in codes(result) and "internal_error" not in codes(result)
    assert {c.copy for c in result.copies} >= {"copy1", "copy2"}
    assert result.recovery_point is None or result.recovery_point < time.time() + 60


async def test_configured_manifest_missing_fails(tmp_path: Path) -> None:
    """A configured seal that does not exist: the recovery point was never sealed."""
    populate(tmp_path)
    result = await run_replica(tmp_path, basic_config(tmp_path, manifest="SEAL.jsonl"))
    assert result.outcome == Outcome.FAILED
    assert "manifest_missing" in codes(result)


async def test_size_only_mode_does_not_hash(tmp_path: Path) -> None:
    """verify_content: false compares sizes only (documented trade-off): same-size damage passes."""
    files = populate(tmp_path)
    p = tmp_path / "copy1" / "data" / sorted(files)[0]
    data = bytearray(p.read_bytes())
    data[5] ^= 1
    p.write_bytes(bytes(data))
    cfg = basic_config(tmp_path, validator={"kind": "replica", "verify_content": False})
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.OK
    assert copy_report(result, "copy1").bytes_verified == 0


async def test_many_files_one_missing_is_found(tmp_path: Path) -> None:
    """10k files in nested directories, one missing deep inside: found by the sorted merge."""
    files = {f"d{i % 7}/e{i % 11}/f{i:05d}": str(i).encode() for i in range(10_000)}
    populate(tmp_path, copies=1, files=files)
    victim = sorted(files)[5000]
    (tmp_path / "copy1" / "data" / victim).unlink()
    cfg = basic_config(tmp_path, copies=1)
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert [f.subject for f in result.findings if f.code == "missing_file"] == [f"copy1:{victim}"]
    assert copy_report(result, "copy1").objects["verified"] == 9_999


async def test_findings_are_capped_per_copy(tmp_path: Path) -> None:
    """Thousands of missing files give a bounded number of findings; counts stay exact."""
    files = {f"f{i:04d}": b"x" for i in range(300)}
    populate(tmp_path, copies=1, files=files)
    for rel in sorted(files)[:250]:
        (tmp_path / "copy1" / "data" / rel).unlink()
    result = await run_replica(tmp_path, basic_config(tmp_path, copies=1))
    assert len([f for f in result.findings if f.code == "missing_file"]) == 10
    assert copy_report(result, "copy1").objects["missing"] == 250


async def test_timeout_outcome(tmp_path: Path) -> None:
    """A run longer than its timeout ends as `timeout`, not failed or error."""
    populate(tmp_path, files={f"f{i}": os.urandom(1 << 20) for i in range(40)})
    cfg = basic_config(tmp_path, validator={"kind": "replica", "timeout": "1ms"})
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.TIMEOUT


async def test_cancellation_is_recorded_then_reraised(tmp_path: Path) -> None:
    """Cancelling a run records a `cancelled` result in the store and re-raises CancelledError."""
    populate(tmp_path, files={f"f{i}": os.urandom(1 << 20) for i in range(60)})
    cfg_dict = basic_config(tmp_path)
    cfg = parse_config(yaml.safe_dump(cfg_dict), source=str(tmp_path / "drwatch.yaml"))
    async with open_runner(cfg, tmp_path / "sbx") as runner:
        task = asyncio.create_task(runner.execute("data", cfg.assets["data"].validators[0]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        runner.close()
        history = await runner.store.history("data")
        assert [r.outcome for r in history] == [Outcome.CANCELLED]


def test_walk_is_in_string_order(tmp_path: Path) -> None:
    """Listings come in plain string order of paths ('a.txt' before 'a/b'), as S3 lists keys."""
    tree = {"a.txt": b"1", "a/b": b"2", "a-b": b"3", "b": b"4", "a/a/z": b"5", "a0": b"6", "a/b.c/d": b"7"}
    write_tree(tmp_path, tree)
    assert [e.relpath for e in walk_sorted(tmp_path)] == sorted(tree)


def test_media_observed_from_filesystem_type(tmp_path: Path) -> None:
    """Media comes from the filesystem type in mountinfo (statfs), mapped to a media class."""
    st = os.stat(tmp_path)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"36 25 {os.major(st.st_dev)}:{os.minor(st.st_dev)} / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        f"37 36 {os.major(st.st_dev)}:{os.minor(st.st_dev)} / {tmp_path} rw - nfs4 server:/export rw\n"
    )
    assert filesystem_type(tmp_path, str(mountinfo)) == "nfs4"
    assert media_class("nfs4") == "network"
    assert media_class("ext4") == "disk"
    assert media_class("ltfs") == "tape"
    assert media_class("overlay") is None


async def test_media_contradiction_is_reported(tmp_path: Path) -> None:
    """A declared media that the observed filesystem contradicts is a finding; observed media wins."""
    populate(tmp_path, files=sample_files(3))
    cfg = basic_config(tmp_path)
    cfg["locations"]["copy1"]["media"] = "tape"
    result = await run_replica(tmp_path, cfg)
    observed = media_class(filesystem_type(tmp_path))
    if observed is None:  # an overlay/unknown filesystem: the declaration stands
        assert copy_report(result, "copy1").media == "tape"
    else:
        assert "media_contradiction" in codes(result)
        assert copy_report(result, "copy1").media == observed


async def test_bytes_verified_counts_only_matching_content(tmp_path: Path) -> None:
    """A copy with one corrupted file reports the bytes of its good files as verified, not the bad one's."""
    files = populate(tmp_path, copies=1)
    victim = sorted(files)[0]
    p = tmp_path / "copy1" / "data" / victim
    data = bytearray(p.read_bytes())
    data[0] ^= 1
    p.write_bytes(bytes(data))
    result = await run_replica(tmp_path, basic_config(tmp_path, copies=1))
    good = sum(len(v) for k, v in files.items() if k != victim)
    assert copy_report(result, "copy1").bytes_verified == good


# Root without the capabilities that let it read any file: what a backup job running as a normal user sees.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
          "--inh-caps=-dac_override,-dac_read_search", "--"]


def check_unprivileged(config: Path) -> dict[str, Any]:
    """`drwatch check --output json` where mode 000 means unreadable (as root: with CAP_DAC_* dropped)."""
    prefix = NO_DAC if os.geteuid() == 0 else []
    assert not prefix or shutil.which("setpriv"), "needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE"
    proc = subprocess.run([*prefix, *drwatch_cmd("check", "--config", str(config), "--output", "json")],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    [res] = json.loads(proc.stdout)["results"]
    return dict(res)


def check_denied(path: Path, config: Path) -> dict[str, Any]:
    """``check_unprivileged`` while ``path`` has mode 000 (its mode restored afterwards, so tmp_path can be
    removed)."""
    mode = path.stat().st_mode & 0o7777
    path.chmod(0)
    try:
        return check_unprivileged(config)
    finally:
        path.chmod(mode)


def split_files() -> dict[str, bytes]:
    return {f"{d}/part-{i:05d}.csv": f"{d},{i}\n".encode() * 50 for d in ("train", "validation") for i in range(5)}


def json_subjects(res: dict[str, Any], code: str) -> list[str]:
    return sorted(f["subject"] for f in res["findings"] if f["code"] == code)


def json_states(res: dict[str, Any]) -> dict[str, str]:
    return {c["copy"]: c["state"] for c in res["copies"]}


@pytest.mark.parametrize("sealed", [False, True])
@pytest.mark.parametrize("also_missing", [True, False])
def test_unreadable_directory_is_could_not_check_and_the_rest_is_still_proven(
        tmp_path: Path, sealed: bool, also_missing: bool) -> None:
    """A copy whose train/ cannot be listed (mode 000): its files are "could not check" (one `unreadable`
    finding naming the directory, never missing_file), while the rest of the copy is still proven: a file
    missing from validation/ fails the copy and the run; without it the run is only an error."""
    populate(tmp_path, copies=1, files=split_files())
    if sealed:
        asyncio.run(seal(tmp_path / "prod" / "data"))
    if also_missing:
        (tmp_path / "copy1" / "data" / "validation" / "part-00003.csv").unlink()
    bad = tmp_path / "copy1" / "data" / "train"
    res = check_denied(bad, write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, copies=1)))
    assert json_subjects(res, "unreadable") == ["copy1:train/"], res["findings"]
    copy1 = next(c for c in res["copies"] if c["copy"] == "copy1")
    assert copy1["objects"]["verified"] == 5 - also_missing
    if also_missing:
        assert res["outcome"] == "failed", res["findings"]
        assert json_subjects(res, "missing_file") == ["copy1:validation/part-00003.csv"]
        assert json_states(res) == {"production": "verified", "copy1": "failed"}
        assert res["figures"]["objects_missing"] == 1
    else:
        assert res["outcome"] == "error", res["findings"]
        assert "missing_file" not in {f["code"] for f in res["findings"]}
        assert json_states(res) == {"production": "verified", "copy1": "error"}


def test_unreadable_production_directory_without_seal_is_an_error(tmp_path: Path) -> None:
    """Without a seal production is the reference: a directory of it that cannot be listed leaves keys that
    cannot be referenced, so the run is an error (permission_denied), never files "missing" from the copies."""
    populate(tmp_path, copies=1, files=split_files())
    bad = tmp_path / "prod" / "data" / "train"
    res = check_denied(bad, write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, copies=1)))
    assert res["outcome"] == "error", res["findings"]
    assert [f["code"] for f in res["findings"]] == ["permission_denied"]


@pytest.mark.parametrize("sealed", [False, True])
def test_unreadable_production_root_is_an_error_not_a_crash(tmp_path: Path, sealed: bool) -> None:
    """Production's own directory cannot be searched (mode 000): looking for its seal raised PermissionError
    (``Path.is_file`` raises on EACCES) and the validator crashed (internal_error). It is "could not check":
    an error naming the permission problem, never failed, never a crash."""
    populate(tmp_path, copies=1, files=split_files())
    if sealed:
        asyncio.run(seal(tmp_path / "prod" / "data"))
    bad = tmp_path / "prod" / "data"
    res = check_denied(bad, write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, copies=1)))
    codes = [f["code"] for f in res["findings"]]
    assert res["outcome"] == "error", res["findings"]
    assert "internal_error" not in codes and "permission_denied" in codes, res["findings"]


def test_ledger_keeps_the_rows_of_a_directory_that_could_not_be_listed(tmp_path: Path) -> None:
    """Under a verification policy, objects under a directory that cannot be listed this run are not "gone":
    their ledger rows (and so their read history) stay, and the rest is proven as usual."""
    populate(tmp_path, copies=1, files=split_files())
    cfg = basic_config(tmp_path, copies=1)
    cfg["assets"]["data"]["verification"] = {"read_every": "30d", "budget": {"egress_bytes_per_day": "1GB"}}
    config = write_config(tmp_path / "drwatch.yaml", cfg)

    def copy_rows() -> list[str]:
        async def go() -> list[str]:
            store = open_store(parse_config(config.read_text(), str(config)))
            await store.open()
            try:
                return [e.key for e in await store.ledger_page("data", "copy1", "", 1000)]
            finally:
                await store.close()
        return asyncio.run(go())

    assert check_unprivileged(config)["outcome"] == "ok"
    before = copy_rows()
    assert len(before) == 10
    bad = tmp_path / "copy1" / "data" / "train"
    res = check_denied(bad, config)
    assert res["outcome"] == "error" and json_subjects(res, "unreadable") == ["copy1:train/"]
    assert copy_rows() == before
