"""Signed seals (``drwatch seal --sign``, ``seal_signature``): an asset that requires them fails a seal that is
unsigned, signed with another key, or edited after signing, in every validator that reads seals (they all
open seals through ``manifest.aread`` / ``drwatch.formats.seals``); a public key that cannot be read is `error`.
Real key files (``drwatch seal-keygen`` and openssl's PEM format), real seals, real validator runs.

Also: a configured seal that could not be read (its directory or production not mounted) is `error`, never
"never sealed"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drwatch.core.model import Outcome, Severity
from tests.support.helpers import basic_config, populate, run_cli, write_config, write_tree
from tests.support.s3helpers import Locations, codes, config, run
from tests.support.s3servers import MotoServer
from tests.test_replica import run_replica

FILES = {"a.bin": b"alpha" * 100, "dir/b.txt": b"bravo\n", "dir/c.bin": bytes(range(256)) * 4}


def keypair(tmp: Path, name: str) -> tuple[Path, Path]:
    private, public = tmp / f"{name}.key", tmp / f"{name}.pub"
    out = run_cli("seal-keygen", "--private-key", str(private), "--public-key", str(public))
    assert out.returncode == 0, out.stderr
    assert private.stat().st_mode & 0o077 == 0
    return private, public


def estate(tmp: Path, locs: Locations, public: Path | None, required: bool = True,
           validators: tuple[dict[str, Any], ...] = ({"kind": "replica"},)) -> dict[str, Any]:
    write_tree(tmp / "prod" / "data", FILES)
    write_tree(tmp / "disk1" / "data", FILES)
    locs.fs("prod", tmp / "prod", site="dc-a")
    locs.fs("disk1", tmp / "disk1", site="dc-b")
    cfg = config(tmp, locs, ("prod", "data"), [("disk1", "data")], validators=validators)
    if public is not None:
        cfg["assets"]["data"]["seal_signature"] = {"public_key_path": str(public), "required": required}
    return cfg


def seal(tmp: Path, key: Path | None = None) -> Path:
    args = ["seal", "--location-path", str(tmp / "prod" / "data")]
    out = run_cli(*args, *(["--sign", str(key)] if key is not None else []))
    assert out.returncode == 0, out.stderr
    return tmp / "prod" / "data" / ".drwatch-manifest.jsonl"


async def test_signed_seal_verifies_and_unsigned_fails_when_required(tmp_path: Path, locs: Locations) -> None:
    """A seal signed with the backup job's key is ok; the same data sealed without --sign is `failed`
    (seal_unsigned) when the asset requires signatures, and ok when it only verifies signatures present."""
    private, public = keypair(tmp_path, "job")
    cfg = estate(tmp_path, locs, public)
    path = seal(tmp_path, private)
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["drwatch_signature"] == 1 and last["algorithm"] == "ed25519"
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings

    seal(tmp_path)  # a new seal, unsigned
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert [(f.severity, f.code) for f in result.findings if f.subject == "manifest"] == [
        (Severity.CRITICAL, "seal_unsigned")]
    cfg["assets"]["data"]["seal_signature"]["required"] = False
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.OK, result.findings


async def test_seal_edited_after_signing_or_signed_by_another_key_fails(tmp_path: Path, locs: Locations) -> None:
    """The attack a signature stops: production is corrupted and the seal edited to match it (the good copy
    would then be blamed). The edited seal's signature no longer verifies: `failed`, seal_signature_invalid,
    and the copy is not judged against it. A seal signed with a key other than the configured one fails too."""
    private, public = keypair(tmp_path, "job")
    cfg = estate(tmp_path, locs, public)
    path = seal(tmp_path, private)
    (tmp_path / "prod" / "data" / "dir" / "b.txt").write_bytes(b"BRAVO\n")
    lines = path.read_text().splitlines()
    forged = run_cli("seal", "--location-path", str(tmp_path / "prod" / "data"), "--out", "-").stdout.splitlines()
    edited = [next(f for f in forged[1:] if json.loads(f)["path"] == json.loads(line).get("path", ""))
              if json.loads(line).get("path") == "dir/b.txt" else line for line in lines]
    assert edited != lines
    path.write_text("\n".join(edited) + "\n")
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert "seal_signature_invalid" in codes(result)
    assert "content_mismatch" not in codes(result)

    other, _ = keypair(tmp_path, "intruder")
    (tmp_path / "prod" / "data" / "dir" / "b.txt").write_bytes(FILES["dir/b.txt"])
    seal(tmp_path, other)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    [finding] = [f for f in result.findings if f.code == "seal_signature_invalid"]
    assert "another key" in finding.message


async def test_missing_public_key_is_error(tmp_path: Path, locs: Locations) -> None:
    """The configured public key file is not there (or is not a key): nothing could be checked: `error`."""
    private, _ = keypair(tmp_path, "job")
    cfg = estate(tmp_path, locs, tmp_path / "absent.pub")
    seal(tmp_path, private)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR, result.findings
    assert codes(result) == {"manifest_unreadable"}
    not_a_key = tmp_path / "garbage.pub"
    not_a_key.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    cfg["assets"]["data"]["seal_signature"]["public_key_path"] = str(not_a_key)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR


@pytest.mark.parametrize("kind", ["dataset", "model_weights"])
async def test_other_seal_readers_require_the_signature_too(tmp_path: Path, locs: Locations, kind: str) -> None:
    """dataset and model_weights read the seal through the same point: unsigned fails, signed passes."""
    private, public = keypair(tmp_path, "job")
    cfg = estate(tmp_path, locs, public, validators=({"kind": kind},))
    seal(tmp_path)
    result, _ = await run(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED
    assert "seal_unsigned" in codes(result)
    seal(tmp_path, private)
    result, _ = await run(tmp_path, cfg)
    assert "seal_unsigned" not in codes(result) and "seal_signature_invalid" not in codes(result)


def test_sign_key_problems_never_name_the_key(tmp_path: Path) -> None:
    """--sign with a missing or non-key file refuses (66, nothing written) without printing the key's path;
    an openssl-style PEM key (PKCS#8) is accepted."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    write_tree(tmp_path / "prod" / "data", FILES)
    secret_dir = tmp_path / "very-secret-key-location"
    secret_dir.mkdir()
    for key in (secret_dir / "absent.pem", secret_dir / "garbage.pem"):
        if key.name == "garbage.pem":
            key.write_text("not a key")
        out = run_cli("seal", "--location-path", str(tmp_path / "prod" / "data"), "--sign", str(key))
        assert out.returncode == 66
        assert "very-secret-key-location" not in out.stderr + out.stdout
        assert not (tmp_path / "prod" / "data" / ".drwatch-manifest.jsonl").exists()
    pem = secret_dir / "openssl.pem"
    pem.write_bytes(Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    out = run_cli("seal", "--location-path", str(tmp_path / "prod" / "data"), "--sign", str(pem))
    assert out.returncode == 0, out.stderr
    assert "very-secret-key-location" not in out.stderr


async def test_configured_seal_that_cannot_be_read_is_error(tmp_path: Path) -> None:
    """`manifest:` names a seal outside production. Production unmounted with the seal inside it, or the
    seal's own directory unmounted: could not read (error, manifest_unreadable), never "never sealed". Only a
    readable directory without the seal proves it was never sealed (failed, manifest_missing)."""
    populate(tmp_path)
    seals = tmp_path / "seals"
    seals.mkdir()
    cfg = basic_config(tmp_path, manifest=str(seals / "data.jsonl"))
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.FAILED and "manifest_missing" in codes(result)

    cfg = basic_config(tmp_path, manifest=str(tmp_path / "not-mounted" / "data.jsonl"))
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR, result.findings
    assert codes(result) == {"manifest_unreadable"}

    (tmp_path / "prod").rename(tmp_path / "prod-away")
    cfg = basic_config(tmp_path, manifest=str(tmp_path / "prod" / "data" / "SEAL.jsonl"))
    result = await run_replica(tmp_path, cfg)
    assert result.outcome == Outcome.ERROR, result.findings
    assert "manifest_missing" not in codes(result)


def test_s3_seal_is_signed_the_same_way(moto: MotoServer, tmp_path: Path) -> None:
    """`drwatch seal s3://... --sign` writes the same trailing signature: it verifies with the public key
    through the one seal-reading point, and one edited byte makes it invalid."""
    from drwatch.formats.manifest import SealSignatureInvalid, check_signature
    from drwatch.formats.sealsign import SealTrust

    private, public = keypair(tmp_path, "job")
    client = moto.client()
    client.create_bucket(Bucket="signme")
    for i in range(5):
        client.put_object(Bucket="signme", Key=f"rp/obj-{i}", Body=bytes([i]) * (100 + i))
    cfg = write_config(tmp_path / "drwatch.yaml", {
        "locations": {"bucket": {"kind": "s3", "bucket": "signme", "endpoint_url": moto.endpoint_url,
                                 "region": "us-east-1", "addressing_style": "path",
                                 "access_key_id_env": "SIGN_AK", "secret_access_key_env": "SIGN_SK"}}})
    out_path = tmp_path / "seal.jsonl"
    out = run_cli("seal", "s3://signme/rp", "--config", str(cfg), "--location", "bucket", "--sign", str(private),
                  "--out", str(out_path), env={"SIGN_AK": "test", "SIGN_SK": "test"})
    assert out.returncode == 0, out.stderr
    assert "signed (key " in out.stderr
    with out_path.open("rb") as fh:
        check_signature(fh, SealTrust(public))
    out_path.write_bytes(out_path.read_bytes().replace(b'"obj-1"', b'"obj-x"'))
    with out_path.open("rb") as fh, pytest.raises(SealSignatureInvalid):
        check_signature(fh, SealTrust(public))
