"""`drwatch demo --s3-endpoint`: the optional S3 part of the demo estate, against a real S3 server."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.helpers import run_cli
from tests.support.s3servers import MotoServer


def test_demo_with_s3_part(moto: MotoServer, tmp_path: Path) -> None:
    """The S3 asset has a versioned production bucket and a COMPLIANCE-locked vault: the vault is
    immutable, the canary probe passes, and the table shows why the asset is not yet compliant."""
    env = {"DEMO_AK": "test", "DEMO_SK": "test"}
    out = run_cli("demo", "--dir", str(tmp_path / "demo"), "--s3-endpoint", moto.endpoint_url,
                  "--s3-access-key-env", "DEMO_AK", "--s3-secret-key-env", "DEMO_SK", env=env)
    assert out.returncode == 0, out.stderr
    cfg = tmp_path / "demo" / "drwatch.yaml"
    res = run_cli("check", "--config", str(cfg), "--asset", "checkpoints", "--output", "json", env=env)
    doc = json.loads(res.stdout)
    by_validator = {r["validator"]: r for r in doc["results"]}
    assert by_validator["replica"]["outcome"] == "ok", by_validator["replica"]["findings"]
    assert by_validator["immutability_probe"]["outcome"] == "ok", by_validator["immutability_probe"]
    vault = next(c for c in by_validator["replica"]["copies"] if c["copy"] == "vault")
    assert vault["immutable"] is True and vault["lock"] == {"compliance": 3}
    rules = doc["assets"]["checkpoints"]["rules"]
    assert rules["immutable"]["state"] == "pass"
    assert rules["media"]["state"] == "pass"  # object storage + disk
    assert rules["copies"]["state"] == "pass"
    # same endpoint, same credentials for production and vault: reported, and the region is observed
    codes = {f["code"] for f in by_validator["replica"]["findings"]}
    assert "shared_credentials" in codes
