"""The `terraform_state` validator against a real moto server (S3 and DynamoDB on the same port) and local files.

Each run goes through a real Runner (store, S3 client pool) as in the daemon; the lineage and serial checks read
the previous result from the same store, so they are checked across two runs with the runner closed in between (a
restart). Faults are real: an endpoint where nothing listens, a proxy answering every request 503 SlowDown, a lock
table that does not exist, a location directory that is not there. S3 ``LastModified`` cannot be set: the stale
cases move the run's clock instead.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from drwatch.core.errors import ConfigError
from drwatch.core.model import Outcome, Result, Severity
from drwatch.validators.plugin import Latest
from drwatch.validators.terraform import validator as terraform_state
from tests.faults.proxy import Fault, FaultProxy
from tests.support.helpers import free_port
from tests.support.s3helpers import Locations, bucket, client, codes, config, parse, run
from tests.support.s3servers import MotoServer, iam_moto_server

DAY = 86400.0
LINEAGE = "8a4b3c2d-0000-4000-8000-1234567890ab"


def state(serial: int = 7, lineage: str = LINEAGE, version: int = 4, region: str = "eu-west-1",
          account: str = "210987654321") -> bytes:
    """A version-4 state describing a VPC, an instance (availability zone) and an IAM role (global ARN), in
    ``account`` (by default not moto's 123456789012, the account of the credentials that read the bucket)."""
    return json.dumps({
        "version": version, "terraform_version": "1.9.5", "serial": serial, "lineage": lineage, "outputs": {},
        "resources": [
            {"mode": "managed", "type": "aws_vpc", "name": "main",
             "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
             "instances": [{"schema_version": 1, "attributes": {
                 "arn": f"arn:aws:ec2:{region}:{account}:vpc/vpc-0abc", "cidr_block": "10.0.0.0/16"}}]},
            {"mode": "managed", "type": "aws_instance", "name": "web",
             "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
             "instances": [{"schema_version": 1, "attributes": {"availability_zone": f"{region}a"}}]},
            {"mode": "managed", "type": "aws_iam_role", "name": "ops",
             "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
             "instances": [{"schema_version": 0, "attributes": {"arn": f"arn:aws:iam::{account}:role/ops"}}]},
        ],
    }).encode()


def dynamodb(server: MotoServer) -> Any:
    return boto3.client("dynamodb", endpoint_url=server.endpoint_url, region_name=server.region,
                        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)


def lock_table(server: MotoServer, name: str, *, key: str = "LockID") -> str:
    dynamodb(server).create_table(TableName=name, KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                                  AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                                  BillingMode="PAY_PER_REQUEST")
    return name


def digest(server: MotoServer, table: str, bucket_name: str, body: bytes, key: str = "env/terraform.tfstate") -> None:
    dynamodb(server).put_item(TableName=table, Item={"LockID": {"S": f"{bucket_name}/{key}-md5"},
                                                     "Digest": {"S": hashlib.md5(body).hexdigest()}})


def s3_estate(tmp: Path, locs: Locations, server: Any, *, body: bytes | None = None, versioned: bool = True,
              lock: bool = False, copy_region: str = "us-west-2", **validator: Any) -> tuple[dict[str, Any], str]:
    """The state at ``s3://<bucket>/env/terraform.tfstate`` (moto's us-east-1), one copy bucket in
    ``copy_region``; returns (config, state bucket)."""
    name = bucket(server, "tfstate", versioned=versioned, lock=lock)
    if body is not None:
        client(server).put_object(Bucket=name, Key="env/terraform.tfstate", Body=body)
    copy = bucket(server, "tfcopy", region=copy_region)
    locs.s3("state", server, name, site="dc-a", max_attempts=1, connect_timeout="1s", read_timeout="3s")
    locs.s3("copy", server, copy, site="dc-b", region=copy_region, max_attempts=1, connect_timeout="1s",
            read_timeout="3s")
    return config(tmp, locs, ("state", "env"), [("copy", "env")],
                  validators=[{"kind": "terraform_state", **validator}]), name


def crit(result: Result) -> list[str]:
    return sorted(f.code for f in result.findings if f.severity == Severity.CRITICAL)


def warn(result: Result) -> list[str]:
    return sorted(f.code for f in result.findings if f.severity == Severity.WARNING)


# --- S3 backend (moto) -------------------------------------------------------------------------------


async def test_s3_state_passes_and_history_survives_a_restart(tmp_path: Path, moto: MotoServer,
                                                             locs: Locations) -> None:
    """A versioned bucket, a lock table with the matching digest, a copy in another region: ok, the serial and
    the lineage recorded. A new runner on the same store (a restart) then sees the serial go back, and a state of
    another lineage: each fails."""
    body = state(serial=7)
    table = lock_table(moto, f"tflock-{time.time_ns()}")
    cfg, name = s3_estate(tmp_path, locs, moto, body=body, dynamodb_table=table)
    digest(moto, table, name, body)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert [f.code for f in result.findings] == ["state_lineage"]
    assert result.findings[0].subject == LINEAGE
    assert result.figures["serial"] == 7 and result.figures["resources"] == 3
    assert result.figures["regions_described"] == 1  # eu-west-1 (the IAM ARN names no region)
    assert result.figures["last_modified_timestamp_seconds"] == pytest.approx(time.time(), abs=60)

    older = state(serial=5)
    client(moto).put_object(Bucket=name, Key="env/terraform.tfstate", Body=older)
    digest(moto, table, name, older)
    back, _ = await run(tmp_path, cfg)
    assert back.outcome == Outcome.FAILED and crit(back) == ["serial_went_back"]
    assert "5" in next(f.message for f in back.findings if f.code == "serial_went_back")

    other = state(serial=9, lineage="ffffffff-0000-4000-8000-000000000000")
    client(moto).put_object(Bucket=name, Key="env/terraform.tfstate", Body=other)
    digest(moto, table, name, other)
    replaced, _ = await run(tmp_path, cfg)
    assert replaced.outcome == Outcome.FAILED and crit(replaced) == ["lineage_changed"]
    again, _ = await run(tmp_path, cfg)  # the next run takes the new lineage as the reference
    assert again.outcome == Outcome.OK, again.findings
    vcfg = parse(tmp_path, cfg).assets["data"].validators[0]
    samples = list(terraform_state.project([Latest("data", vcfg, again)]))
    assert samples == [("drwatch_terraform_state_serial", ("data", "terraform_state"), 9.0),
                       ("drwatch_terraform_state_last_modified_timestamp_seconds", ("data", "terraform_state"),
                        again.figures["last_modified_timestamp_seconds"])]

    # A run that could not reach S3 carries the reference forward: the serial going back is still seen after it.
    endpoint = cfg["locations"]["state"]["endpoint_url"]
    cfg["locations"]["state"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    down, _ = await run(tmp_path, cfg)
    assert down.outcome == Outcome.ERROR and down.figures["serial"] == 9
    assert [f.subject for f in down.findings if f.code == "state_lineage"] == ["ffffffff-0000-4000-8000-000000000000"]
    cfg["locations"]["state"]["endpoint_url"] = endpoint
    client(moto).put_object(Bucket=name, Key="env/terraform.tfstate", Body=older)
    digest(moto, table, name, older)
    still, _ = await run(tmp_path, cfg)
    assert crit(still) == ["lineage_changed"]  # 'older' has the first lineage: compared with the carried one


async def test_s3_bad_states_fail(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """Not JSON (also gzip-compressed, or a damaged gzip stream), version 3, no lineage, a missing object,
    Terraform's backend pointer file backed up as if it were the state: each fails with its code, and the message
    says which look-alike."""
    pointer = {"version": 3, "serial": 1, "lineage": "x", "backend": {"type": "s3", "config": {"bucket": "tf"}}}
    encrypted = {"serial": 7, "lineage": "x", "meta": {"key_provider.pbkdf2.main": "e30="},
                 "encrypted_data": "AAAA", "encryption_version": "v0"}
    for body, code, said in ((b"{ not json", "state_invalid", "not valid JSON"),
                             (state(version=3), "state_version", "the state has version 3;"),
                             (json.dumps({"version": 4, "serial": 1, "lineage": ""}).encode(), "state_invalid", ""),
                             (None, "state_missing", ""),
                             (json.dumps(pointer).encode(), "state_version", "backend pointer (.terraform/"),
                             (gzip.compress(b"{ not json"), "state_invalid", "not valid JSON"),
                             (gzip.compress(state())[:-12], "state_invalid", "cut short"),
                             (json.dumps({"serial": 1}).encode(), "state_version", "has no 'version' field")):
        cfg, _ = s3_estate(tmp_path, locs, moto, body=body, use_lockfile=True)
        result, _ = await run(tmp_path, cfg)
        assert result.outcome == Outcome.FAILED, (code, result.findings)
        assert crit(result) == [code], result.findings
        assert said in next(f.message for f in result.findings if f.code == code)
    # An OpenTofu-encrypted state is a valid state drwatch cannot read: could not check (error), never failed.
    cfg, _ = s3_estate(tmp_path, locs, moto, body=json.dumps(encrypted).encode(), use_lockfile=True)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR and crit(result) == [], result.findings
    assert "encrypted (OpenTofu state " in next(f.message for f in result.findings if f.code == "state_encrypted")
    # A gzip-compressed copy of a good state is read through.
    cfg, _ = s3_estate(tmp_path, locs, moto, body=gzip.compress(state(serial=7)), use_lockfile=True)
    result, _ = await run(tmp_path, cfg)
    assert not {"state_invalid", "state_version"} & set(crit(result)), result.findings
    assert result.figures["serial"] == 7


async def test_s3_stale_state_and_stale_lock(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """Three days later (the run's clock; RPO 1d) the state is stale; a lock file left for longer than
    ``lock_stale_after`` is the `stale_lock` warning."""
    cfg, name = s3_estate(tmp_path, locs, moto, body=state(), use_lockfile=True, lock_stale_after="1h",
                          within="1d")
    client(moto).put_object(Bucket=name, Key="env/terraform.tfstate.tflock", Body=b'{"ID":"x"}')
    fresh, _ = await run(tmp_path, cfg)
    assert fresh.outcome == Outcome.OK and warn(fresh) == [], fresh.findings
    later, _ = await run(tmp_path, cfg, clock=lambda: time.time() + 3 * DAY)
    assert later.outcome == Outcome.FAILED and crit(later) == ["stale"]
    assert warn(later) == ["stale_lock"]


async def test_s3_bucket_and_locking_posture(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """An unversioned bucket, a bucket without Object Lock where it is required, a lock table that does not
    exist, one keyed wrongly, a digest that does not match the state: each fails; no locking at all warns."""
    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(), versioned=False)
    result, _ = await run(tmp_path, cfg)
    assert crit(result) == ["bucket_not_versioned"] and warn(result) == ["no_state_locking"]

    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(), object_lock=True, use_lockfile=True)
    assert crit((await run(tmp_path, cfg))[0]) == ["bucket_not_locked"]
    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(), lock=True, object_lock=True, use_lockfile=True)
    locked, _ = await run(tmp_path, cfg)
    assert locked.outcome == Outcome.OK, locked.findings

    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(), dynamodb_table=f"never-made-{time.time_ns()}")
    assert crit((await run(tmp_path, cfg))[0]) == ["lock_table_missing"]
    wrong = lock_table(moto, f"tfwrong-{time.time_ns()}", key="id")
    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(), dynamodb_table=wrong)
    assert crit((await run(tmp_path, cfg))[0]) == ["lock_table_invalid"]
    table = lock_table(moto, f"tflock-{time.time_ns()}")
    cfg, name = s3_estate(tmp_path, locs, moto, body=state(serial=3), dynamodb_table=table)
    digest(moto, table, name, state(serial=2))
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED and crit(result) == ["lock_digest_mismatch"]


async def test_state_in_the_region_it_rebuilds(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """A state describing us-east-1 stored in us-east-1 (moto's bucket region), its only copy in us-east-1 too:
    `state_in_rebuilt_region` and `no_copy_outside_region` warnings, failures with ``region_policy: failure``."""
    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(region="us-east-1"), copy_region="us-east-1",
                       use_lockfile=True)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK and warn(result) == ["no_copy_outside_region", "state_in_rebuilt_region"]
    assert "copy: us-east-1" in next(f.message for f in result.findings if f.code == "no_copy_outside_region")
    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(region="us-east-1"), copy_region="us-east-1",
                       use_lockfile=True, region_policy="failure")
    strict, _ = await run(tmp_path, cfg)
    assert strict.outcome == Outcome.FAILED
    assert crit(strict) == ["no_copy_outside_region", "state_in_rebuilt_region"]
    # A copy in another region takes the second away; the state still lives where it rebuilds.
    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(region="us-east-1"), copy_region="eu-central-1",
                       use_lockfile=True)
    assert warn((await run(tmp_path, cfg))[0]) == ["state_in_rebuilt_region"]


async def test_state_in_the_account_it_rebuilds(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """The state's resources live in moto's account 123456789012, the account of the credentials that read the
    bucket (STS GetCallerIdentity on the same moto): `state_in_rebuilt_account`, a warning (ok), a failure with
    ``region_policy: failure``. A declared ``state_account`` elsewhere clears it (no STS call); STS where nothing
    listens is `account_unknown`, a warning (the state itself was still read and judged)."""
    body = state(account="123456789012")
    cfg, _ = s3_estate(tmp_path, locs, moto, body=body, use_lockfile=True)
    same, _ = await run(tmp_path, cfg)
    assert same.outcome == Outcome.OK and warn(same) == ["state_in_rebuilt_account"], same.findings
    said = next(f.message for f in same.findings if f.code == "state_in_rebuilt_account")
    assert "account 123456789012" in said and "GetCallerIdentity" in said
    assert same.figures["accounts_described"] == 1
    cfg, _ = s3_estate(tmp_path, locs, moto, body=body, use_lockfile=True, region_policy="failure")
    strict, _ = await run(tmp_path, cfg)
    assert strict.outcome == Outcome.FAILED and crit(strict) == ["state_in_rebuilt_account"]
    cfg, _ = s3_estate(tmp_path, locs, moto, body=body, use_lockfile=True, region_policy="failure",
                       state_account="999999999999", sts_endpoint_url=f"http://127.0.0.1:{free_port()}")
    elsewhere, _ = await run(tmp_path, cfg)
    assert elsewhere.outcome == Outcome.OK and warn(elsewhere) == [], elsewhere.findings
    cfg, _ = s3_estate(tmp_path, locs, moto, body=body, use_lockfile=True, region_policy="failure",
                       sts_endpoint_url=f"http://127.0.0.1:{free_port()}")
    unknown, _ = await run(tmp_path, cfg)
    assert unknown.outcome == Outcome.OK and warn(unknown) == ["account_unknown"], unknown.findings
    assert "STS GetCallerIdentity is unreachable" in next(f.message for f in unknown.findings
                                                          if f.code == "account_unknown")
    assert unknown.figures["serial"] == 7
    # The default state's resources live in another account: nothing to report.
    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(), use_lockfile=True)
    assert warn((await run(tmp_path, cfg))[0]) == []


def test_state_account_is_an_account_id_and_applies_to_s3(tmp_path: Path, locs: Locations) -> None:
    """``state_account`` must be 12 digits; it (and ``sts_endpoint_url``) are refused on a local state."""
    cfg, _ = fs_estate(tmp_path, locs, state(), state_account="1234")
    with pytest.raises(ConfigError, match="state_account"):
        parse(tmp_path, cfg)
    cfg, _ = fs_estate(tmp_path, locs, state(), state_account="123456789012")
    with pytest.raises(ConfigError, match="apply to an S3 backend only"):
        parse(tmp_path, cfg)


async def test_a_copy_whose_region_cannot_be_read_is_no_region_failure(tmp_path: Path, moto: MotoServer,
                                                                         locs: Locations) -> None:
    """The state describes eu-west-1; its only copy is a bucket nothing answers for (its region cannot be read).
    With ``region_policy: failure`` that is not `no_copy_outside_region` (failed): the copy may well be outside;
    the run could not check (error, `region_unknown` naming the copy). With the copy readable in us-west-2: ok."""
    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(region="eu-west-1"), use_lockfile=True,
                       region_policy="failure")
    good, _ = await run(tmp_path, cfg)
    assert good.outcome == Outcome.OK, good.findings
    cfg["locations"]["copy"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    unknown, _ = await run(tmp_path, cfg)
    assert unknown.outcome == Outcome.ERROR and crit(unknown) == [], unknown.findings
    assert warn(unknown) == ["region_unknown"] and "copy" in unknown.findings[0].message
    assert unknown.figures["serial"] == 7  # the state itself was read and judged


async def test_s3_and_dynamodb_unreachable_are_error(tmp_path: Path, moto: MotoServer, locs: Locations) -> None:
    """Nothing listening at the S3 endpoint, DynamoDB answering 503 SlowDown through a real proxy, and DynamoDB
    unreachable: error, never failed."""
    nobody = SimpleNamespace(endpoint_url=f"http://127.0.0.1:{free_port()}", access_key=moto.access_key,
                             secret_key=moto.secret_key, region=moto.region)
    locs.s3("state", nobody, "tfstate-nowhere", site="dc-a", max_attempts=1, connect_timeout="1s",
            read_timeout="2s")
    cfg = config(tmp_path, locs, ("state", "env"), [], validators=[{"kind": "terraform_state",
                                                                     "use_lockfile": True}])
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR and crit(result) == []
    assert codes(result) == {"unreachable"}, result.findings
    # Something already bad stays failed when a later step cannot be checked: a stale state, DynamoDB down.
    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(), dynamodb_table="any",
                       dynamodb_endpoint_url=f"http://127.0.0.1:{free_port()}")
    stale, _ = await run(tmp_path, cfg, clock=lambda: time.time() + 3 * DAY)
    assert stale.outcome == Outcome.FAILED and crit(stale) == ["stale"] and "unreachable" in codes(stale)

    table = lock_table(moto, f"tflock-{time.time_ns()}")
    proxy = FaultProxy("127.0.0.1", moto.port).start()
    try:
        proxy.fault = Fault.SLOWDOWN
        cfg, _ = s3_estate(tmp_path, locs, moto, body=state(), dynamodb_table=table,
                           dynamodb_endpoint_url=proxy.endpoint_url)
        throttled, _ = await run(tmp_path, cfg)
        assert throttled.outcome == Outcome.ERROR and crit(throttled) == [], throttled.findings
        assert "throttled" in str(throttled.findings)
    finally:
        proxy.stop()
    cfg, _ = s3_estate(tmp_path, locs, moto, body=state(), dynamodb_table=table,
                       dynamodb_endpoint_url=f"http://127.0.0.1:{free_port()}")
    down, _ = await run(tmp_path, cfg)
    assert down.outcome == Outcome.ERROR and "unreachable" in str(down.findings)


# --- local file ----------------------------------------------------------------------------------------


def fs_estate(tmp: Path, locs: Locations, body: bytes | None, **validator: Any) -> tuple[dict[str, Any], Path]:
    (tmp / "ops" / "infra").mkdir(parents=True, exist_ok=True)
    (tmp / "dr").mkdir(exist_ok=True)
    locs.fs("ops", tmp / "ops", site="dc-a", region="eu-west-1")
    locs.fs("dr", tmp / "dr", site="dc-b", region="eu-north-1")
    path = tmp / "ops" / "infra" / "terraform.tfstate"
    if body is not None:
        path.write_bytes(body)
    return config(tmp, locs, ("ops", "infra"), [("dr", "infra")],
                  validators=[{"kind": "terraform_state", **validator}]), path


async def test_local_state_pass_stale_future_and_invalid(tmp_path: Path, locs: Locations) -> None:
    """A local state (declared region eu-west-1, the region it describes): ok with the region warning; two days
    old (RPO 1d): stale; dated 2099: `time_in_future` and stale; truncated: invalid."""
    cfg, path = fs_estate(tmp_path, locs, state())
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings
    assert warn(result) == ["state_in_rebuilt_region"]  # the copy (eu-north-1) is outside: no second warning
    os.utime(path, (time.time() - 2 * DAY,) * 2)
    assert crit((await run(tmp_path, cfg))[0]) == ["stale"]
    os.utime(path, (4_070_908_800.0,) * 2)
    future, _ = await run(tmp_path, cfg)
    assert crit(future) == ["stale"] and warn(future) == ["state_in_rebuilt_region", "time_in_future"]
    path.write_bytes(state()[:100])
    assert crit((await run(tmp_path, cfg))[0]) == ["state_invalid"]
    path.unlink()
    assert crit((await run(tmp_path, cfg))[0]) == ["state_missing"]


async def test_local_location_not_there_is_error(tmp_path: Path, locs: Locations) -> None:
    cfg, _ = fs_estate(tmp_path, locs, state())
    (tmp_path / "ops").rename(tmp_path / "ops-unmounted")
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR and crit(result) == []
    assert codes(result) == {"location_unavailable"}, result.findings


def test_s3_options_on_a_local_state_are_a_config_error(tmp_path: Path, locs: Locations) -> None:
    cfg, _ = fs_estate(tmp_path, locs, state(), dynamodb_table="locks")
    with pytest.raises(ConfigError, match="dynamodb_table apply to an S3 backend only"):
        parse(tmp_path, cfg)


async def test_access_denied_to_s3_or_dynamodb_is_error(tmp_path: Path, locs: Locations) -> None:
    """A moto server of its own that enforces IAM (after the 3 requests that create a user allowed ``s3:*``
    only): DescribeTable with that user is AccessDeniedException, and S3 with a wrong secret key is denied; both
    `error` (``access_denied``), never failed."""
    with iam_moto_server("tf") as (server, access_key, secret_key):
        user = SimpleNamespace(endpoint_url=server.endpoint_url, port=server.port, region=server.region,
                               access_key=access_key, secret_key=secret_key,
                               client=lambda: boto3.client(
                                   "s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
                                   aws_access_key_id=access_key, aws_secret_access_key=secret_key))
        cfg, _ = s3_estate(tmp_path, locs, user, body=state(), dynamodb_table="tflock")
        ok_s3, _ = await run(tmp_path, cfg)  # S3 is allowed: the state is read, DynamoDB is not
        assert ok_s3.outcome == Outcome.ERROR and crit(ok_s3) == [], ok_s3.findings
        assert "access_denied" in codes(ok_s3) and ok_s3.figures["serial"] == 7
        cfg["locations"]["state"]["secret_access_key_env"] = "DRW_TF_WRONG_SECRET"
        locs.monkeypatch.setenv("DRW_TF_WRONG_SECRET", "not-the-secret")
        denied, _ = await run(tmp_path, cfg)
        assert denied.outcome == Outcome.ERROR and crit(denied) == [], denied.findings
        assert "access_denied" in codes(denied)
