"""Helpers for tests against real S3 servers (moto, Ceph RGW): configs, uploads, runs, bucket state.

Servers come from ``tests/support/s3servers.py`` (fixtures in ``conftest.py``); nothing here patches anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import pytest
import yaml

from drwatch.config.model import Config, parse_config
from drwatch.core.model import CopyReport, Result
from drwatch.state.compliance import RuleState, evaluate
from drwatch.state.snapshot import Snapshot
from tests.support.runs import open_runner
from tests.support.s3servers import S3Client

_names = itertools.count(1)


class Server(Protocol):
    """What MotoServer and CephRGW have in common."""

    @property
    def endpoint_url(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def access_key(self) -> str: ...
    @property
    def secret_key(self) -> str: ...
    @property
    def region(self) -> str: ...
    def client(self) -> S3Client: ...


_clients: dict[tuple[str, str, str], S3Client] = {}


def client(server: Server) -> S3Client:
    """A boto3 client for the server's own user, made once per endpoint (creating one costs ~30 ms)."""
    key = (server.endpoint_url, server.access_key, server.secret_key)
    if key not in _clients:
        _clients[key] = server.client()
    return _clients[key]


def unique(stem: str) -> str:
    """A bucket name no other test uses (servers are shared by a whole module or session)."""
    return f"{stem}-{next(_names)}-{int(time.time() * 1000) % 100_000}"


def bucket(server: Server, stem: str, *, lock: bool = False, versioned: bool = False,
           region: str | None = None) -> str:
    """Create a bucket (Object Lock enables versioning by itself); returns its name."""
    name = unique(stem)
    kwargs: dict[str, Any] = {"Bucket": name}
    if lock:
        kwargs["ObjectLockEnabledForBucket"] = True
    if region is not None and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3 = client(server)
    s3.create_bucket(**kwargs)
    if versioned and not lock:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def until(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def md5_b64(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def upload(server: Server, bucket_name: str, files: Mapping[str, bytes], *, prefix: str = "data/",
           threads: int = 8, **put: Any) -> None:
    """PUT every file (boto3, a thread pool). ``put`` adds PutObject arguments (lock, checksum, class).

    With an Object Lock mode and no checksum algorithm, Content-MD5 is sent (S3 requires one of them).
    """
    s3 = client(server)

    def one(item: tuple[str, bytes]) -> None:
        key, body = item
        extra = dict(put)
        locked = "ObjectLockMode" in extra or "ObjectLockLegalHoldStatus" in extra
        if locked and "ChecksumAlgorithm" not in extra:
            extra.setdefault("ContentMD5", md5_b64(body))
        s3.put_object(Bucket=bucket_name, Key=prefix + key, Body=body, **extra)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, files.items()))


def _sigv4_headers(server: Server, path: str, body: bytes, keys: dict[str, bytes]) -> dict[str, str]:
    """AWS signature v4 headers for a path-style PUT of ``body`` (stdlib only; ``keys`` caches the day's key).

    Not signature v2: moto's server picks the service from the Authorization header, reading it as a v4
    ``Credential=<key>/<date>/<region>/<service>/aws4_request``; a v2 header is ``AWS <key>:<base64 signature>``,
    and a signature with exactly four '/' (about 1 in 1,200) unpacks as a scope whose "service" is a piece of
    the signature: no backend, 500 Internal Server Error (``get_backend(None)`` in moto/backends.py).
    """
    now = datetime.now(UTC)
    day, stamp = now.strftime("%Y%m%d"), now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{day}/{server.region}/s3/aws4_request"
    if day not in keys:
        key = f"AWS4{server.secret_key}".encode()
        for part in (day, server.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        keys[day] = key
    payload = hashlib.sha256(body).hexdigest()
    host = f"127.0.0.1:{server.port}"
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = f"PUT\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{stamp}\n\n{signed}\n{payload}"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(keys[day], to_sign.encode(), hashlib.sha256).hexdigest()
    return {"Host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={server.access_key}/{scope}, "
                             f"SignedHeaders={signed}, Signature={signature}"}


def fast_upload(server: Server, bucket_name: str, files: Mapping[str, bytes], *, prefix: str = "data/",
                threads: int = 6) -> None:
    """Bulk PUTs over raw keep-alive HTTP, signed with AWS signature v4 by hand (see ``_sigv4_headers``).

    botocore spends ~2-3 ms of CPU per request on this 2-core machine; this spends microseconds, so the
    server is the bottleneck (~600 PUT/s on RGW).
    """
    local = threading.local()
    conns: list[http.client.HTTPConnection] = []
    keys: dict[str, bytes] = {}

    def one(item: tuple[str, bytes]) -> None:
        key, body = item
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conns.append(conn)
        path = f"/{bucket_name}/{quote(prefix + key)}"
        conn.request("PUT", path, body=body, headers={
            "Content-Length": str(len(body)), "Content-Type": "application/octet-stream",
            **_sigv4_headers(server, path, body, keys)})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, (resp.status, data[:300])

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, files.items()))
    finally:
        for conn in conns:
            conn.close()


def versions(server: Server, bucket_name: str, *, exclude_prefix: str | None = None) -> list[tuple[Any, ...]]:
    """Every object version and delete marker of a bucket (what any write would change)."""
    out: list[tuple[Any, ...]] = []
    for page in client(server).get_paginator("list_object_versions").paginate(Bucket=bucket_name):
        for v in page.get("Versions", []):
            out.append(("version", v["Key"], v.get("VersionId"), v.get("ETag"), v.get("Size"),
                        v.get("LastModified"), v.get("IsLatest"), v.get("StorageClass")))
        for m in page.get("DeleteMarkers", []):
            out.append(("delete-marker", m["Key"], m.get("VersionId"), m.get("LastModified"), m.get("IsLatest")))
    if exclude_prefix is not None:
        out = [v for v in out if not str(v[1]).startswith(exclude_prefix)]
    return sorted(out, key=repr)


class Locations:
    """Builds the ``locations:`` section; credentials go through environment variables, as in production."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.data: dict[str, Any] = {}

    def s3(self, name: str, server: Server, bucket_name: str, *, site: str, region: str | None = None,
           access_key: str | None = None, secret_key: str | None = None, **extra: Any) -> str:
        n = next(_names)
        self.monkeypatch.setenv(f"DRW_TEST_AK_{n}", access_key or server.access_key)
        self.monkeypatch.setenv(f"DRW_TEST_SK_{n}", secret_key or server.secret_key)
        self.data[name] = {
            "kind": "s3", "bucket": bucket_name, "endpoint_url": server.endpoint_url,
            "region": region or server.region, "addressing_style": "path", "site": site,
            "access_key_id_env": f"DRW_TEST_AK_{n}", "secret_access_key_env": f"DRW_TEST_SK_{n}",
            "max_attempts": 2, "connect_timeout": "2s", "read_timeout": "20s", **extra,
        }
        return name

    def fs(self, name: str, path: Path, *, site: str, **extra: Any) -> str:
        self.data[name] = {"kind": "filesystem", "path": str(path), "site": site, **extra}
        return name


def config(tmp: Path, locations: Locations, production: tuple[str, str], copies: Iterable[tuple[str, str]],
           *, validators: Iterable[Mapping[str, Any]] = ({"kind": "replica"},),
           compliance: Mapping[str, Any] | None = None, rpo: str = "1d") -> dict[str, Any]:
    """A config with one asset ``data``: production and copies as (location, prefix)."""
    return {
        "store": {"sqlite": str(tmp / f"state-{next(_names)}.sqlite")},
        "http": {"listen": "127.0.0.1:0"},
        "locations": dict(locations.data),
        "assets": {"data": {
            "rpo": rpo,
            "production": {"location": production[0], "prefix": production[1]},
            "copies": [{"location": loc, "prefix": prefix} for loc, prefix in copies],
            "validators": [dict(v) for v in validators],
        }},
        "compliance": dict(compliance or {}),
    }


def parse(tmp: Path, cfg: Mapping[str, Any]) -> Config:
    return parse_config(yaml.safe_dump(dict(cfg)), source=str(tmp / "drwatch.yaml"))


async def run(tmp: Path, cfg_dict: Mapping[str, Any], validator: int = 0,
              clock: Callable[[], float] = time.time) -> tuple[Result, Config]:
    """One validator run through a real Runner (store, S3 client pool), as the daemon does it."""
    cfg = parse(tmp, cfg_dict)
    async with open_runner(cfg, tmp / "sandboxes", clock) as runner:
        return await runner.execute("data", cfg.assets["data"].validators[validator]), cfg


def rules(cfg: Config, *results: Result, now: float | None = None) -> dict[str, RuleState]:
    """The 3-2-1-1-0 rule states of asset ``data`` for a snapshot holding these results."""
    snap = Snapshot(cfg)
    for res in results:
        snap = snap.with_result(res, time.time())
    verdict = evaluate(cfg, snap, time.time() if now is None else now)["data"]
    return {name: v.state for name, v in verdict.rules.items()}


def codes(result: Result) -> set[str]:
    return {f.code for f in result.findings}


def subjects(result: Result, code: str) -> list[str]:
    return sorted(f.subject for f in result.findings if f.code == code)


def report(result: Result, name: str) -> CopyReport:
    return next(c for c in result.copies if c.copy == name)
