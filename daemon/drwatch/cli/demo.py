"""``drwatch demo``: a realistic local estate with production and copies on different declared sites
and media, some compliant and some not, with the reasons visible in ``drwatch check``.

| asset          | what it shows                                                                 |
|----------------|-------------------------------------------------------------------------------|
| model-weights  | compliant: DR disk copy + attested offline tape vault (3-2-1-1-0 pass); the    |
|                | DR copy is observed on production's disk (same_failure_domain): the vault is   |
|                | the off-site copy; its recovery dependencies answer, but the Terraform state   |
|                | lives in production's site with no alternative (dependency_in_failure_domain)  |
| vector-index   | a shard in the DR copy has one flipped byte (same size): content mismatch;     |
|                | with model-weights a consistency group (same day, stamped embedding model)     |
| training-data  | two files missing from the DR copy                                             |
| feature-store  | newest recovery point older than its 1h RPO                                    |
| terraform-state| its USB copy is not mounted: could not check (unknown, not failed)             |
| checkpoints    | (with --s3-endpoint) S3 production, COMPLIANCE-locked S3 vault, disk DR copy; |
|                | the replication rule feeding the vault stays in production's region           |
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

from drwatch.formats.sealing import seal_directory
from drwatch.formats.seals import seal_digest_sync
from drwatch.storage.filesystem import MANIFEST_NAME

MARKER = ".drwatch-demo"


def default_demo_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "drwatch" / "demo"


def _write(path: Path, data: bytes, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def _fake_safetensors(rng: random.Random, first: int, tensors: int, rows: int, cols: int) -> tuple[bytes, list[str]]:
    """A structurally valid safetensors shard (BF16 tensors ``layers.<first..>.weight``) and its tensor names."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    names = []
    for i in range(first, first + tensors):
        size = rows * cols * 2
        names.append(f"layers.{i}.weight")
        header[names[-1]] = {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + rng.randbytes(offset), names


def _populate(root: Path, rng: random.Random) -> dict[str, Path]:
    prod = root / "sites" / "dc-a" / "prod"
    assets: dict[str, Path] = {}

    mw = prod / "model-weights"
    weight_map: dict[str, str] = {}
    for shard in (1, 2):
        name = f"model-0000{shard}-of-00002.safetensors"
        data, tensors = _fake_safetensors(rng, (shard - 1) * 8, 8, 256, 1024)
        _write(mw / name, data)
        weight_map.update(dict.fromkeys(tensors, name))
    index = {"metadata": {"total_size": 2 * 8 * 256 * 1024 * 2}, "weight_map": weight_map}
    _write(mw / "model.safetensors.index.json", json.dumps(index).encode())
    _write(mw / "config.json", b'{"architectures": ["DemoForCausalLM"], "hidden_size": 1024}\n')
    _write(mw / "tokenizer.json", json.dumps({"vocab": {f"tok{i}": i for i in range(2000)}}).encode())
    assets["model-weights"] = mw

    vi = prod / "vector-index"
    for shard in range(4):
        lines = [json.dumps({"id": f"doc-{shard}-{i}", "vector": [round(rng.uniform(-1, 1), 5) for _ in range(32)]})
                 for i in range(1500)]
        _write(vi / f"shard-{shard:03d}.jsonl", ("\n".join(lines) + "\n").encode())
    assets["vector-index"] = vi

    td = prod / "training-data"
    for split in ("train", "validation"):
        for part in range(60 if split == "train" else 12):
            rows = "\n".join(f"{i},{rng.random():.6f},{rng.choice(['cat', 'dog', 'bird'])}" for i in range(400))
            _write(td / split / f"part-{part:05d}.csv", f"id,score,label\n{rows}\n".encode())
    assets["training-data"] = td

    fs = prod / "feature-store"
    for table in ("users", "items", "interactions"):
        _write(fs / f"{table}.parquet", rng.randbytes(200_000))
    assets["feature-store"] = fs

    tf = prod / "terraform-state"
    _write(tf / "terraform.tfstate", json.dumps({
        "version": 4, "terraform_version": "1.9.5", "serial": 812, "lineage": "3f0c2a9e-5b1d-4c7e-9a42-0d6e8b1f7c35",
        "outputs": {}, "resources": [{"mode": "managed", "type": "aws_vpc", "name": "main", "instances": [
            {"attributes": {"arn": "arn:aws:ec2:eu-central-1:123456789012:vpc/vpc-0d1e2f"}}]}]}).encode())
    assets["terraform-state"] = tf
    return assets


CONFIG = """\
# drwatch demo estate (generated by `drwatch demo`). Everything lives under this directory.
store:
  sqlite: state/drwatch.sqlite
http:
  listen: 127.0.0.1:10099
limits:
  max_concurrent: 4
  per_location: 2
  default_timeout: 5m
  drain_timeout: 20s
locations:
  prod:        {kind: filesystem, path: sites/dc-a/prod, site: dc-a, media: disk}
  nas-a:       {kind: filesystem, path: sites/dc-a/nas, site: dc-a}
  dr-b:        {kind: filesystem, path: sites/dc-b/backup, site: dc-b, media: disk}
  tape-vault:  {kind: filesystem, path: sites/vault-c/tape, site: vault-c, media: tape, offline: true}
  usb-drive:   {kind: filesystem, path: sites/usb-drive, site: dc-a, media: removable}
assets:
  model-weights:
    description: LLM fine-tune weights (safetensors shards)
    rpo: 7d
    rto: 4h
    production: {location: prod, prefix: model-weights}
    copies:
      - {location: dr-b, prefix: model-weights}
      - {location: tape-vault, prefix: model-weights, name: vault}
    validators:
      - {kind: replica, schedule: {every: 1m, jitter: 10s}}
      - {kind: model_weights, schedule: {every: 5m, jitter: 30s}}  # safetensors structure + sha256
      - kind: recovery_dependencies  # what restoring it needs besides backups (loopback stand-ins here)
        schedule: {every: 5m, jitter: 30s}
        dependencies:
          - {kind: dns, name: internal-dns, host: localhost, site: dc-a}
          - {kind: dns, name: internal-dns-dr, host: localhost, site: dc-b, provides: internal-dns}
          - {kind: terraform_state, name: infra-state, asset: terraform-state}  # lives in prod (dc-a)
  vector-index:
    description: RAG vector index export (JSONL shards)
    rpo: 1d
    rto: 1h
    production: {location: prod, prefix: vector-index}
    copies:
      - {location: dr-b, prefix: vector-index}
      - {location: nas-a, prefix: vector-index}
    validators:
      - {kind: replica, schedule: {every: 2m, jitter: 15s}}
      - {kind: consistency_group, group: rag, schedule: {every: 2m, jitter: 15s}}
  training-data:
    description: training corpus (CSV parts)
    rpo: 7d
    rto: 12h
    production: {location: prod, prefix: training-data}
    copies:
      - {location: dr-b, prefix: training-data}
      - {location: tape-vault, prefix: training-data, name: vault}
    validators:
      - {kind: replica, schedule: {every: 2m, jitter: 15s}}
  feature-store:
    description: feature store snapshot (parquet)
    rpo: 1h
    rto: 30m
    production: {location: prod, prefix: feature-store}
    copies:
      - {location: dr-b, prefix: feature-store}
      - {location: nas-a, prefix: feature-store}
    validators:
      - {kind: replica, schedule: {every: 1m, jitter: 10s}}
  terraform-state:
    description: Terraform state of the production account
    rpo: 1d
    production: {location: prod, prefix: terraform-state}
    copies:
      - {location: nas-a, prefix: terraform-state}
      - {location: usb-drive, prefix: terraform-state, name: usb}
    validators:
      - {kind: replica, schedule: {every: 1m, jitter: 10s}}
      - {kind: terraform_state, schedule: {every: 5m, jitter: 30s}}  # version 4, lineage/serial, age, regions
consistency_groups:
  rag:  # the index was embedded with exactly the backed-up model, and both come from the same day
    assets: [vector-index, model-weights]
    max_skew: 1d
    embedding_model: {vectors: vector-index, model: model-weights}
compliance:
  copies: 3
  media: 2
  offsite: 1
  immutable: 1
  window: 1h
"""


def _copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True, copy_function=shutil.copy2)


S3_PART = """\
  s3-prod:
    kind: s3
    bucket: {prod_bucket}
    endpoint_url: {endpoint}
    region: {region}
    addressing_style: path
    provider: {provider}
    site: dc-a
    access_key_id_env: {key_env}
    secret_access_key_env: {secret_env}
  s3-vault:
    kind: s3
    bucket: {vault_bucket}
    endpoint_url: {endpoint}
    region: {region}
    addressing_style: path
    provider: {provider}
    site: vault-c
    access_key_id_env: {key_env}
    secret_access_key_env: {secret_env}
    canary_prefix: drwatch-canary/
"""

S3_ASSET = """\
  checkpoints:
    description: training checkpoints in S3, vaulted in an Object Lock bucket
    rpo: 7d
    rto: 2h
    production: {location: s3-prod, prefix: checkpoints}
    copies:
      - {location: s3-vault, prefix: checkpoints, name: vault}
      - {location: dr-b, prefix: checkpoints}
    validators:
      - {kind: replica, schedule: {every: 2m, jitter: 15s}}
      - {kind: immutability_probe, schedule: {every: 10m, jitter: 1m}}
      - {kind: s3_replication, copies: [vault], schedule: {every: 10m, jitter: 1m}}  # the rule making the vault
"""


def _add_s3(root: Path, rng: random.Random, endpoint: str, key_env: str, secret_env: str, region: str,
            provider: str) -> tuple[str, str]:
    """Create the demo buckets on an S3 endpoint (versioned production, COMPLIANCE-locked vault)."""
    from datetime import UTC, datetime, timedelta

    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config as BotoConfig

    key, secret = os.environ.get(key_env), os.environ.get(secret_env)
    if not key or not secret:
        raise SystemExit(f"drwatch demo: set {key_env} and {secret_env} for the S3 endpoint")
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=key, aws_secret_access_key=secret,
        config=BotoConfig(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required", retries={"max_attempts": 3}),
    )
    suffix = rng.randbytes(3).hex()
    prod_bucket, vault_bucket = f"drwatch-demo-prod-{suffix}", f"drwatch-demo-vault-{suffix}"
    client.create_bucket(Bucket=prod_bucket)
    client.put_bucket_versioning(Bucket=prod_bucket, VersioningConfiguration={"Status": "Enabled"})
    client.create_bucket(Bucket=vault_bucket, ObjectLockEnabledForBucket=True)
    client.put_bucket_versioning(Bucket=vault_bucket, VersioningConfiguration={"Status": "Enabled"})
    # The rule that feeds the vault: enabled, but the vault is on the same endpoint and region (one failure
    # domain: s3_replication says replication_same_region). An endpoint without replication support refuses it.
    with contextlib.suppress(client.exceptions.ClientError):
        client.put_bucket_replication(Bucket=prod_bucket, ReplicationConfiguration={
            "Role": "arn:aws:iam::123456789012:role/drwatch-demo-replication", "Rules": [{
                "ID": "checkpoints-to-vault", "Priority": 1, "Status": "Enabled", "Filter": {"Prefix": "checkpoints/"},
                "DeleteMarkerReplication": {"Status": "Disabled"},
                "Destination": {"Bucket": f"arn:aws:s3:::{vault_bucket}"}}]})
    until = datetime.now(UTC) + timedelta(days=30)
    dr = root / "sites" / "dc-b" / "backup" / "checkpoints"
    for step in (1000, 2000, 3000):
        body = rng.randbytes(256 * 1024)
        name = f"step-{step:06d}/model.safetensors"
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        client.put_object(Bucket=prod_bucket, Key=f"checkpoints/{name}", Body=body, ContentMD5=md5)
        client.put_object(Bucket=vault_bucket, Key=f"checkpoints/{name}", Body=body, ContentMD5=md5,
                          ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
        _write(dr / name, body)
    return prod_bucket, vault_bucket


def create_demo(root: Path, force: bool = False, seed: int = 7, s3_endpoint: str | None = None,
                s3_key_env: str = "AWS_ACCESS_KEY_ID", s3_secret_env: str = "AWS_SECRET_ACCESS_KEY",
                s3_region: str = "us-east-1", s3_provider: str = "aws") -> Path:
    """Create the demo estate under root; returns the config path. Refuses to overwrite foreign dirs."""
    root = root.resolve()
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise SystemExit(f"drwatch demo: {root} exists and is not a drwatch demo; choose another --dir")
        if not force:
            raise SystemExit(f"drwatch demo: {root} already holds a demo; pass --force to recreate it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("created by drwatch demo\n")
    rng = random.Random(seed)
    assets = _populate(root, rng)
    now = time.time()
    for asset, path in assets.items():
        extra = None
        if asset == "vector-index":  # embedded with the model sealed just before (see consistency_groups)
            extra = {"embedding_model": seal_digest_sync(assets["model-weights"] / MANIFEST_NAME)}
        asyncio.run(seal_directory(path, out_path=path / MANIFEST_NAME, extra=extra))
        if asset == "feature-store":  # a backup job that stopped running six hours ago
            lines = (path / MANIFEST_NAME).read_text().splitlines()
            head = json.loads(lines[0])
            head["sealed_at"] = now - 6 * 3600
            lines[0] = json.dumps(head)
            (path / MANIFEST_NAME).write_text("\n".join(lines) + "\n")
    sites = root / "sites"
    for asset in ("model-weights", "vector-index", "training-data", "feature-store"):
        _copy(assets[asset], sites / "dc-b" / "backup" / asset)
    for asset in ("vector-index", "feature-store", "terraform-state"):
        _copy(assets[asset], sites / "dc-a" / "nas" / asset)
    # Faults, injected for real:
    shard = sites / "dc-b" / "backup" / "vector-index" / "shard-002.jsonl"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    for victim in ("train/part-00007.csv", "validation/part-00003.csv"):
        (sites / "dc-b" / "backup" / "training-data" / victim).unlink()
    # tape-vault and usb-drive are intentionally absent: the vault is offline (attested below), the USB
    # drive is simply not mounted (drwatch cannot check it: unknown, not failed).
    text = CONFIG
    if s3_endpoint is not None:
        prod_bucket, vault_bucket = _add_s3(root, rng, s3_endpoint, s3_key_env, s3_secret_env, s3_region,
                                            s3_provider)
        text = text.replace("assets:\n", S3_PART.format(
            prod_bucket=prod_bucket, vault_bucket=vault_bucket, endpoint=s3_endpoint, region=s3_region,
            provider=s3_provider, key_env=s3_key_env, secret_env=s3_secret_env) + "assets:\n", 1)
        text = text.replace("consistency_groups:\n", S3_ASSET + "consistency_groups:\n", 1)
    cfg_path = root / "drwatch.yaml"
    cfg_path.write_text(text)
    _attest_vault(cfg_path)
    return cfg_path


def _attest_vault(cfg_path: Path) -> None:
    from drwatch.config.model import load_config
    from drwatch.core.model import Attestation
    from drwatch.formats.manifest import ManifestError, read_header
    from drwatch.store import open_store

    cfg = load_config(cfg_path)

    async def record() -> None:
        store = open_store(cfg)
        await store.open()
        try:
            root = cfg.base_dir / "sites" / "dc-a" / "prod" / "model-weights" / MANIFEST_NAME
            try:
                with root.open() as fh:
                    sealed = read_header(fh).sealed_at
            except (OSError, ManifestError):
                sealed = None
            await store.add_attestation(Attestation(
                "model-weights", "vault", "demo: tape LTO-9 #A0042 restored and hashed by ops", time.time(), sealed))
        finally:
            await store.close()

    asyncio.run(record())


def ensure_demo(root: Path) -> Path:
    """The demo config under root, creating the estate on first use."""
    cfg_path = root / "drwatch.yaml"
    if cfg_path.exists() and (root / MARKER).exists():
        return cfg_path
    return create_demo(root)
