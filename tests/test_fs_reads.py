"""Reading filesystem copies: small files hashed in batches, unsealed copies compared byte for byte, and which
side an unreadable file is blamed on (production: could not check; the copy: that object could not be checked)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

from drwatch.storage.filesystem import MANIFEST_NAME
from drwatch.storage.hashing import CHUNK, SMALL, HashCancelled, HashPool, ReferenceUnreadable, compare_files
from tests.support.helpers import basic_config, populate, run_cli, write_config
from tests.test_replica import check_denied, check_unprivileged, json_states, json_subjects


def _tree(root: Path, n: int, size: int = 300) -> list[Path]:
    paths = []
    for i in range(n):
        p = root / f"d{i % 7}" / f"f{i:05d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(hashlib.sha256(str(i).encode()).digest() * (size // 32 + 1))
        paths.append(p)
    return paths


def test_small_files_are_hashed_in_batches_and_agree_with_hashlib(tmp_path: Path) -> None:
    """300 small files hashed at once through a one-thread pool take far fewer thread hops than files (they
    are batched), a large file keeps its own call, and every digest and size is hashlib's."""
    paths = _tree(tmp_path, 300)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * CHUNK + 123))

    async def main() -> tuple[list[tuple[str, int]], int]:
        pool = HashPool(1)
        try:
            got = await asyncio.gather(*(pool.sha256(str(p), p.stat().st_size) for p in [*paths, big]))
            return list(got), pool.batches
        finally:
            pool.close()

    got, batches = asyncio.run(main())
    want = [(hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for p in [*paths, big]]
    assert got == want
    assert 300 // 64 <= batches <= 300 // 8, batches  # one executor call per batch, not per file


def test_compare_files_finds_every_kind_of_difference(tmp_path: Path) -> None:
    """Equal files compare equal; a flipped byte in the second chunk, a shorter or a longer copy do not; the
    bytes of the copy read are reported."""
    data = os.urandom(CHUNK + 5000)
    ref = tmp_path / "ref"
    ref.write_bytes(data)
    cases = {
        "same": data,
        "flipped": data[:CHUNK + 10] + bytes([data[CHUNK + 10] ^ 1]) + data[CHUNK + 11:],
        "short": data[:-1],
        "long": data + b"x",
        "chunk": data[:CHUNK],
    }
    results = {}
    for name, body in cases.items():
        (tmp_path / name).write_bytes(body)
        results[name] = compare_files(ref, tmp_path / name)
    assert results["same"] == (True, len(data))
    assert {name: same for name, (same, _n) in results.items()} == {
        "same": True, "flipped": False, "short": False, "long": False, "chunk": False}


def test_compare_files_blames_the_right_side(tmp_path: Path) -> None:
    """A copy's file that is gone raises FileNotFoundError (the copy's missing file); a reference that is gone
    raises ReferenceUnreadable (production's problem, never the copy's)."""
    (tmp_path / "a").write_bytes(b"1")
    with pytest.raises(FileNotFoundError):
        compare_files(tmp_path / "a", tmp_path / "gone")
    with pytest.raises(ReferenceUnreadable):
        compare_files(tmp_path / "gone", tmp_path / "a")


def test_a_closed_pool_abandons_queued_small_files(tmp_path: Path) -> None:
    """Once the pool is closed (shutdown), batched reads end with HashCancelled, never a result."""
    paths = _tree(tmp_path, 20)

    async def main() -> list[BaseException | tuple[str, int]]:
        pool = HashPool(1)
        pool.close()
        return await asyncio.gather(*(pool.sha256(str(p), 300) for p in paths), return_exceptions=True)

    assert all(isinstance(r, HashCancelled) for r in asyncio.run(main()))


def test_cancelled_callers_leave_the_batch_to_the_others(tmp_path: Path) -> None:
    """Callers cancelled while their small files wait in the queue are skipped; the others get their digests."""
    paths = _tree(tmp_path, 200)

    async def main() -> list[tuple[str, int]]:
        pool = HashPool(1)
        try:
            tasks = [asyncio.ensure_future(pool.sha256(str(p), p.stat().st_size)) for p in paths]
            await asyncio.sleep(0)
            for t in tasks[100:]:
                t.cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(d, asyncio.CancelledError) for d in done[100:])
            return [d for d in done[:100] if isinstance(d, tuple)]
        finally:
            pool.close()

    got = asyncio.run(main())
    assert got == [(hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for p in paths[:100]]


def _files(big: bool) -> dict[str, bytes]:
    size = SMALL + 1000 if big else 200
    return {f"part-{i}.bin": bytes([i]) * size for i in range(4)}


@pytest.mark.parametrize("big", [False, True], ids=["batched", "single"])
def test_unsealed_compare_is_read_evidence_and_finds_corruption(tmp_path: Path, big: bool) -> None:
    """Without a seal, one filesystem copy is compared with production byte for byte: clean files are proven
    by a read (evidence "read", their bytes verified), a same-size change is a content mismatch."""
    populate(tmp_path, copies=1, files=_files(big))
    cfg = write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, copies=1))
    res = check_unprivileged(cfg)
    copy1 = next(c for c in res["copies"] if c["copy"] == "copy1")
    assert res["outcome"] == "ok", res["findings"]
    assert copy1["evidence"] == {"read": 4}
    assert res["figures"]["bytes_verified"] == sum(len(b) for b in _files(big).values())

    bad = tmp_path / "copy1" / "data" / "part-2.bin"
    body = bytearray(bad.read_bytes())
    body[-1] ^= 0xFF
    bad.write_bytes(bytes(body))
    res = check_unprivileged(cfg)
    assert res["outcome"] == "failed", res["findings"]
    assert json_subjects(res, "content_mismatch") == ["copy1:part-2.bin"]


@pytest.mark.parametrize("big", [False, True], ids=["batched", "single"])
def test_unreadable_production_file_is_could_not_check(tmp_path: Path, big: bool) -> None:
    """A production file that cannot be read (mode 000, capabilities dropped) while its copy is compared with it
    makes the run an error — never a mismatch or missing file of the copy."""
    populate(tmp_path, copies=1, files=_files(big))
    bad = tmp_path / "prod" / "data" / "part-1.bin"
    res = check_denied(bad, write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, copies=1)))
    codes = {f["code"] for f in res["findings"]}
    assert res["outcome"] == "error", res["findings"]
    assert not codes & {"content_mismatch", "missing_file"}, res["findings"]
    assert "unreadable" in codes, res["findings"]


@pytest.mark.parametrize("big", [False, True], ids=["batched", "single"])
def test_unreadable_copy_file_is_an_error_of_that_object(tmp_path: Path, big: bool) -> None:
    """A copy's file that cannot be read is that object's "could not check" (finding unreadable naming it); the
    other files are still proven; the run is an error, not failed."""
    populate(tmp_path, copies=1, files=_files(big))
    bad = tmp_path / "copy1" / "data" / "part-3.bin"
    res = check_denied(bad, write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, copies=1)))
    assert res["outcome"] == "error", res["findings"]
    assert json_subjects(res, "unreadable") == ["copy1:part-3.bin"]
    assert json_states(res) == {"production": "verified", "copy1": "error"}
    copy1 = next(c for c in res["copies"] if c["copy"] == "copy1")
    assert copy1["objects"]["verified"] == 3


def test_blake3_seal_from_the_cli_is_verified_with_blake3(tmp_path: Path) -> None:
    """`drwatch seal --algorithm blake3` records BLAKE3 digests (header and file lines say so); replica verifies
    production and the copy against them: clean passes, a same-size change in the copy is a content_mismatch."""
    import blake3

    files = populate(tmp_path, copies=1, files=_files(False) | {"big.bin": os.urandom(SMALL + 77)})
    manifest = tmp_path / "prod" / "data" / MANIFEST_NAME
    proc = run_cli("seal", "--location-path", str(tmp_path / "prod" / "data"), "--algorithm", "blake3")
    assert proc.returncode == 0, proc.stderr
    head, *lines = manifest.read_text().splitlines()
    assert json.loads(head)["algorithm"] == "blake3"
    recorded = {rec["path"]: rec["blake3"] for rec in map(json.loads, lines) if "path" in rec}
    assert recorded == {k: blake3.blake3(v).hexdigest() for k, v in files.items()}

    cfg = write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, copies=1))
    res = check_unprivileged(cfg)
    assert res["outcome"] == "ok", res["findings"]
    assert json_states(res) == {"production": "verified", "copy1": "verified"}
    flip = tmp_path / "copy1" / "data" / "big.bin"
    body = bytearray(flip.read_bytes())
    body[SMALL] ^= 1
    flip.write_bytes(bytes(body))
    res = check_unprivileged(cfg)
    assert res["outcome"] == "failed", res["findings"]
    assert json_subjects(res, "content_mismatch") == ["copy1:big.bin"]


def test_a_seal_of_an_unknown_algorithm_is_corrupt(tmp_path: Path) -> None:
    """A seal whose header names an algorithm drwatch does not know is a bad seal (manifest_corrupt), never read
    as sha256."""
    populate(tmp_path, copies=1, files=_files(False))
    manifest = tmp_path / "prod" / "data" / MANIFEST_NAME
    assert run_cli("seal", "--location-path", str(tmp_path / "prod" / "data")).returncode == 0
    head, rest = manifest.read_text().split("\n", 1)
    manifest.write_text(head.replace('"algorithm": "sha256"', '"algorithm": "md5"') + "\n" + rest)
    res = check_unprivileged(write_config(tmp_path / "drwatch.yaml", basic_config(tmp_path, copies=1)))
    assert res["outcome"] == "failed"
    assert json_subjects(res, "manifest_corrupt") == ["manifest"]
