"""The `replica` validator on real S3 servers: evidence, failures, Object Lock, region, independence, faults.

moto servers stand for separate providers/regions (one per fixture), the session's Ceph RGW for exact
Object Lock semantics. Faults are real: objects deleted or overwritten through the S3 API, servers stopped,
wrong keys, buckets that do not exist. Every run goes through a real Runner and its S3 client pool, and
every test that can also proves the run wrote nothing to any bucket.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drwatch.core.model import CopyState, Outcome, Result
from drwatch.formats.sealing import seal_directory
from drwatch.state.compliance import RuleState
from drwatch.storage.config import S3LocationConfig
from drwatch.storage.filesystem import MANIFEST_NAME
from drwatch.storage.s3 import S3Pool
from tests.support.helpers import after_this_second, backdate, sample_files, write_tree
from tests.support.s3helpers import (
    Locations,
    Server,
    bucket,
    codes,
    config,
    fast_upload,
    report,
    rules,
    run,
    subjects,
    until,
    upload,
    versions,
)
from tests.support.s3helpers import client as s3
from tests.support.s3proxy import RecordingProxy
from tests.support.s3servers import CephRGW, MotoServer

PASS, FAIL, UNKNOWN = RuleState.PASS, RuleState.FAIL, RuleState.UNKNOWN
# Rules sized for one production and one copy, so a single copy decides them.
ONE_COPY = {"copies": 2, "media": 1, "offsite": 1, "immutable": 1}
SHA256 = {"ChecksumAlgorithm": "SHA256"}
LOCK_RULES = {"none", "governance", "compliance", "legal_hold"}


@pytest.fixture(scope="module")
def moto_b() -> Iterator[MotoServer]:
    """A second provider in us-east-1 (the production region): a different site, the same region."""
    with MotoServer("us-east-1") as server:
        yield server


@pytest.fixture(scope="module")
def moto_eu() -> Iterator[MotoServer]:
    """A provider in eu-west-1; its buckets are created with that LocationConstraint."""
    with MotoServer("eu-west-1") as server:
        yield server


@pytest.fixture
def files() -> dict[str, bytes]:
    return sample_files(6, 2048)


class Unchanged:
    """Records every version of some buckets; ``check()`` asserts that none was added, changed or removed."""

    def __init__(self) -> None:
        self.before: dict[tuple[str, str], tuple[Server, list[tuple[Any, ...]]]] = {}

    def watch(self, server: Server, name: str) -> str:
        self.before[(server.endpoint_url, name)] = (server, versions(server, name))
        return name

    def check(self) -> None:
        for (_url, name), (server, before) in self.before.items():
            assert versions(server, name) == before, f"drwatch changed bucket {name}"


@pytest.fixture
def unchanged() -> Iterator[Unchanged]:
    """Buckets registered with ``unchanged.watch`` must hold exactly the same versions after the test."""
    guard = Unchanged()
    yield guard
    guard.check()


def moto_s3(locs: Locations, name: str, server: MotoServer, bucket_name: str, *, site: str,
            **extra: Any) -> str:
    """A moto location with its own access key (moto accepts any), so no two locations share one."""
    extra.setdefault("access_key", f"AKID{name.upper()}")
    return locs.s3(name, server, bucket_name, site=site, **extra)


def flip(data: bytes, at: int = 100) -> bytes:
    """The same bytes with one byte changed (same size, different content)."""
    out = bytearray(data)
    out[at] ^= 0xFF
    return bytes(out)


def rgw_pair(rgw: CephRGW, files: dict[str, bytes], locs: Locations, unchanged: Unchanged) -> None:
    """Production and copy both on the RGW, identical uploads (no checksums stored: ETag evidence)."""
    prod, copy = bucket(rgw, "prod"), bucket(rgw, "copy")
    upload(rgw, prod, files)
    upload(rgw, copy, files)
    locs.s3("prod", rgw, unchanged.watch(rgw, prod), site="dc-a")
    locs.s3("vault", rgw, unchanged.watch(rgw, copy), site="dc-b")


# ----------------------------------------------------------------------------- evidence: pass


async def test_identical_copies_pass_on_full_object_checksums(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, files: dict[str, bytes], locs: Locations,
        unchanged: Unchanged) -> None:
    """Both sides store SHA256 checksums (the listings name the algorithm) and equal single-part ETags: every
    object is proven by its ETag from the listings, with no read and no HEAD on either server (a checksum
    could only agree with equal MD5s and the copy bucket has no Object Lock to read), ok."""
    prod, copy = bucket(moto, "prod"), bucket(moto_eu, "copy", region="eu-west-1")
    upload(moto, prod, files, **SHA256)
    upload(moto_eu, copy, files, **SHA256)
    moto_s3(locs, "prod", moto, unchanged.watch(moto, prod), site="dc-a")
    moto_s3(locs, "vault", moto_eu, unchanged.watch(moto_eu, copy), site="dc-b", region="eu-west-1")
    logged = [len(server.log_path.read_bytes()) for server in (moto, moto_eu)]
    result, _ = await run(tmp_path, config(tmp_path, locs, ("prod", "data"), [("vault", "data")]))
    object_heads = [server.log_path.read_bytes()[at:].count(f'"HEAD /{name}/'.encode())
                    for server, name, at in ((moto, prod, logged[0]), (moto_eu, copy, logged[1]))]
    assert object_heads == [0, 0]

    assert result.outcome == Outcome.OK, result.findings
    assert codes(result) == {"bucket_not_versioned", "objects_not_locked"}  # lock posture only: warnings
    vault = report(result, "vault")
    assert vault.state == CopyState.VERIFIED
    assert vault.evidence == {"etag": len(files)}
    assert vault.objects == {"verified": len(files), "missing": 0, "mismatch": 0, "extra": 0}
    assert vault.bytes_verified == sum(map(len, files.values()))
    assert (vault.region, vault.region_observed, vault.versioning) == ("eu-west-1", True, "Disabled")
    assert (vault.media, vault.media_observed) == ("object-storage", True)
    assert vault.lock == {"none": len(files)} and vault.immutable is False
    assert vault.dependencies == ()
    assert vault.recovery_point == result.recovery_point is not None
    assert report(result, "production").region == "us-east-1"
    assert result.figures["objects_reference"] == len(files)


async def test_identical_copies_pass_on_etags_without_checksums(
        tmp_path: Path, rgw: CephRGW, files: dict[str, bytes], locs: Locations, unchanged: Unchanged) -> None:
    """S3 to S3 on RGW (no flexible checksums stored): equal ETags prove each object, nothing is read."""
    rgw_pair(rgw, files, locs, unchanged)
    result, _ = await run(tmp_path, config(tmp_path, locs, ("prod", "data"), [("vault", "data")]))

    assert result.outcome == Outcome.OK, result.findings
    vault = report(result, "vault")
    assert vault.evidence == {"etag": len(files)}
    assert vault.objects["verified"] == len(files)
    assert (vault.region, vault.region_observed) == ("default", True)  # RGW answers its zonegroup
    # One RGW user for both buckets: the copy is reachable with production's key.
    assert vault.dependencies == ("shared_credentials",)
    assert subjects(result, "shared_credentials") == ["vault"]


async def test_filesystem_production_vs_s3_copy_passes_by_reading(
        tmp_path: Path, rgw: CephRGW, files: dict[str, bytes], locs: Locations, unchanged: Unchanged) -> None:
    """No provider evidence across kinds: each copy object is read and hashed against the production file."""
    write_tree(tmp_path / "prod" / "data", files)
    copy = bucket(rgw, "copy")
    upload(rgw, copy, files)
    locs.fs("prod", tmp_path / "prod", site="dc-a", region="eu-central-1")
    locs.s3("vault", rgw, unchanged.watch(rgw, copy), site="dc-b")
    result, _ = await run(tmp_path, config(tmp_path, locs, ("prod", "data"), [("vault", "data")]))

    assert result.outcome == Outcome.OK, result.findings
    vault = report(result, "vault")
    assert vault.evidence == {"read": len(files)}
    assert vault.bytes_verified == sum(map(len, files.values()))
    assert vault.dependencies == ()


async def test_seal_sha256_is_compared_with_the_copys_stored_checksum(
        tmp_path: Path, moto_eu: MotoServer, files: dict[str, bytes], locs: Locations,
        unchanged: Unchanged) -> None:
    """With a seal, a copy's stored SHA256 is checked against the seal's sha256; a changed one fails."""
    backdate(write_tree(tmp_path / "prod" / "data", files))  # production predates its backup
    await seal_directory(tmp_path / "prod" / "data", out_path=tmp_path / "prod" / "data" / MANIFEST_NAME)
    copy = bucket(moto_eu, "copy", region="eu-west-1")
    victim = sorted(files)[1]
    upload(moto_eu, copy, {**files, victim: flip(files[victim])}, **SHA256)
    locs.fs("prod", tmp_path / "prod", site="dc-a")
    moto_s3(locs, "vault", moto_eu, unchanged.watch(moto_eu, copy), site="dc-b")
    result, _ = await run(tmp_path, config(tmp_path, locs, ("prod", "data"), [("vault", "data")]))

    assert result.outcome == Outcome.FAILED
    assert subjects(result, "content_mismatch") == [f"vault:{victim}"]
    assert "(checksum)" in next(f.message for f in result.findings if f.code == "content_mismatch")
    assert report(result, "vault").evidence == {"checksum": len(files) - 1}


async def test_same_algorithm_checksums_are_compared_for_every_copy(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, files: dict[str, bytes], locs: Locations) -> None:
    """CRC32 on production and on two copies, equal single-part ETags: both copies are proven from the
    listings (equal ETags; a CRC32 could only agree), without a HEAD."""
    prod = bucket(moto, "prod")
    upload(moto, prod, files, ChecksumAlgorithm="CRC32")
    moto_s3(locs, "prod", moto, prod, site="dc-a")
    for label in ("one", "two"):
        name = bucket(moto_eu, label, region="eu-west-1")
        upload(moto_eu, name, files, ChecksumAlgorithm="CRC32")
        moto_s3(locs, label, moto_eu, name, site="dc-b")
    result, _ = await run(tmp_path, config(tmp_path, locs, ("prod", "data"), [("one", "data"), ("two", "data")]))

    assert result.outcome == Outcome.OK, result.findings
    assert report(result, "one").evidence == report(result, "two").evidence == {"etag": len(files)}


async def test_different_etags_of_equal_content_are_settled_by_reading(
        tmp_path: Path, rgw: CephRGW, locs: Locations) -> None:
    """A copy uploaded in parts has a multipart ETag unlike production's: not a mismatch, a read proves it."""
    big = os.urandom(6 * 1024 * 1024)
    files = {"big.bin": big, "small.bin": b"small object"}
    prod, copy = bucket(rgw, "prod"), bucket(rgw, "copy")
    upload(rgw, prod, files)
    upload(rgw, copy, {"small.bin": files["small.bin"]})
    rgw_s3 = s3(rgw)
    mpu = rgw_s3.create_multipart_upload(Bucket=copy, Key="data/big.bin")
    parts = []
    for number, chunk in enumerate((big[:5 * 1024 * 1024], big[5 * 1024 * 1024:]), start=1):
        etag = rgw_s3.upload_part(Bucket=copy, Key="data/big.bin", UploadId=mpu["UploadId"], PartNumber=number,
                                  Body=chunk)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    rgw_s3.complete_multipart_upload(Bucket=copy, Key="data/big.bin", UploadId=mpu["UploadId"],
                                     MultipartUpload={"Parts": parts})
    assert rgw_s3.head_object(Bucket=copy, Key="data/big.bin")["ETag"].endswith('-2"')
    locs.s3("prod", rgw, prod, site="dc-a")
    locs.s3("vault", rgw, copy, site="dc-b")
    result, _ = await run(tmp_path, config(tmp_path, locs, ("prod", "data"), [("vault", "data")]))

    assert result.outcome == Outcome.OK, result.findings
    assert report(result, "vault").evidence == {"etag": 1, "read": 1}
    assert report(result, "vault").bytes_verified >= len(big)


# ----------------------------------------------------------------------------- damage: failed


async def test_object_deleted_from_a_copy_fails(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, files: dict[str, bytes], locs: Locations) -> None:
    """An object deleted from a (versioned) copy bucket — only a delete marker left — is missing: failed."""
    prod, copy = bucket(moto, "prod"), bucket(moto_eu, "copy", region="eu-west-1", versioned=True)
    upload(moto, prod, files, **SHA256)
    after_this_second()  # the backup is taken after production was written (S3 times have whole seconds)
    upload(moto_eu, copy, files, **SHA256)
    victim = sorted(files)[2]
    s3(moto_eu).delete_object(Bucket=copy, Key=f"data/{victim}")
    moto_s3(locs, "prod", moto, prod, site="dc-a")
    moto_s3(locs, "vault", moto_eu, copy, site="dc-b")
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("vault", "data")], compliance=ONE_COPY)
    result, cfg = await run(tmp_path, cfg_dict)

    assert result.outcome == Outcome.FAILED
    assert subjects(result, "missing_file") == [f"vault:{victim}"]
    vault = report(result, "vault")
    assert vault.state == CopyState.FAILED
    assert vault.objects == {"verified": len(files) - 1, "missing": 1, "mismatch": 0, "extra": 0}
    assert vault.recovery_point is None
    assert rules(cfg, result)["copies"] == FAIL


async def test_same_size_change_is_caught_by_checksums(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, files: dict[str, bytes], locs: Locations) -> None:
    """A copy object overwritten with different bytes of the same size: its ETag differs from production's, so
    both are HEADed and the SHA256 values differ, failed (the others are proven by equal ETags)."""
    prod, copy = bucket(moto, "prod"), bucket(moto_eu, "copy", region="eu-west-1")
    upload(moto, prod, files, **SHA256)
    after_this_second()  # the backup is taken after production was written (S3 times have whole seconds)
    upload(moto_eu, copy, files, **SHA256)
    victim = sorted(files)[-1]
    upload(moto_eu, copy, {victim: flip(files[victim])}, **SHA256)
    moto_s3(locs, "prod", moto, prod, site="dc-a")
    moto_s3(locs, "vault", moto_eu, copy, site="dc-b")
    result, _ = await run(tmp_path, config(tmp_path, locs, ("prod", "data"), [("vault", "data")]))

    assert result.outcome == Outcome.FAILED
    assert subjects(result, "content_mismatch") == [f"vault:{victim}"]
    assert "(checksum)" in next(f.message for f in result.findings if f.code == "content_mismatch")
    vault = report(result, "vault")
    assert vault.state == CopyState.FAILED
    assert vault.objects["mismatch"] == 1
    assert vault.evidence == {"etag": len(files) - 1}


@pytest.mark.parametrize("changed", ["copy", "production"])
async def test_same_size_change_is_caught_on_rgw_by_reading(
        tmp_path: Path, rgw: CephRGW, files: dict[str, bytes], locs: Locations, changed: str) -> None:
    """RGW stores no checksums: a same-size change on either side gives unequal ETags, a read proves it. A
    changed copy object is corrupt (failed); production changed after the copy was taken (a later
    LastModified) leaves the copy behind, holding an older recovery point (`copy_behind`, within the RPO)."""
    prod, copy = bucket(rgw, "prod"), bucket(rgw, "copy")
    upload(rgw, prod, files)
    upload(rgw, copy, files)
    victim = sorted(files)[0]
    await asyncio.sleep(2.1)  # LastModified (whole seconds) of the changed side more than a second later
    upload(rgw, copy if changed == "copy" else prod, {victim: flip(files[victim], at=7)})
    locs.s3("prod", rgw, prod, site="dc-a")
    locs.s3("vault", rgw, copy, site="dc-b")
    result, _ = await run(tmp_path, config(tmp_path, locs, ("prod", "data"), [("vault", "data")]))

    code = "content_mismatch" if changed == "copy" else "copy_behind"
    assert result.outcome == (Outcome.FAILED if changed == "copy" else Outcome.OK), result.findings
    assert [s for s in subjects(result, code) if ":" in s] == [f"vault:{victim}"]
    assert "(read)" in next(f.message for f in result.findings if f.code == code and ":" in f.subject)
    vault = report(result, "vault")
    assert vault.evidence == {"etag": len(files) - 1}
    assert vault.bytes_verified >= len(files[victim])  # the suspect object was really read


async def test_missing_bucket_is_a_missing_copy(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, files: dict[str, bytes], locs: Locations) -> None:
    """A copy bucket that does not exist is a missing copy (failed), not "could not check"."""
    prod = bucket(moto, "prod")
    upload(moto, prod, files)
    moto_s3(locs, "prod", moto, prod, site="dc-a")
    moto_s3(locs, "vault", moto_eu, "never-created-bucket", site="dc-b")
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("vault", "data")], compliance=ONE_COPY)
    result, cfg = await run(tmp_path, cfg_dict)

    assert result.outcome == Outcome.FAILED
    assert subjects(result, "copy_missing") == ["vault"]
    assert report(result, "vault").state == CopyState.FAILED
    assert rules(cfg, result)["copies"] == FAIL


async def test_ten_thousand_objects_one_missing_is_found(tmp_path: Path, rgw: CephRGW, locs: Locations) -> None:
    """10,000 objects of an S3 production bucket (ten listing pages) against a copy missing one deep in
    nested directories: exactly that one is reported; a sampled share of the others is read."""
    files = {f"d{i % 7}/e{i % 11}/f{i:05d}": b"%d" % i for i in range(10_000)}
    victim = sorted(files)[5_000]
    prod = bucket(rgw, "big")
    fast_upload(rgw, prod, files)
    write_tree(tmp_path / "copy" / "data", {k: v for k, v in files.items() if k != victim})
    locs.s3("prod", rgw, prod, site="dc-a")
    locs.fs("copy", tmp_path / "copy", site="dc-b")
    # The object count is under test, not hashing: one object in a hundred is read, the rest size-checked.
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("copy", "data")],
                      validators=[{"kind": "replica", "read_sample": 0.01}])
    result, _ = await run(tmp_path, cfg_dict)

    assert result.outcome == Outcome.FAILED
    assert subjects(result, "missing_file") == [f"copy:{victim}"]
    copy = report(result, "copy")
    assert copy.objects == {"verified": 9_999, "missing": 1, "mismatch": 0, "extra": 0}
    assert set(copy.evidence) == {"read", "size"} and sum(copy.evidence.values()) == 9_999
    assert result.figures["objects_reference"] == 10_000


# ----------------------------------------------------------------------------- Object Lock, per object

LOCK_CASES: dict[str, dict[str, Any]] = {
    "no-lock": {"put": {}, "finding": "objects_not_locked", "lock": "none"},
    "legal-hold-only": {"put": {"ObjectLockLegalHoldStatus": "ON"}, "finding": "objects_not_locked",
                        "lock": "legal_hold"},
    "governance": {"put": {"ObjectLockMode": "GOVERNANCE"}, "finding": "governance_lock", "lock": "governance"},
    "governance-allowed": {"put": {"ObjectLockMode": "GOVERNANCE"}, "finding": None, "lock": "governance",
                           "compliance": {"allow_governance": True}},
    "retention-expiring": {"put": {"ObjectLockMode": "COMPLIANCE"}, "finding": "retention_expiring",
                           "lock": "compliance", "short": 2},
    "compliance": {"put": {"ObjectLockMode": "COMPLIANCE"}, "finding": None, "lock": "compliance"},
    "unversioned": {"put": {}, "finding": "bucket_not_versioned", "lock": "none", "bucket": "plain"},
    "versioning-suspended": {"put": {}, "finding": "bucket_not_versioned", "lock": "none",
                             "bucket": "suspended"},
}


@pytest.mark.parametrize("case", list(LOCK_CASES))
async def test_object_lock_posture_decides_the_immutable_rule(
        tmp_path: Path, rgw: CephRGW, files: dict[str, bytes], locs: Locations, unchanged: Unchanged,
        case: str) -> None:
    """Immutable only if every object is COMPLIANCE-locked (GOVERNANCE if allowed) beyond the horizon,
    on a versioned bucket; each other posture fails the rule with its own finding (exact RGW semantics)."""
    spec = LOCK_CASES[case]
    kind = spec.get("bucket", "lock")
    name = bucket(rgw, "vault", lock=kind == "lock")
    rgw_s3 = s3(rgw)
    if kind == "suspended":
        rgw_s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        rgw_s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
    put = dict(spec["put"])
    if "ObjectLockMode" in put:
        put["ObjectLockRetainUntilDate"] = until(30)
    upload(rgw, name, files, **put)
    short_key = sorted(files)[3]
    if "short" in spec:  # one object of the recovery point is locked for less than the 7-day horizon
        upload(rgw, name, {short_key: files[short_key]}, ObjectLockMode="COMPLIANCE",
               ObjectLockRetainUntilDate=until(spec["short"]))
    write_tree(tmp_path / "prod" / "data", files)
    locs.fs("prod", tmp_path / "prod", site="dc-a", region="eu-central-1")
    locs.s3("vault", rgw, unchanged.watch(rgw, name), site="dc-b")
    compliance = {**ONE_COPY, "min_retention_remaining": "7d", **spec.get("compliance", {})}
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("vault", "data")], compliance=compliance)
    result, cfg = await run(tmp_path, cfg_dict)

    assert result.outcome == Outcome.OK, result.findings  # lock posture is a rule matter, not a bad copy
    vault = report(result, "vault")
    assert vault.state == CopyState.VERIFIED
    assert vault.lock == {spec["lock"]: len(files)}
    lock_findings = codes(result) & {"objects_not_locked", "governance_lock", "retention_expiring",
                                     "bucket_not_versioned"}
    expected = {spec["finding"]} if spec["finding"] else set()
    if kind != "lock":
        expected.add("objects_not_locked")  # an unversioned bucket cannot lock either
    assert lock_findings == expected
    assert vault.versioning == {"lock": "Enabled", "plain": "Disabled", "suspended": "Suspended"}[kind]
    if spec["lock"] in {"compliance", "governance"}:
        days = spec.get("short", 30)
        assert vault.retain_until_min == pytest.approx(time.time() + days * 86400, abs=120)
    else:
        assert vault.retain_until_min is None
    verdict = rules(cfg, result)
    assert verdict["immutable"] == (FAIL if spec["finding"] else PASS)
    assert vault.immutable is (spec["finding"] is None)
    assert (verdict["copies"], verdict["offsite"]) == (PASS, PASS)  # RGW "default" vs eu-central-1


async def test_compliance_locked_copy_on_moto_passes_immutable(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, files: dict[str, bytes], locs: Locations,
        unchanged: Unchanged) -> None:
    """moto: COMPLIANCE-locked objects (read per object from HEAD) in a versioned bucket pass immutable."""
    prod, copy = bucket(moto, "prod"), bucket(moto_eu, "vault", lock=True, region="eu-west-1")
    upload(moto, prod, files, **SHA256)
    upload(moto_eu, copy, files, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until(30), **SHA256)
    moto_s3(locs, "prod", moto, unchanged.watch(moto, prod), site="dc-a")
    moto_s3(locs, "vault", moto_eu, unchanged.watch(moto_eu, copy), site="dc-b", region="eu-west-1")
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("vault", "data")], compliance=ONE_COPY)
    result, cfg = await run(tmp_path, cfg_dict)

    assert result.outcome == Outcome.OK, result.findings
    vault = report(result, "vault")
    assert (vault.lock, vault.versioning, vault.immutable) == ({"compliance": len(files)}, "Enabled", True)
    assert vault.evidence == {"checksum": len(files)}
    assert rules(cfg, result) == {"copies": PASS, "media": PASS, "offsite": PASS, "immutable": PASS,
                                  "restore_errors": PASS}


# ----------------------------------------------------------------------------- region and independence


@pytest.mark.parametrize("declared_region", [None, "eu-west-1"])
async def test_offsite_copy_in_the_production_region_is_not_offsite(
        tmp_path: Path, moto: MotoServer, moto_b: MotoServer, files: dict[str, bytes], locs: Locations,
        declared_region: str | None) -> None:
    """A copy at another declared site whose bucket is observed in production's region fails off-site
    (site_contradiction); a declared region the bucket contradicts is reported and the observation wins."""
    prod, copy = bucket(moto, "prod"), bucket(moto_b, "copy")
    upload(moto, prod, files, **SHA256)
    upload(moto_b, copy, files, **SHA256)
    moto_s3(locs, "prod", moto, prod, site="dc-a")
    moto_s3(locs, "vault", moto_b, copy, site="dc-b", **({"region": declared_region} if declared_region else {}))
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("vault", "data")], compliance=ONE_COPY)
    result, cfg = await run(tmp_path, cfg_dict)

    assert result.outcome == Outcome.OK, result.findings
    assert subjects(result, "site_contradiction") == ["vault"]
    assert subjects(result, "region_contradiction") == (["vault"] if declared_region else [])
    vault = report(result, "vault")
    assert (vault.region, vault.region_observed, vault.site) == ("us-east-1", True, "dc-b")
    verdict = rules(cfg, result)
    assert verdict["offsite"] == FAIL
    assert verdict["copies"] == PASS


async def test_another_provider_in_the_same_region_is_offsite(
        tmp_path: Path, moto: MotoServer, moto_b: MotoServer, files: dict[str, bytes], locs: Locations) -> None:
    """Same region name at a different provider is a different failure domain: off-site, no contradiction."""
    prod, copy = bucket(moto, "prod"), bucket(moto_b, "copy")
    upload(moto, prod, files)
    upload(moto_b, copy, files)
    moto_s3(locs, "prod", moto, prod, site="dc-a")
    moto_s3(locs, "vault", moto_b, copy, site="dc-b", provider="wasabi")
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("vault", "data")], compliance=ONE_COPY)
    result, cfg = await run(tmp_path, cfg_dict)

    assert result.outcome == Outcome.OK, result.findings
    assert "site_contradiction" not in codes(result)
    assert (report(result, "vault").region, report(result, "vault").provider) == ("us-east-1", "wasabi")
    assert rules(cfg, result)["offsite"] == PASS


async def test_copy_in_another_region_is_offsite(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, files: dict[str, bytes], locs: Locations) -> None:
    """A copy whose bucket is observed in eu-west-1, production in us-east-1: off-site passes."""
    prod, copy = bucket(moto, "prod"), bucket(moto_eu, "copy", region="eu-west-1")
    upload(moto, prod, files)
    upload(moto_eu, copy, files)
    # Both declare the same site: the observed regions decide.
    moto_s3(locs, "prod", moto, prod, site="dc-a")
    moto_s3(locs, "vault", moto_eu, copy, site="dc-a")
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("vault", "data")], compliance=ONE_COPY)
    result, cfg = await run(tmp_path, cfg_dict)

    assert result.outcome == Outcome.OK, result.findings
    assert report(result, "vault").evidence == {"etag": len(files)}
    assert (report(result, "vault").region, report(result, "vault").region_observed) == ("eu-west-1", True)
    assert "site_contradiction" not in codes(result)
    assert rules(cfg, result)["offsite"] == PASS


async def test_shared_credentials_make_a_copy_dependent(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, files: dict[str, bytes], locs: Locations) -> None:
    """Production's access key also opens the copy: shared_credentials; with
    require_independent_credentials the copy no longer counts for off-site or immutable."""
    prod, copy = bucket(moto, "prod"), bucket(moto_eu, "vault", lock=True, region="eu-west-1")
    upload(moto, prod, files, **SHA256)
    upload(moto_eu, copy, files, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until(30), **SHA256)
    moto_s3(locs, "prod", moto, prod, site="dc-a", access_key="AKIDSHARED")
    moto_s3(locs, "vault", moto_eu, copy, site="dc-b", access_key="AKIDSHARED")
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("vault", "data")], compliance=ONE_COPY)
    result, cfg = await run(tmp_path, cfg_dict)

    assert result.outcome == Outcome.OK, result.findings
    assert subjects(result, "shared_credentials") == ["vault"]
    assert report(result, "vault").dependencies == ("shared_credentials",)
    lenient = rules(cfg, result)
    assert (lenient["offsite"], lenient["immutable"]) == (PASS, PASS)

    strict_dict = {**cfg_dict, "compliance": {**ONE_COPY, "require_independent_credentials": True}}
    strict_result, strict_cfg = await run(tmp_path, strict_dict)
    strict = rules(strict_cfg, strict_result)
    assert (strict["offsite"], strict["immutable"]) == (FAIL, FAIL)
    assert strict["copies"] == PASS  # still a verified copy, just not an independent one


async def test_kms_key_in_the_production_region_is_a_dependency(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, files: dict[str, bytes], locs: Locations) -> None:
    """Default encryption with a KMS key in production's region makes a copy dependent; a key in the
    copy's own region does not."""
    prod = bucket(moto, "prod")
    upload(moto, prod, files)
    moto_s3(locs, "prod", moto, prod, site="dc-a")
    copies = []
    for label, key_region in (("near-key", "us-east-1"), ("own-key", "eu-west-1")):
        name = bucket(moto_eu, label, region="eu-west-1")
        upload(moto_eu, name, files)
        s3(moto_eu).put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [{
            "ApplyServerSideEncryptionByDefault": {
                "SSEAlgorithm": "aws:kms",
                "KMSMasterKeyID": f"arn:aws:kms:{key_region}:123456789012:key/0b3c5e0e-{label}"}}]})
        moto_s3(locs, label, moto_eu, name, site="dc-b")
        copies.append((label, "data"))
    result, _ = await run(tmp_path, config(tmp_path, locs, ("prod", "data"), copies))

    assert result.outcome == Outcome.OK, result.findings
    assert subjects(result, "kms_in_production_region") == ["near-key"]
    assert report(result, "near-key").dependencies == ("kms_in_production_region",)
    assert report(result, "own-key").dependencies == ()


# ----------------------------------------------------------------------------- media from storage class


async def test_storage_class_decides_media(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, files: dict[str, bytes], locs: Locations,
        unchanged: Unchanged) -> None:
    """A copy of GLACIER/DEEP_ARCHIVE objects is `archive`, STANDARD ones `object-storage`, a mix is not
    archive: with production and the archive copy verified, the media rule passes."""
    prod = bucket(moto, "prod")
    upload(moto, prod, files, **SHA256)
    moto_s3(locs, "prod", moto, unchanged.watch(moto, prod), site="dc-a")
    keys = sorted(files)
    layouts = {"cold": ("GLACIER", "DEEP_ARCHIVE"), "mixed": ("STANDARD", "GLACIER")}
    for label, classes in layouts.items():
        name = bucket(moto_eu, label, region="eu-west-1")
        for i, cls in enumerate(classes):
            upload(moto_eu, name, {k: files[k] for k in keys[i::2]}, StorageClass=cls, **SHA256)
        moto_s3(locs, label, moto_eu, unchanged.watch(moto_eu, name), site="dc-b")
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("cold", "data"), ("mixed", "data")],
                      compliance={**ONE_COPY, "media": 2, "copies": 2})
    result, cfg = await run(tmp_path, cfg_dict)

    assert result.outcome == Outcome.OK, result.findings
    assert report(result, "cold").media == "archive"
    assert report(result, "cold").evidence == {"etag": len(files)}  # proven without a restore
    assert report(result, "mixed").media == "object-storage"
    assert report(result, "production").media == "object-storage"
    assert rules(cfg, result)["media"] == PASS

    # Roles swapped: production's media comes from its listing (production objects are not HEADed).
    swapped = config(tmp_path, locs, ("cold", "data"), [("prod", "data")])
    result, _ = await run(tmp_path, swapped)
    assert result.outcome == Outcome.OK, result.findings
    assert report(result, "production").media == "archive"
    assert report(result, "prod").media == "object-storage"


async def test_archived_objects_that_must_be_read_are_could_not_check(
        tmp_path: Path, moto: MotoServer, files: dict[str, bytes], locs: Locations) -> None:
    """GLACIER objects without checksums against filesystem production can only be proven by a read,
    which an archive refuses until restored: error with `unreadable`, never failed."""
    write_tree(tmp_path / "prod" / "data", files)
    name = bucket(moto, "cold")
    upload(moto, name, files, StorageClass="GLACIER")
    locs.fs("prod", tmp_path / "prod", site="dc-a")
    moto_s3(locs, "cold", moto, name, site="dc-b")
    result, _ = await run(tmp_path, config(tmp_path, locs, ("prod", "data"), [("cold", "data")]))

    assert result.outcome == Outcome.ERROR
    assert report(result, "cold").state == CopyState.ERROR
    assert "archive storage class" in next(f.message for f in result.findings if f.code == "unreadable")
    assert not codes(result) & {"content_mismatch", "missing_file", "access_denied"}


# ----------------------------------------------------------------------------- could not check: error


def assert_could_not_check(result: Result, cfg: Any, copy: str | None, code: str) -> None:
    """Outcome error (never failed), the reason as a finding, and the rules unknown (never fail)."""
    assert result.outcome == Outcome.ERROR, result.findings
    assert code in codes(result), result.findings
    assert not codes(result) & {"missing_file", "content_mismatch", "copy_missing", "size_mismatch"}
    if copy is not None:
        assert report(result, copy).state == CopyState.ERROR
        assert report(result, "production").state == CopyState.VERIFIED
    else:
        assert result.copies == ()
    verdict = rules(cfg, result)
    assert {verdict[r] for r in ("copies", "offsite", "immutable", "restore_errors")} == {UNKNOWN}, verdict


async def test_stopped_endpoint_is_error_for_production_and_for_a_copy(
        tmp_path: Path, moto: MotoServer, files: dict[str, bytes], locs: Locations) -> None:
    """A stopped S3 server, whether it holds a copy or production, is `unreachable`: error, rules unknown."""
    with MotoServer("eu-west-1") as doomed:
        lost = bucket(doomed, "lost", region="eu-west-1")
        upload(doomed, lost, files)
        prod = bucket(moto, "prod")
        upload(moto, prod, files)
        moto_s3(locs, "prod", moto, prod, site="dc-a")
        moto_s3(locs, "doomed", doomed, lost, site="dc-b", region="eu-west-1", max_attempts=1)
        doomed.stop()

        as_copy = config(tmp_path, locs, ("prod", "data"), [("doomed", "data")], compliance=ONE_COPY)
        result, cfg = await run(tmp_path, as_copy)
        assert_could_not_check(result, cfg, "doomed", "unreachable")
        assert report(result, "doomed").immutable is None  # unknown, not "not locked"

        as_production = config(tmp_path, locs, ("doomed", "data"), [("prod", "data")], compliance=ONE_COPY)
        result, cfg = await run(tmp_path, as_production)
        assert_could_not_check(result, cfg, None, "unreachable")


async def test_stopped_rgw_is_error(
        tmp_path: Path, rgw: CephRGW, files: dict[str, bytes], locs: Locations) -> None:
    """The RGW gateway stopped before the run: the copy could not be checked (error), rules unknown."""
    write_tree(tmp_path / "prod" / "data", files)
    name = bucket(rgw, "vault", lock=True)
    upload(rgw, name, files, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until(30))
    locs.fs("prod", tmp_path / "prod", site="dc-a", region="eu-central-1")
    locs.s3("vault", rgw, name, site="dc-b", max_attempts=1)
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("vault", "data")], compliance=ONE_COPY)
    rgw.stop()
    try:
        result, cfg = await run(tmp_path, cfg_dict)
    finally:
        rgw.restart()
    assert_could_not_check(result, cfg, "vault", "unreachable")

    result, cfg = await run(tmp_path, cfg_dict)  # back up: the same copy is proven again
    assert result.outcome == Outcome.OK, result.findings
    assert rules(cfg, result)["immutable"] == PASS


async def when_logged(server: MotoServer, marker: str, count: int, action: Callable[[], object]) -> None:
    """Run ``action`` (in a thread) as soon as moto's request log shows ``count`` lines with ``marker``."""
    async with asyncio.timeout(30):
        while True:
            text = await asyncio.to_thread(server.log_path.read_text, errors="replace")
            if text.count(marker) >= count:
                await asyncio.to_thread(action)
                return
            await asyncio.sleep(0.01)


async def test_server_stopped_mid_run_is_error_not_failed(
        tmp_path: Path, locs: Locations) -> None:
    """The copy's server dies while its objects are being read: the copy is an error (never failed, no
    object reported missing), the run stops asking that server, and production stays verified."""
    files = {f"f{i:03d}": os.urandom(8 * 1024) for i in range(80)}
    write_tree(tmp_path / "prod" / "data", files)
    with MotoServer("eu-west-1") as doomed:
        name = bucket(doomed, "vault", region="eu-west-1")
        upload(doomed, name, files)
        locs.fs("prod", tmp_path / "prod", site="dc-a", region="us-east-1")
        # Two HEADs at a time keep the run long enough that the stop surely lands in the middle of it.
        moto_s3(locs, "vault", doomed, name, site="dc-b", region="eu-west-1", max_attempts=1, head_concurrency=2)
        cfg_dict = config(tmp_path, locs, ("prod", "data"), [("vault", "data")], compliance=ONE_COPY)
        running = asyncio.create_task(run(tmp_path, cfg_dict))
        await when_logged(doomed, f'"GET /{name}/data/', 5, doomed.stop)
        result, cfg = await running

    assert_could_not_check(result, cfg, "vault", "unreachable")
    vault = report(result, "vault")
    assert 0 < vault.objects["verified"] < len(files), vault.objects  # really stopped mid-run
    assert vault.objects["missing"] == vault.objects["mismatch"] == 0
    assert len(subjects(result, "unreachable")) == 1  # one finding, not one per remaining object


async def test_production_object_vanishing_mid_run_is_error_not_failed(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, locs: Locations) -> None:
    """An object deleted from production after it was listed, before the copy's object is compared with
    it: that object could not be proven (error); the copy that holds it is not failed."""
    files = {f"f{i:03d}": b"%d" % i for i in range(100)}
    victim, body = "zz-victim", os.urandom(4096)
    prod, copy = bucket(moto, "prod"), bucket(moto_eu, "copy", region="eu-west-1")
    upload(moto, prod, {**files, victim: body})
    upload(moto_eu, copy, files)
    # The copy's victim is a one-part multipart upload: same bytes, an ETag ("md5-1") unlike production's, so
    # equal ETags cannot prove it and production's object must be read for this one.
    mpu = s3(moto_eu).create_multipart_upload(Bucket=copy, Key=f"data/{victim}")
    part = s3(moto_eu).upload_part(Bucket=copy, Key=f"data/{victim}", UploadId=mpu["UploadId"], PartNumber=1,
                                   Body=body)["ETag"]
    s3(moto_eu).complete_multipart_upload(Bucket=copy, Key=f"data/{victim}", UploadId=mpu["UploadId"],
                                          MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]})
    # Production's object GETs (only the victim's: the others are proven by equal ETags) wait 2 s in a proxy, so
    # the deletion, made as soon as production was listed, surely lands before that read, however loaded the
    # machine is.
    with RecordingProxy("127.0.0.1", moto.port, get_delay=2.0) as proxy:
        moto_s3(locs, "prod", moto, prod, site="dc-a", endpoint_url=proxy.endpoint_url)
        moto_s3(locs, "vault", moto_eu, copy, site="dc-b", head_concurrency=1)  # the victim (last key) comes late
        running = asyncio.create_task(run(tmp_path, config(tmp_path, locs, ("prod", "data"), [("vault", "data")])))
        await when_logged(moto, f'"GET /{prod}?list-type=2', 1,
                          lambda: s3(moto).delete_object(Bucket=prod, Key=f"data/{victim}"))
        result, _ = await running

    assert result.outcome == Outcome.ERROR, result.findings
    assert subjects(result, "location_changed") == [f"vault:{victim}"]
    assert not codes(result) & {"missing_file", "content_mismatch"}
    vault = report(result, "vault")
    assert vault.state == CopyState.ERROR
    assert vault.objects == {"verified": len(files), "missing": 0, "mismatch": 0, "extra": 0}


@pytest.mark.parametrize("kind", ["replica", "dataset"])
async def test_a_live_production_file_deleted_before_it_is_checked_is_a_deletion_not_a_missing_file(
        tmp_path: Path, moto_eu: MotoServer, locs: Locations, kind: str) -> None:
    """A sealed, live (not frozen) filesystem production: a file listed, then deleted before its own check
    reached it (the live-estate soak saw `missing_file:production`, failed: a false page). It is a deletion since
    the seal, counted like one the listing had missed; the copy still holds it, proven against the seal.
    The copy's objects are read through a proxy that serves GETs one at a time, 0.3 s each: the merge reaches
    the victim (the last key) only after the copy's first objects were read, and the victim is deleted from
    production as soon as the first of those GETs arrives (production was listed by then)."""
    files = {f"f{i:03d}": os.urandom(2048) for i in range(24)}
    victim = "f023"
    backdate(write_tree(tmp_path / "prod" / "data", files))
    await seal_directory(tmp_path / "prod" / "data", out_path=tmp_path / "prod" / "data" / MANIFEST_NAME)
    copy = bucket(moto_eu, "copy", region="eu-west-1")
    upload(moto_eu, copy, files)  # ETags are MD5s, the seal has SHA-256: every copy object is read
    locs.fs("prod", tmp_path / "prod", site="dc-a")
    with RecordingProxy("127.0.0.1", moto_eu.port, get_delay=0.3) as proxy:
        moto_s3(locs, "vault", moto_eu, copy, site="dc-b", endpoint_url=proxy.endpoint_url)
        cfg = config(tmp_path, locs, ("prod", "data"), [("vault", "data")], validators=[{"kind": kind}])
        cfg["limits"] = {"hash_workers": 1}  # a window of 8 proofs in flight
        running = asyncio.create_task(run(tmp_path, cfg))
        for _ in range(3000):  # up to 30 s
            if any(r.method == "GET" and r.key.startswith("data/") for r in proxy.snapshot(copy)):
                break
            await asyncio.sleep(0.01)
        (tmp_path / "prod" / "data" / victim).unlink()
        result, _ = await running

    assert not codes(result) & {"missing_file", "content_mismatch"}, result.findings
    assert result.outcome == Outcome.OK, result.findings
    assert report(result, "production").objects.get("deleted") == 1, report(result, "production").objects
    vault = report(result, "vault")
    assert vault.state == CopyState.VERIFIED and vault.objects["verified"] == len(files), vault.objects


@pytest.mark.parametrize("side", ["copy", "production"])
async def test_wrong_credentials_are_access_denied(
        tmp_path: Path, rgw: CephRGW, files: dict[str, bytes], locs: Locations, side: str) -> None:
    """A wrong secret key (RGW checks signatures) is `access_denied`: error, never failed."""
    write_tree(tmp_path / "prod" / "data", files)
    name = bucket(rgw, "vault")
    upload(rgw, name, files)
    wrong = {"secret_key": "not-the-secret-key"}
    locs.fs("local", tmp_path / "prod", site="dc-a", region="eu-central-1")
    locs.s3("vault", rgw, name, site="dc-b", **(wrong if side == "copy" else {}))
    locs.s3("rgw-prod", rgw, name, site="dc-b", **(wrong if side == "production" else {}))
    locs.fs("local-copy", tmp_path / "prod", site="dc-c", region="eu-north-1")
    if side == "copy":
        cfg_dict = config(tmp_path, locs, ("local", "data"), [("vault", "data")], compliance=ONE_COPY)
    else:
        cfg_dict = config(tmp_path, locs, ("rgw-prod", "data"), [("local-copy", "data")], compliance=ONE_COPY)
    result, cfg = await run(tmp_path, cfg_dict)
    assert_could_not_check(result, cfg, "vault" if side == "copy" else None, "access_denied")


# ----------------------------------------------------------------------------- read-only


async def test_replica_runs_write_nothing_to_any_bucket(
        tmp_path: Path, moto: MotoServer, moto_eu: MotoServer, rgw: CephRGW, files: dict[str, bytes],
        locs: Locations) -> None:
    """Passing and failing runs over production and locked/unlocked copies on three servers leave every
    version of every bucket as it was."""
    prod = bucket(moto, "prod", versioned=True)
    eu = bucket(moto_eu, "eu", lock=True, region="eu-west-1")
    vault = bucket(rgw, "vault", lock=True)
    upload(moto, prod, files, **SHA256)
    upload(moto_eu, eu, files, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until(30), **SHA256)
    upload(rgw, vault, files, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until(30))
    victim = sorted(files)[0]
    upload(rgw, vault, {victim: flip(files[victim])}, ObjectLockMode="COMPLIANCE",
           ObjectLockRetainUntilDate=until(30))  # a newer, different version: content_mismatch
    moto_s3(locs, "prod", moto, prod, site="dc-a")
    moto_s3(locs, "eu", moto_eu, eu, site="dc-b")
    locs.s3("vault", rgw, vault, site="dc-c")
    before = {n: versions(s, n) for s, n in ((moto, prod), (moto_eu, eu), (rgw, vault))}
    cfg_dict = config(tmp_path, locs, ("prod", "data"), [("eu", "data"), ("vault", "data")])
    result, _ = await run(tmp_path, cfg_dict)
    assert result.outcome == Outcome.FAILED
    assert subjects(result, "content_mismatch") == [f"vault:{victim}"]
    assert report(result, "eu").state == CopyState.VERIFIED
    after = {n: versions(s, n) for s, n in ((moto, prod), (moto_eu, eu), (rgw, vault))}
    assert after == before
    assert len(before[vault]) == len(files) + 1  # the versions listing really sees history


# ----------------------------------------------------------------------------- client pool


async def test_reload_keeps_the_old_client_working_for_a_running_check(
        tmp_path: Path, rgw: CephRGW, monkeypatch: pytest.MonkeyPatch) -> None:
    """A location whose config changes on reload gets a new client, but a check that started before keeps
    using the old one (here: reading a large object) until the pool is closed."""
    name = bucket(rgw, "big-object")
    body = os.urandom(8 * 1024 * 1024)
    s3(rgw).put_object(Bucket=name, Key="data/big.bin", Body=body)
    monkeypatch.setenv("DRW_POOL_AK", rgw.access_key)
    monkeypatch.setenv("DRW_POOL_SK", rgw.secret_key)
    before = S3LocationConfig(kind="s3", bucket=name, endpoint_url=rgw.endpoint_url, region=rgw.region,
                              addressing_style="path", access_key_id_env="DRW_POOL_AK",
                              secret_access_key_env="DRW_POOL_SK")
    pool = S3Pool(tmp_path)
    try:
        old = pool.get("vault", before)
        response = await (await old.client()).get_object(Bucket=name, Key="data/big.bin")
        stream = response["Body"]
        try:
            got = [await stream.read(64 * 1024)]
            assert pool.get("vault", before.model_copy(update={"head_concurrency": 4})) is not old
            await asyncio.sleep(0.1)  # anything the replacement scheduled has run
            while chunk := await stream.read(1024 * 1024):
                got.append(chunk)
        finally:
            stream.close()
        assert b"".join(got) == body
    finally:
        await pool.close()
