"""S3 Inventory reports as evidence for an S3 copy (storage/inventory.py), on moto and Ceph RGW.

Reports are written in AWS's layout (manifest.json, manifest.checksum, CSV-gzip or Parquet data files, rows
shuffled over several files) into a destination bucket that a location of its own names. drwatch reaches the
copy through a recording proxy, so every HeadObject it sends is counted: a fresh, verified report answers for
every object with none; whatever makes the report unusable is a warning finding and every object is HEADed.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drwatch.core.errors import ConfigError
from drwatch.core.model import CopyState, Outcome, Result
from drwatch.state.compliance import RuleState
from drwatch.storage.inventory import CSV_COLUMNS, InventoryIndex
from tests.support.helpers import REPO, after_this_second, sample_files, write_config
from tests.support.inventory import take_inventory, write_report
from tests.support.s3helpers import (
    Locations,
    Server,
    bucket,
    codes,
    config,
    parse,
    report,
    rules,
    run,
    subjects,
    until,
    upload,
)
from tests.support.s3helpers import client as s3
from tests.support.s3proxy import RecordingProxy, s3_operation
from tests.support.s3servers import CephRGW, MotoServer

PASS, FAIL = RuleState.PASS, RuleState.FAIL
ONE_COPY = {"copies": 2, "media": 1, "offsite": 1, "immutable": 1}
SHA256: dict[str, Any] = {"ChecksumAlgorithm": "SHA256"}
INVENTORY_CODES = {"inventory_stale", "inventory_corrupt", "inventory_unreadable", "extra_missing"}


@pytest.fixture
def files() -> dict[str, bytes]:
    return sample_files(8, 2048)


class Estate:
    """Production and a COMPLIANCE-locked copy on one server, a destination bucket for the copy's reports, and
    drwatch's copy location behind a recording proxy."""

    def __init__(self, server: Server, locs: Locations, files: dict[str, bytes], proxy: RecordingProxy,
                 tmp: Path, *, lock_days: float = 30, checksums: bool = True) -> None:
        self.server, self.files, self.proxy, self.tmp = server, files, proxy, tmp
        put: dict[str, Any] = dict(SHA256) if checksums else {}
        self.prod = bucket(server, "prod")
        self.copy = bucket(server, "vault", lock=True)
        self.dest = bucket(server, "inventory")
        upload(server, self.prod, files, **put)
        after_this_second()  # the copy is taken after production was written (not "behind" it)
        upload(server, self.copy, files, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until(lock_days),
               **put)
        self.rows = take_inventory(server, self.copy)
        self.locs = locs
        # moto accepts any key: one per location, so no two share credentials (RGW checks its one user's key)
        def key(name: str) -> dict[str, str]:
            return {"access_key": f"AKID{name.upper()}"} if isinstance(server, MotoServer) else {}

        locs.s3("prod", server, self.prod, site="dc-a", **key("prod"))
        locs.s3("inv", server, self.dest, site="dc-b", **key("inv"))
        locs.s3("vault", server, self.copy, site="dc-b", endpoint_url=proxy.endpoint_url, **key("vault"),
                inventory={"location": "inv", "prefix": "reports", "configuration_id": "daily"})
        after_this_second()  # a report taken from now on was taken after every object's listed second

    def publish(self, **kw: Any) -> str:
        kw.setdefault("rows", self.rows)
        return write_report(self.server, self.dest, prefix="reports", source_bucket=self.copy, config_id="daily",
                            **kw)

    async def run(self) -> tuple[Result, Any]:
        self.proxy.clear()
        return await run(self.tmp, config(self.tmp, self.locs, ("prod", "data"), [("vault", "data")],
                                          compliance=ONE_COPY))

    def heads(self) -> list[str]:
        """The keys drwatch HEADed in the copy bucket."""
        return sorted(r.key for r in self.proxy.snapshot(self.copy) if s3_operation(r) == "head")


def _proxy(server: Server) -> Iterator[RecordingProxy]:
    with RecordingProxy("127.0.0.1", server.port) as proxy:
        yield proxy


@pytest.fixture
def moto_proxy(moto: MotoServer) -> Iterator[RecordingProxy]:
    yield from _proxy(moto)


@pytest.fixture
def rgw_proxy(rgw: CephRGW) -> Iterator[RecordingProxy]:
    yield from _proxy(rgw)


@pytest.fixture
def moto_estate(tmp_path: Path, moto: MotoServer, locs: Locations, files: dict[str, bytes],
                moto_proxy: RecordingProxy) -> Estate:
    return Estate(moto, locs, files, moto_proxy, tmp_path)


def assert_immutable(result: Result, cfg: Any, n: int) -> None:
    assert result.outcome == Outcome.OK, result.findings
    vault = report(result, "vault")
    assert vault.state == CopyState.VERIFIED
    assert vault.lock == {"compliance": n}
    assert vault.retain_until_min == pytest.approx(time.time() + 30 * 86400, abs=300)
    assert rules(cfg, result)["immutable"] == PASS


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
async def test_fresh_report_proves_the_lock_without_a_head(moto_estate: Estate, fmt: str) -> None:
    """A fresh report whose checksums verify answers for every object: zero HeadObject requests, and the
    COMPLIANCE locks it lists pass the immutable rule."""
    moto_estate.publish(fmt=fmt)
    result, cfg = await moto_estate.run()

    assert_immutable(result, cfg, len(moto_estate.files))
    assert moto_estate.heads() == []
    assert not codes(result) & INVENTORY_CODES


async def test_fresh_report_on_rgw_proves_the_lock_without_a_head(
        tmp_path: Path, rgw: CephRGW, locs: Locations, files: dict[str, bytes], rgw_proxy: RecordingProxy) -> None:
    """Ceph RGW (exact Object Lock): the report stands in for every HEAD; without it every object is HEADed."""
    estate = Estate(rgw, locs, files, rgw_proxy, tmp_path, checksums=False)
    result, _ = await estate.run()  # no report published yet
    assert subjects(result, "inventory_unreadable") == ["vault"]
    assert len(estate.heads()) == len(files)

    estate.publish()
    result, cfg = await estate.run()
    assert_immutable(result, cfg, len(files))
    assert estate.heads() == []


async def test_objects_newer_than_the_report_are_headed(moto_estate: Estate) -> None:
    """An object rewritten after the report was taken, and one the report does not list, are HEADed; the
    others are not."""
    est = moto_estate
    est.publish()
    after_this_second()
    rewritten, new = sorted(est.files)[2], "late-object.bin"
    body = est.files[rewritten]
    upload(est.server, est.copy, {rewritten: body, new: b"late"}, ObjectLockMode="COMPLIANCE",
           ObjectLockRetainUntilDate=until(30), **SHA256)
    upload(est.server, est.prod, {new: b"late"}, **SHA256)
    result, cfg = await est.run()

    assert_immutable(result, cfg, len(est.files) + 1)
    assert est.heads() == sorted([f"data/{rewritten}", f"data/{new}"])


@pytest.mark.parametrize("fault", ["stale", "manifest_checksum", "data_md5", "bad_json"])
async def test_an_unusable_report_is_a_finding_and_every_object_is_headed(moto_estate: Estate, fault: str) -> None:
    """A stale report, a manifest.json that does not match manifest.checksum, a data file that does not match
    its MD5 in the manifest, or a manifest that is no manifest: a warning finding, and the copy is proven by
    one HEAD per object as without a report (never a silent pass, never a failed copy)."""
    est = moto_estate

    def flip_data(manifest: dict[str, Any], data: dict[str, bytes]) -> None:
        key = next(iter(data))
        data[key] = data[key][:-1] + bytes([data[key][-1] ^ 1])

    def garble(manifest: dict[str, Any], data: dict[str, bytes]) -> None:
        del manifest["files"]

    cases: dict[str, dict[str, Any]] = {
        "stale": {"created": time.time() - 49 * 3600},
        "manifest_checksum": {"bad_checksum": True},
        "data_md5": {"tamper": flip_data},
        "bad_json": {"tamper": garble},
    }
    kw = cases[fault]
    est.publish(**kw)
    result, cfg = await est.run()

    code = "inventory_stale" if fault == "stale" else "inventory_corrupt"
    assert subjects(result, code) == ["vault"]
    assert codes(result) & INVENTORY_CODES == {code}
    assert est.heads() == sorted(f"data/{k}" for k in est.files)
    assert_immutable(result, cfg, len(est.files))


async def test_a_key_the_report_lists_but_the_bucket_lacks_is_missing(moto_estate: Estate) -> None:
    """The listing is the authority on existence: an object deleted after the report (a delete marker over
    its locked version) is missing from the copy although the report lists it locked."""
    est = moto_estate
    est.publish()
    victim = sorted(est.files)[1]
    s3(est.server).delete_object(Bucket=est.copy, Key=f"data/{victim}")
    result, _ = await est.run()

    assert result.outcome == Outcome.FAILED, result.findings
    assert subjects(result, "missing_file") == [f"vault:{victim}"]
    vault = report(result, "vault")
    assert vault.state == CopyState.FAILED
    assert vault.objects["missing"] == 1
    assert est.heads() == []


async def test_a_report_that_says_unlocked_fails_the_immutable_rule(moto_estate: Estate) -> None:
    """The report is the evidence: where it lists an object without a lock, that object counts as unlocked
    (no HEAD second-guesses it) and the immutable rule fails."""
    est = moto_estate
    unlocked = sorted(est.files)[4]
    rows = [dict(r, object_lock_mode="", object_lock_retain_until_date=None)
            if r["key"] == f"data/{unlocked}" else r for r in est.rows]
    est.publish(rows=rows)
    result, cfg = await est.run()

    assert result.outcome == Outcome.OK, result.findings  # a lock posture is a rule matter, not a bad copy
    vault = report(result, "vault")
    assert vault.lock == {"compliance": len(est.files) - 1, "none": 1}
    assert "objects_not_locked" in codes(result)
    assert rules(cfg, result)["immutable"] == FAIL
    assert est.heads() == []


async def test_a_report_missing_the_lock_fields_is_unreadable(moto_estate: Estate) -> None:
    """A report configured without the Object Lock fields cannot stand in for a HEAD: inventory_unreadable."""
    est = moto_estate

    def drop_lock_fields(manifest: dict[str, Any], data: dict[str, bytes]) -> None:
        manifest["fileSchema"] = manifest["fileSchema"].replace("ObjectLockMode", "Unknown")

    est.publish(tamper=drop_lock_fields)
    result, cfg = await est.run()
    assert subjects(result, "inventory_unreadable") == ["vault"]
    assert len(est.heads()) == len(est.files)
    assert_immutable(result, cfg, len(est.files))


@pytest.mark.parametrize(("target", "message"), [("nowhere", "unknown location 'nowhere'"),
                                                 ("local", "location 'local' is not an S3 location")])
def test_the_report_location_must_be_an_s3_location(tmp_path: Path, moto: MotoServer, locs: Locations,
                                                    target: str, message: str) -> None:
    """``inventory.location`` names an S3 location of the config: anything else is refused when it loads."""
    locs.fs("local", tmp_path, site="dc-a")
    locs.s3("vault", moto, "vault-bucket", site="dc-b",
            inventory={"location": target, "configuration_id": "daily"})
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, config(tmp_path, locs, ("local", "data"), [("vault", "data")]))
    assert [(p.path, p.message) for p in err.value.problems] == [("locations.vault.inventory.location", message)]


def test_a_parquet_report_without_pyarrow_is_extra_missing(moto_estate: Estate) -> None:
    """Where pyarrow cannot be imported (core install), a Parquet report is `extra_missing` (a warning) and every
    object is HEADed: the copy is still proven, through a real `drwatch check`."""
    est = moto_estate
    est.publish(fmt="Parquet")
    path = write_config(est.tmp / "drwatch.yaml", config(est.tmp, est.locs, ("prod", "data"), [("vault", "data")],
                                                         compliance=ONE_COPY))
    code = ("import sys; sys.modules['pyarrow'] = None; from drwatch.cli.main import main; "
            f"sys.exit(main(['check', '--config', {str(path)!r}, '--output', 'json']))")
    est.proxy.clear()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                         cwd=REPO)
    [res] = json.loads(out.stdout)["results"]
    assert res["outcome"] == "ok", res
    assert [(f["code"], f["subject"]) for f in res["findings"] if f["code"] in INVENTORY_CODES] == \
        [("extra_missing", "vault")]
    assert est.heads() == sorted(f"data/{k}" for k in est.files)


def test_the_index_keeps_current_versions_under_the_prefix_with_decoded_keys(tmp_path: Path) -> None:
    """A CSV report of all versions: only the current version of a key counts, delete markers and other
    prefixes are passed over, URL-encoded keys (spaces, '+', non-ASCII) are decoded, and a row answers only
    for the listing's ETag and size."""
    columns = [CSV_COLUMNS[c] for c in ("Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size",
                                        "LastModifiedDate", "ETag", "ObjectLockRetainUntilDate", "ObjectLockMode",
                                        "ObjectLockLegalHoldStatus", "StorageClass")]
    rows = [
        ["b", "data/a%20b%2Bc%C3%A9.bin", "v2", "true", "false", "10", "2026-01-01T00:00:00.000Z", "e1",
         "2036-01-01T00:00:00.000Z", "COMPLIANCE", "OFF", "GLACIER"],
        ["b", "data/a%20b%2Bc%C3%A9.bin", "v1", "false", "false", "10", "2025-01-01T00:00:00.000Z", "e0",
         "", "", "OFF", "STANDARD"],
        ["b", "data/gone.bin", "v3", "true", "true", "0", "2026-01-01T00:00:00.000Z", "", "", "", "", ""],
        ["b", "data/held.bin", "v4", "true", "false", "5", "2026-01-01T00:00:00.000Z", "e4", "", "", "ON",
         "STANDARD"],
        ["b", "other/x.bin", "v5", "true", "false", "5", "2026-01-01T00:00:00.000Z", "e5", "", "", "OFF", ""],
    ]
    text = "".join(",".join(f'"{v}"' for v in row) + "\n" for row in rows)
    index = InventoryIndex(time.time(), "data/")
    index.add_csv(io.BytesIO(gzip.compress(text.encode())), columns)

    assert len(index) == 2
    head = index.lookup("data/a b+cé.bin", "e1", 10)
    assert head is not None
    assert (head.lock_mode, head.legal_hold, head.storage_class) == ("COMPLIANCE", False, "GLACIER")
    assert head.retain_until == pytest.approx(2082758400.0)
    assert index.lookup("data/a b+cé.bin", "e0", 10) is None  # the older version's ETag: HEAD it
    assert index.lookup("data/a b+cé.bin", "e1", 11) is None
    assert index.lookup("data/gone.bin", "", 0) is None
    assert index.lookup("other/x.bin", "e5", 5) is None
    held = index.lookup("data/held.bin", "e4", 5)
    assert held is not None and (held.lock_mode, held.legal_hold, held.retain_until) == (None, True, None)
