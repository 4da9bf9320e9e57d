"""The `s3_replication` validator against a real moto S3 server: production's bucket carries a real replication
configuration (PutBucketReplication, stored and answered by moto) and the copy's bucket a real region, versioning
and Object Lock; every run goes through a real Runner as in the daemon.

moto (5.2) answers GetBucketReplication with every rule's ``Filter`` as ``{"Prefix": ""}`` and its
``DeleteMarkerReplication`` as ``Disabled`` whatever was put (Ceph RGW refuses PutBucketReplication without
multisite), so the tests about those two fields send the request to moto and put back the fields the test
configured, as AWS returns them (``aws_fields``): everything else (destinations, statuses, regions,
versioning, Object Lock) is moto's own answer. moto does not replicate and never sets an object's
``ReplicationStatus``, so the FAILED objects are written the way AWS reports them at scale: an S3 Inventory
report of production's bucket (tests/support/inventory.py) whose rows say ``FAILED``. Faults for "could not
check" are real too: an endpoint where nothing listens, a proxy answering 503 SlowDown.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from drwatch.core.errors import ConfigError
from drwatch.core.model import Outcome, Result, Severity
from drwatch.storage.s3 import S3Location
from drwatch.validators.plugin import Latest
from drwatch.validators.s3_replication import FAMILIES, _project
from tests.faults.proxy import Fault, FaultProxy
from tests.support.helpers import free_port, sample_files
from tests.support.inventory import take_inventory, write_report
from tests.support.s3helpers import Locations, bucket, client, codes, config, parse, rules, run, upload
from tests.support.s3proxy import RecordingProxy
from tests.support.s3servers import MotoServer

FAR = "eu-west-1"


def critical(result: Result) -> list[str]:
    return sorted(f.code for f in result.findings if f.severity == Severity.CRITICAL)


_PUT: dict[str, list[dict[str, Any]]] = {}  # bucket -> the rules last put (what AWS would answer)


@pytest.fixture
def aws_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """GetBucketReplication still goes to moto; each rule's Filter and DeleteMarkerReplication (which moto
    answers as constants) are those put, as AWS answers them."""
    real = S3Location.replication

    async def replication(self: S3Location, meter: Any = None) -> dict[str, Any] | None:
        answer = await real(self, meter)
        if answer is not None:
            put = {r["ID"]: r for r in _PUT[self.cfg.bucket]}
            for r in answer["Rules"]:
                r["Filter"] = put[r["ID"]]["Filter"]
                r["DeleteMarkerReplication"] = put[r["ID"]]["DeleteMarkerReplication"]
        return answer

    monkeypatch.setattr(S3Location, "replication", replication)


def replicate(server: Any, source: str, *rules_: dict[str, Any]) -> None:
    _PUT[source] = list(rules_)
    client(server).put_bucket_replication(Bucket=source, ReplicationConfiguration={
        "Role": "arn:aws:iam::123456789012:role/replication", "Rules": list(rules_)})


def rule(dest: str, *, rid: str = "dr", prefix: str = "data/", status: str = "Enabled", deletes: str = "Disabled",
         priority: int = 1, **destination: Any) -> dict[str, Any]:
    return {"ID": rid, "Priority": priority, "Status": status, "Filter": {"Prefix": prefix},
            "DeleteMarkerReplication": {"Status": deletes},
            "Destination": {"Bucket": f"arn:aws:s3:::{dest}", **destination}}


class Estate:
    """Production (versioned, us-east-1, 6 objects under ``data/``) and a copy bucket ``vault`` in eu-west-1
    (versioned and Object-Locked unless told)."""

    def __init__(self, tmp: Path, locs: Locations, server: Any, *, copy_region: str = FAR, lock: bool = True,
                 prod_server: Any = None, **prod_extra: Any) -> None:
        self.tmp, self.locs, self.server = tmp, locs, server
        self.prod = bucket(server, "repl-prod", versioned=True)
        upload(server, self.prod, sample_files(6, 64))
        self.vault = bucket(server, "repl-vault", versioned=True, lock=lock, region=copy_region)
        locs.s3("prod", prod_server or server, self.prod, site="dc-a", max_attempts=1, connect_timeout="1s",
                read_timeout="3s", **prod_extra)
        locs.s3("vault", server, self.vault, site="dc-b", region=copy_region)

    def config(self, **validator: Any) -> dict[str, Any]:
        return config(self.tmp, self.locs, ("prod", "data"), [("vault", "data")],
                      validators=[{"kind": "s3_replication", **validator}])


async def test_a_rule_that_replicates_the_prefix_to_the_far_copy_passes(tmp_path: Path, moto: MotoServer,
                                                                        locs: Locations) -> None:
    """An enabled rule on ``data/`` to the copy's bucket in another region, delete markers not replicated: ok, the
    rule named in an info finding; the newest objects HEADed (none FAILED). With the storage class and RTC asked for
    and written by the rule: ok; asked for and not written: failed."""
    e = Estate(tmp_path, locs, moto)
    replicate(moto, e.prod, rule(e.vault, StorageClass="STANDARD_IA",
                                 ReplicationTime={"Status": "Enabled", "Time": {"Minutes": 15}},
                                 Metrics={"Status": "Enabled", "EventThreshold": {"Minutes": 15}}))
    result, cfg = await run(tmp_path, e.config())
    assert result.outcome == Outcome.OK, result.findings
    assert codes(result) == {"replication_rule"}
    assert "'dr'" in result.findings[0].message and FAR in result.findings[0].message
    assert result.figures["rule_ok"] == 1 and result.figures["failed_objects"] == 0
    assert result.figures["sampled_objects"] == 6
    assert rules(cfg, result)["copies"] != "pass"  # a rule proves no copy's content
    strict, _ = await run(tmp_path, e.config(storage_class="STANDARD_IA", replication_time_control=True))
    assert strict.outcome == Outcome.OK, strict.findings
    glacier, _ = await run(tmp_path, e.config(storage_class="GLACIER"))
    assert glacier.outcome == Outcome.FAILED and critical(glacier) == ["replication_storage_class"]
    replicate(moto, e.prod, rule(e.vault))
    no_rtc, _ = await run(tmp_path, e.config(replication_time_control=True))
    assert no_rtc.outcome == Outcome.FAILED and critical(no_rtc) == ["replication_rtc_missing"]
    assert no_rtc.figures["rule_ok"] == 0


@pytest.mark.usefixtures("aws_fields")
async def test_no_rule_for_the_prefix_fails(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """No replication configuration at all, a rule for another prefix only, and a rule filtered by a tag (it
    covers some objects only): each is `replication_rule_missing`."""
    e = Estate(tmp_path, locs, moto)
    none, _ = await run(tmp_path, e.config())
    assert none.outcome == Outcome.FAILED and critical(none) == ["replication_rule_missing"]
    assert "no replication configuration" in none.findings[0].message
    replicate(moto, e.prod, rule(e.vault, prefix="other/"))
    other, _ = await run(tmp_path, e.config())
    assert other.outcome == Outcome.FAILED and critical(other) == ["replication_rule_missing"]
    tagged = rule(e.vault)
    tagged["Filter"] = {"And": {"Prefix": "data/", "Tags": [{"Key": "dr", "Value": "yes"}]}}
    replicate(moto, e.prod, tagged)
    tag, _ = await run(tmp_path, e.config())
    assert tag.outcome == Outcome.FAILED and critical(tag) == ["replication_rule_missing"]
    # A rule on the whole bucket (empty prefix) covers the asset's prefix.
    replicate(moto, e.prod, rule(e.vault, prefix=""))
    whole, _ = await run(tmp_path, e.config())
    assert whole.outcome == Outcome.OK, whole.findings


async def test_a_disabled_rule_and_a_wrong_destination_fail(tmp_path: Path, moto: MotoServer,
                                                           locs: Locations) -> None:
    """The rule covering the prefix is Disabled: `replication_rule_disabled`; an enabled rule to a bucket that is
    none of the asset's copies: `replication_wrong_destination` (it names that bucket)."""
    e = Estate(tmp_path, locs, moto)
    replicate(moto, e.prod, rule(e.vault, status="Disabled"))
    off, _ = await run(tmp_path, e.config())
    assert off.outcome == Outcome.FAILED and critical(off) == ["replication_rule_disabled"]
    stray = bucket(moto, "repl-stray", versioned=True, region=FAR)
    replicate(moto, e.prod, rule(stray))
    wrong, _ = await run(tmp_path, e.config())
    assert wrong.outcome == Outcome.FAILED and critical(wrong) == ["replication_wrong_destination"]
    assert stray in next(f.message for f in wrong.findings if f.code == "replication_wrong_destination")
    # The nearest miss is reported when several rules cover the prefix; one good rule among them decides.
    replicate(moto, e.prod, rule(stray, rid="a", priority=2), rule(e.vault, rid="b", priority=1, status="Disabled"))
    near, _ = await run(tmp_path, e.config())
    assert critical(near) == ["replication_wrong_destination"]
    replicate(moto, e.prod, rule(stray, rid="a", priority=2), rule(e.vault, rid="b", priority=1))
    good, _ = await run(tmp_path, e.config())
    assert good.outcome == Outcome.OK, good.findings


async def test_a_destination_in_productions_region_fails(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """The copy's bucket is observed in us-east-1, production's own region: one failure domain."""
    e = Estate(tmp_path, locs, moto, copy_region="us-east-1")
    replicate(moto, e.prod, rule(e.vault))
    result, _ = await run(tmp_path, e.config())
    assert result.outcome == Outcome.FAILED and critical(result) == ["replication_same_region"]


@pytest.mark.usefixtures("aws_fields")
async def test_delete_markers_to_an_unlocked_destination_are_a_warning(tmp_path: Path, moto: MotoServer,
                                                                       locs: Locations) -> None:
    """Delete-marker replication to a versioned bucket without Object Lock: ok with the
    `replication_deletes_propagate` warning; to a versioned, Object-Locked bucket: no warning."""
    e = Estate(tmp_path, locs, moto, lock=False)
    replicate(moto, e.prod, rule(e.vault, deletes="Enabled"))
    result, _ = await run(tmp_path, e.config())
    assert result.outcome == Outcome.OK
    warning = next(f for f in result.findings if f.code == "replication_deletes_propagate")
    assert warning.severity == Severity.WARNING and warning.subject == "vault"
    assert "Object Lock off" in warning.message
    locked = Estate(tmp_path, Locations(locs.monkeypatch), moto, lock=True)
    replicate(moto, locked.prod, rule(locked.vault, deletes="Enabled"))
    quiet, _ = await run(tmp_path, locked.config())
    assert quiet.outcome == Outcome.OK and codes(quiet) == {"replication_rule"}


async def test_objects_whose_replication_failed_fail_the_run(tmp_path: Path, moto: MotoServer,
                                                              locs: Locations) -> None:
    """Production's S3 Inventory report lists two of its objects with replication status FAILED (the others
    COMPLETED): `replication_failed_objects` names them and the run fails although the rule is right. A report
    saying COMPLETED everywhere: ok, every status from the report."""
    reports = bucket(moto, "repl-inv")
    locs.s3("inv", moto, reports, site="dc-a")
    e = Estate(tmp_path, locs, moto, inventory={"location": "inv", "configuration_id": "daily"})
    replicate(moto, e.prod, rule(e.vault))
    rows = take_inventory(moto, e.prod)
    for row in rows:
        row["replication_status"] = "FAILED" if row["key"] in ("data/dir1/file-0001.bin", "data/file-0004.bin") \
            else "COMPLETED"
    await asyncio.sleep(1.1)  # the report is taken after the objects' last second
    write_report(moto, reports, prefix="", source_bucket=e.prod, config_id="daily", rows=rows)
    result, _ = await run(tmp_path, e.config())
    assert result.outcome == Outcome.FAILED, result.findings
    assert critical(result) == ["replication_failed_objects"]
    message = next(f.message for f in result.findings if f.code == "replication_failed_objects")
    assert "2 of the 6" in message and "data/dir1/file-0001.bin" in message and "data/file-0004.bin" in message
    assert result.figures["failed_objects"] == 2 and result.figures["rule_ok"] == 1
    for row in rows:
        row["replication_status"] = "COMPLETED"
    await asyncio.sleep(1.1)  # a newer report (the same minute's manifest replaced, or the next minute's)
    write_report(moto, reports, prefix="", source_bucket=e.prod, config_id="daily", rows=rows)
    fixed, _ = await run(tmp_path, e.config())
    assert fixed.outcome == Outcome.OK, fixed.findings
    assert fixed.figures["failed_objects"] == 0
    samples = list(_project([Latest("data", None, result), Latest("data", None, fixed)]))
    assert (FAMILIES[1].name, ("data",), 2.0) in samples and (FAMILIES[0].name, ("data",), 1.0) in samples


async def test_production_unreadable_is_error_not_failed(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """Nothing listening at production's endpoint, and a proxy answering 503 SlowDown to every request: could not
    check, never failed."""
    nobody = SimpleNamespace(endpoint_url=f"http://127.0.0.1:{free_port()}", access_key=moto.access_key,
                             secret_key=moto.secret_key, region=moto.region)
    e = Estate(tmp_path, locs, moto, prod_server=nobody)
    replicate(moto, e.prod, rule(e.vault))
    result, cfg = await run(tmp_path, e.config())
    assert result.outcome == Outcome.ERROR and critical(result) == []
    assert codes(result) == {"unreachable"}
    assert rules(cfg, result)["restore_errors"] == "unknown"
    proxy = FaultProxy("127.0.0.1", moto.port).start()
    try:
        proxy.set(Fault.SLOWDOWN)
        slow = SimpleNamespace(endpoint_url=proxy.endpoint_url, access_key=moto.access_key,
                               secret_key=moto.secret_key, region=moto.region)
        e2 = Estate(tmp_path, Locations(locs.monkeypatch), moto, prod_server=slow)
        replicate(moto, e2.prod, rule(e2.vault))
        throttled, _ = await run(tmp_path, e2.config())
    finally:
        proxy.stop()
    assert throttled.outcome == Outcome.ERROR and critical(throttled) == []
    # HeadBucket answered 503 with no body: botocore reports the connection, not the throttling.
    assert [(f.code, f.subject) for f in throttled.findings] == [("unreachable", "production")]


async def test_a_destination_whose_region_is_unreadable_is_error_even_beside_a_near_miss(
        tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """Two rules: the first (higher priority) to copy `vault`, whose endpoint nothing answers (its region cannot be
    read), the second to copy `near` in production's own region. The first rule may well prove the copy: could not
    check (`error`, the copy's `unreachable` finding), never `replication_same_region`. With `vault` readable the
    first rule decides: ok."""
    e = Estate(tmp_path, locs, moto)
    near = bucket(moto, "repl-near", versioned=True, lock=True, region="us-east-1")
    locs.s3("near", moto, near, site="dc-c")
    replicate(moto, e.prod, rule(e.vault, rid="far", priority=2), rule(near, rid="same", priority=1))

    def two_copies() -> dict[str, Any]:
        return config(tmp_path, locs, ("prod", "data"), [("vault", "data"), ("near", "data")],
                      validators=[{"kind": "s3_replication"}])

    good, _ = await run(tmp_path, two_copies())
    assert good.outcome == Outcome.OK, good.findings
    nobody = SimpleNamespace(endpoint_url=f"http://127.0.0.1:{free_port()}", access_key=moto.access_key,
                             secret_key=moto.secret_key, region=FAR)
    locs.s3("vault", nobody, e.vault, site="dc-b", region=FAR, max_attempts=1, connect_timeout="1s")
    unknown, _ = await run(tmp_path, two_copies())
    assert unknown.outcome == Outcome.ERROR and critical(unknown) == [], unknown.findings
    assert ("unreachable", "vault") in [(f.code, f.subject) for f in unknown.findings]
    assert ("replication_same_region", Severity.WARNING) in [(f.code, f.severity) for f in unknown.findings]


async def test_a_refused_status_read_stops_the_others(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """Production answers every object HEAD 503 (through a real proxy; the bucket itself answers): could not check
    (error), and the HEADs still queued behind the first refusal are cancelled with the run, not sent after it."""
    proxy = RecordingProxy("127.0.0.1", moto.port, refuse_object_heads=503)
    proxy.start()
    try:
        via = SimpleNamespace(endpoint_url=proxy.endpoint_url, access_key=moto.access_key,
                              secret_key=moto.secret_key, region=moto.region)
        e = Estate(tmp_path, locs, moto, prod_server=via, head_concurrency=1)
        replicate(moto, e.prod, rule(e.vault))
        result, _ = await run(tmp_path, e.config())
        await asyncio.sleep(1.0)  # time for HEADs left running to be sent
        proxy.settle()
        heads = [r for r in proxy.snapshot() if r.method == "HEAD" and r.key]
    finally:
        proxy.stop()
    assert result.outcome == Outcome.ERROR and critical(result) == [], result.findings
    keys = {r.key for r in heads}  # each HEAD as retried by the location
    assert 1 <= len(keys) <= 2, heads  # 6 objects: the first refused, at most one more already on its way


def test_config_is_checked(tmp_path: Path, locs: Locations, moto: MotoServer) -> None:
    """Production on a filesystem, and an unknown copy, are config errors with their paths."""
    (tmp_path / "p").mkdir()
    locs.fs("p", tmp_path / "p", site="dc-a")
    locs.s3("vault", moto, "any-bucket", site="dc-b")
    fs_prod = config(tmp_path, locs, ("p", "data"), [("vault", "data")], validators=[{"kind": "s3_replication"}])
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, fs_prod)
    assert "production must be on an S3 location" in str(err.value)
    locs.s3("prod", moto, "other-bucket", site="dc-a")
    unknown = config(tmp_path, locs, ("prod", "data"), [("vault", "data")],
                     validators=[{"kind": "s3_replication", "copies": ["nowhere"]}])
    with pytest.raises(ConfigError) as err:
        parse(tmp_path, unknown)
    assert "assets.data.validators[0].copies[0]" in str(err.value)
