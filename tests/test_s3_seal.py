"""`drwatch seal s3://bucket/prefix`: a manifest of a recovery point in S3, made by reading only."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tests.support.helpers import run_cli, write_config
from tests.support.s3servers import MotoServer


def _versions(client: object, bucket: str) -> list[tuple[str, str]]:
    resp = client.list_object_versions(Bucket=bucket)  # type: ignore[attr-defined]
    return sorted((v["Key"], v["VersionId"]) for v in resp.get("Versions", []))


def test_seal_s3_prefix_records_sizes_and_sha256(moto: MotoServer, tmp_path: Path) -> None:
    """Objects with and without a stored SHA256 checksum are sealed with their true sha256; nothing is
    written to the bucket; the manifest then verifies a local copy with the replica validator."""
    client = moto.client()
    client.create_bucket(Bucket="sealme")
    client.put_bucket_versioning(Bucket="sealme", VersioningConfiguration={"Status": "Enabled"})
    bodies = {f"rp/{'sub/' if i % 3 == 0 else ''}obj-{i:02d}": os.urandom(500 + i) for i in range(12)}
    for i, (key, body) in enumerate(sorted(bodies.items())):
        extra = {"ChecksumAlgorithm": "SHA256"} if i % 2 else {}
        client.put_object(Bucket="sealme", Key=key, Body=body, **extra)
    client.put_object(Bucket="sealme", Key="other/not-in-prefix", Body=b"x")
    before = _versions(client, "sealme")
    cfg = write_config(tmp_path / "drwatch.yaml", {
        "store": {"sqlite": str(tmp_path / "s.sqlite")},
        "locations": {"bucket": {"kind": "s3", "bucket": "sealme", "endpoint_url": moto.endpoint_url,
                                 "region": "us-east-1", "addressing_style": "path",
                                 "access_key_id_env": "SEAL_AK", "secret_access_key_env": "SEAL_SK"}},
    })
    env = {"SEAL_AK": "test", "SEAL_SK": "test"}
    out = run_cli("seal", "s3://sealme/rp", "--config", str(cfg), "--location", "bucket", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    head = json.loads(lines[0])
    entries = [json.loads(line) for line in lines[1:]]
    assert head["files"] == len(bodies) and head["bytes"] == sum(map(len, bodies.values()))
    assert [e["path"] for e in entries] == sorted(k.removeprefix("rp/") for k in bodies)
    for e in entries:
        assert e["sha256"] == hashlib.sha256(bodies["rp/" + e["path"]]).hexdigest()
    assert _versions(client, "sealme") == before  # read only

    # The seal verifies a local copy (one object damaged) as the reference of the replica validator.
    manifest = tmp_path / "seal.jsonl"
    manifest.write_text(out.stdout)
    for key, body in bodies.items():
        p = tmp_path / "copy" / "data" / key.removeprefix("rp/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
    (tmp_path / "prod" / "data").mkdir(parents=True)
    victim = tmp_path / "copy" / "data" / "obj-01"
    victim.write_bytes(b"\0" * victim.stat().st_size)
    check_cfg = write_config(tmp_path / "check.yaml", {
        "store": {"sqlite": str(tmp_path / "c.sqlite")},
        "locations": {"prod": {"kind": "filesystem", "path": str(tmp_path / "prod"), "site": "a"},
                      "copy": {"kind": "filesystem", "path": str(tmp_path / "copy"), "site": "b"}},
        "assets": {"data": {"rpo": "1d", "manifest": str(manifest),
                            "production": {"location": "prod", "prefix": "data"},
                            "copies": [{"location": "copy", "prefix": "data"}],
                            "validators": [{"kind": "replica"}]}},
    })
    res = run_cli("check", "--config", str(check_cfg), "--output", "json")
    doc = json.loads(res.stdout)
    [result] = doc["results"]
    assert result["outcome"] == "failed"
    assert [f["subject"] for f in result["findings"] if f["code"] == "content_mismatch"] == ["copy:obj-01"]


def test_seal_s3_prefix_with_blake3_reads_every_object(moto: MotoServer, tmp_path: Path) -> None:
    """`--algorithm blake3`: no store keeps a BLAKE3 checksum, so every object — those with a stored SHA256
    checksum too — is read and hashed with BLAKE3; the header says so; nothing is written to the bucket."""
    import blake3

    client = moto.client()
    client.create_bucket(Bucket="sealb3")
    bodies = {f"rp/obj-{i:02d}": os.urandom(300 + i) for i in range(6)}
    for key, body in bodies.items():
        client.put_object(Bucket="sealb3", Key=key, Body=body, ChecksumAlgorithm="SHA256")
    cfg = write_config(tmp_path / "drwatch.yaml", {
        "store": {"sqlite": str(tmp_path / "s.sqlite")},
        "locations": {"bucket": {"kind": "s3", "bucket": "sealb3", "endpoint_url": moto.endpoint_url,
                                 "region": "us-east-1", "addressing_style": "path",
                                 "access_key_id_env": "SEAL_AK", "secret_access_key_env": "SEAL_SK"}},
    })
    out = run_cli("seal", "s3://sealb3/rp", "--config", str(cfg), "--location", "bucket", "--algorithm", "blake3",
                  env={"SEAL_AK": "test", "SEAL_SK": "test"})
    assert out.returncode == 0, out.stderr
    head, *lines = out.stdout.splitlines()
    assert json.loads(head)["algorithm"] == "blake3"
    entries = [json.loads(line) for line in lines]
    assert {e["path"]: e["blake3"] for e in entries} == {
        k.removeprefix("rp/"): blake3.blake3(v).hexdigest() for k, v in bodies.items()}
    assert not any("sha256" in e for e in entries)


def test_seal_s3_needs_a_location(moto: MotoServer, tmp_path: Path) -> None:
    """An s3:// URL without --location, or outside the location's bucket, is a usage error."""
    cfg = write_config(tmp_path / "drwatch.yaml", {
        "locations": {"b": {"kind": "s3", "bucket": "sealme", "endpoint_url": moto.endpoint_url}}})
    assert run_cli("seal", "s3://sealme/rp", "--config", str(cfg)).returncode != 0
    out = run_cli("seal", "s3://elsewhere/rp", "--config", str(cfg), "--location", "b")
    assert out.returncode != 0
    assert "not in bucket" in out.stderr


def test_seal_s3_unreachable_is_reported(tmp_path: Path) -> None:
    """A stopped endpoint gives a one-line error and exit 69, not a traceback."""
    server = MotoServer()
    server.start()
    endpoint = server.endpoint_url
    server.cleanup()
    cfg = write_config(tmp_path / "drwatch.yaml", {
        "locations": {"b": {"kind": "s3", "bucket": "sealme", "endpoint_url": endpoint, "max_attempts": 1,
                            "connect_timeout": "2s", "access_key_id_env": "SEAL_AK",
                            "secret_access_key_env": "SEAL_SK"}}})
    out = run_cli("seal", "s3://sealme/rp", "--config", str(cfg), "--location", "b",
                  env={"SEAL_AK": "test", "SEAL_SK": "test"})
    assert out.returncode == 69, out.stderr
    assert "Traceback" not in out.stderr

