"""The `immutability_probe` validator on real S3 servers: a COMPLIANCE-locked canary must refuse deletion.

The session's Ceph RGW has exact Object Lock semantics (a locked version cannot be deleted, retention
cannot be shortened, a locked PUT into a bucket without Object Lock is refused); moto stands for a second
provider. The probe's only write is its canary under the location's ``canary_prefix``: every test checks
what the bucket holds outside that prefix, version for version.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from drwatch.core.errors import ConfigError
from drwatch.core.model import Outcome, Result, Severity
from drwatch.validators.immutability_probe import CANARY_NAME
from tests.support.helpers import sample_files
from tests.support.s3helpers import Locations, Server, bucket, codes, config, parse, rules, run, until, upload, versions
from tests.support.s3helpers import client as s3
from tests.support.s3servers import CephRGW, MotoServer

CANARY_PREFIX = "drwatch-canary/"
CANARY_KEY = CANARY_PREFIX + CANARY_NAME


def probe_config(tmp: Path, locs: Locations, server: Server, name: str, *, copy_prefix: str = "data",
                 validators: list[dict[str, Any]] | None = None, **location: Any) -> dict[str, Any]:
    """Production is a local directory; the copy ``vault`` is the bucket, probed under CANARY_PREFIX."""
    (tmp / "prod" / "data").mkdir(parents=True, exist_ok=True)
    locs.fs("prod", tmp / "prod", site="dc-a")
    location.setdefault("canary_prefix", CANARY_PREFIX)
    locs.s3("vault", server, name, site="dc-b", **location)
    return config(tmp, locs, ("prod", "data"), [("vault", copy_prefix)],
                  validators=validators or [{"kind": "immutability_probe"}])


def canaries(server: Server, name: str) -> list[tuple[Any, ...]]:
    """Every version (and delete marker) under the canary prefix."""
    return [v for v in versions(server, name) if str(v[1]).startswith(CANARY_PREFIX)]


def locked_bucket(server: Server, files: dict[str, bytes]) -> str:
    """A bucket with Object Lock and a COMPLIANCE-locked backup under data/ (what the probe must not touch)."""
    name = bucket(server, "vault", lock=True)
    upload(server, name, files, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until(30))
    return name


def critical(result: Result) -> list[str]:
    return [f.code for f in result.findings if f.severity == Severity.CRITICAL]


async def test_compliance_bucket_passes_and_the_canary_is_reused(
        tmp_path: Path, rgw: CephRGW, locs: Locations) -> None:
    """On a COMPLIANCE-capable bucket the delete of the canary version is refused: ok. The second run
    reuses that canary (no second version), and nothing outside the canary prefix changes."""
    name = locked_bucket(rgw, sample_files(4, 512))
    outside = versions(rgw, name)
    cfg_dict = probe_config(tmp_path, locs, rgw, name)

    first, _ = await run(tmp_path, cfg_dict)
    assert first.outcome == Outcome.OK, first.findings
    assert first.findings == ()
    assert first.figures["copies_probed"] == 1
    written = canaries(rgw, name)
    assert [(v[0], v[1]) for v in written] == [("version", CANARY_KEY)]
    head = s3(rgw).head_object(Bucket=name, Key=CANARY_KEY, VersionId=written[0][2])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"].timestamp() == pytest.approx(time.time() + 86400, abs=300)

    second, _ = await run(tmp_path, cfg_dict)
    assert second.outcome == Outcome.OK, second.findings
    assert canaries(rgw, name) == written  # the same single version: reused, not rewritten
    assert versions(rgw, name, exclude_prefix=CANARY_PREFIX) == outside


async def test_canary_is_renewed_only_when_its_lock_runs_short(
        tmp_path: Path, rgw: CephRGW, locs: Locations) -> None:
    """A canary whose lock has less than renew_before left is replaced by a new locked version; the old
    one stays (it is locked). Still nothing outside the canary prefix is written."""
    name = locked_bucket(rgw, sample_files(2, 256))
    outside = versions(rgw, name)
    cfg_dict = probe_config(tmp_path, locs, rgw, name,
                            validators=[{"kind": "immutability_probe", "retention": "2h", "renew_before": "1h"}])
    first, _ = await run(tmp_path, cfg_dict)
    assert first.outcome == Outcome.OK, first.findings
    assert len(canaries(rgw, name)) == 1

    # 90 minutes later by the validator's clock the 2-hour lock has 30 minutes left (< renew_before).
    later, _ = await run(tmp_path, cfg_dict, clock=lambda: time.time() + 90 * 60)
    assert later.outcome == Outcome.OK, later.findings
    assert len(canaries(rgw, name)) == 2
    assert versions(rgw, name, exclude_prefix=CANARY_PREFIX) == outside


@pytest.mark.parametrize("versioned", [True, False])
async def test_bucket_without_object_lock_fails_lock_unsupported(
        tmp_path: Path, rgw: CephRGW, locs: Locations, versioned: bool) -> None:
    """A bucket created without Object Lock refuses the locked canary: failed, lock_unsupported, and the
    bucket is left exactly as it was (no canary either)."""
    name = bucket(rgw, "plain", versioned=versioned)
    upload(rgw, name, sample_files(3, 256))
    before = versions(rgw, name)
    cfg_dict = probe_config(tmp_path, locs, rgw, name)
    result, cfg = await run(tmp_path, cfg_dict)

    assert result.outcome == Outcome.FAILED
    assert critical(result) == ["lock_unsupported"]
    assert [f.subject for f in result.findings] == ["vault"]
    assert versions(rgw, name) == before
    assert rules(cfg, result)["restore_errors"] == "fail"


async def test_stopped_gateway_is_error(tmp_path: Path, rgw: CephRGW, locs: Locations) -> None:
    """With the RGW gateway stopped the probe could not check: error with `unreachable`, never failed."""
    name = locked_bucket(rgw, sample_files(2, 256))
    cfg_dict = probe_config(tmp_path, locs, rgw, name, max_attempts=1)
    rgw.stop()
    try:
        result, cfg = await run(tmp_path, cfg_dict)
    finally:
        rgw.restart()
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"unreachable"}
    assert critical(result) == []
    assert rules(cfg, result)["restore_errors"] == "unknown"
    assert canaries(rgw, name) == []


async def test_wrong_credentials_are_error_not_failed(tmp_path: Path, rgw: CephRGW, locs: Locations) -> None:
    """A wrong secret key is `access_denied` (could not check), not a bucket that cannot lock."""
    name = locked_bucket(rgw, sample_files(2, 256))
    result, _ = await run(tmp_path, probe_config(tmp_path, locs, rgw, name, secret_key="wrong-secret"))
    assert result.outcome == Outcome.ERROR
    assert codes(result) == {"access_denied"}
    assert canaries(rgw, name) == []


async def test_moto_refuses_the_locked_delete(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """moto also refuses deleting a COMPLIANCE-locked version: ok, one canary, reused on the next run."""
    name = locked_bucket(moto, sample_files(3, 256))
    outside = versions(moto, name)
    cfg_dict = probe_config(tmp_path, locs, moto, name)
    for _ in range(2):
        result, _ = await run(tmp_path, cfg_dict)
        assert result.outcome == Outcome.OK, result.findings
    written = canaries(moto, name)
    assert len(written) == 1
    head = s3(moto).head_object(Bucket=name, Key=CANARY_KEY, VersionId=written[0][2])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert versions(moto, name, exclude_prefix=CANARY_PREFIX) == outside


async def test_probe_and_replica_write_nothing_but_the_canary(
        tmp_path: Path, rgw: CephRGW, moto: MotoServer, locs: Locations) -> None:
    """Replica and probe over an S3 production bucket and a locked copy at the bucket root: production is
    untouched, the copy gains only the canary, and the replica does not count the canary as an extra
    object of the copy."""
    files = sample_files(5, 1024)
    prod = bucket(moto, "prod", versioned=True)
    upload(moto, prod, files, prefix="")
    vault = bucket(rgw, "vault", lock=True)
    upload(rgw, vault, files, prefix="", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until(30))
    prod_before, vault_before = versions(moto, prod), versions(rgw, vault)
    locs.s3("prod", moto, prod, site="dc-a", access_key="AKIDPRODUCTION")
    locs.s3("vault", rgw, vault, site="dc-b", canary_prefix=CANARY_PREFIX)
    cfg_dict = config(tmp_path, locs, ("prod", ""), [("vault", "")],
                      validators=[{"kind": "immutability_probe"}, {"kind": "replica"}],
                      compliance={"copies": 2, "media": 1})

    probe, _ = await run(tmp_path, cfg_dict, validator=0)
    replica, cfg = await run(tmp_path, cfg_dict, validator=1)
    assert probe.outcome == Outcome.OK, probe.findings
    assert replica.outcome == Outcome.OK, replica.findings
    assert "extra_file" not in codes(replica)
    copy = next(c for c in replica.copies if c.copy == "vault")
    assert copy.objects["verified"] == len(files)
    assert copy.lock == {"compliance": len(files)}
    assert versions(moto, prod) == prod_before
    assert versions(rgw, vault, exclude_prefix=CANARY_PREFIX) == vault_before
    assert len(canaries(rgw, vault)) == 1
    assert rules(cfg, probe, replica)["immutable"] == "pass"


def test_renewal_must_come_before_the_lock_ends(tmp_path: Path, locs: Locations) -> None:
    """renew_before >= retention would write (and lock for good) a new canary on every run: rejected."""
    nowhere = SimpleNamespace(endpoint_url="http://127.0.0.1:9", access_key="k", secret_key="s", region="r")
    cfg_dict = probe_config(tmp_path, locs, nowhere, "any-bucket",  # type: ignore[arg-type]
                            validators=[{"kind": "immutability_probe", "retention": "30m", "renew_before": "1h"}])
    with pytest.raises(ConfigError, match="renew_before must be shorter than retention"):
        parse(tmp_path, cfg_dict)
