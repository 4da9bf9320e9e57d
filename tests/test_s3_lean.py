"""The lean S3 hot path (``storage/s3lean.py``) against real servers: ListObjectsV2 pages and HeadObject signed
with botocore's SigV4 signer and sent through the location's aiohttp session.

Ceph RGW checks every signature, so keys that need URL encoding prove the canonical request is built the
way the server builds it; moto lists and HEADs checksums. Nothing is mocked: the servers answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drwatch.storage.config import S3LocationConfig
from drwatch.storage.s3 import RequestMeter, S3Location, S3Object, S3Pool, S3Unavailable
from tests.support.s3helpers import Server, bucket, fast_upload, upload
from tests.support.s3servers import CephRGW, MotoServer

# Keys that need escaping in a URL and in the signed canonical request: space, plus, percent, tilde, unicode,
# a key that looks like a query, reserved punctuation.
ODD_KEYS = ["a b.bin", "plus+sign.bin", "100%.bin", "tilde~x.bin", "ünïcødé/ж.bin", "q?x=1&y=2.bin",
            "semi;colon,comma.bin", "star*(paren).bin"]


def location(mp: pytest.MonkeyPatch, server: Server, name: str, **extra: object) -> S3Location:
    """A location of one bucket (path addressing, one attempt), keys from the environment."""
    mp.setenv("DRWATCH_TEST_LEAN_KEY", server.access_key)
    mp.setenv("DRWATCH_TEST_LEAN_SECRET", server.secret_key)
    cfg = S3LocationConfig.model_validate({
        "kind": "s3", "bucket": name, "endpoint_url": server.endpoint_url, "region": "us-east-1",
        "addressing_style": "path", "access_key_id_env": "DRWATCH_TEST_LEAN_KEY",
        "secret_access_key_env": "DRWATCH_TEST_LEAN_SECRET", "max_attempts": 1, **extra})
    return S3Pool(Path("/")).get(name, cfg)


async def listed(loc: S3Location, prefix: str, meter: RequestMeter | None = None) -> list[S3Object]:
    return [o async for o in loc.objects(prefix, meter)]


async def test_odd_keys_list_and_head_with_valid_signatures(monkeypatch: pytest.MonkeyPatch, rgw: CephRGW) -> None:
    """Keys needing URL encoding are listed back exactly (URL-encoded listing decoded) and each is HEADed
    with a signature RGW accepts: the lean path builds the same canonical request as the server."""
    name = bucket(rgw, "lean-odd")
    files = {k: k.encode() * 3 for k in ODD_KEYS}
    upload(rgw, name, files)
    loc = location(monkeypatch, rgw, name)
    try:
        assert loc.lean_path
        meter = RequestMeter("rgw")
        objs = await listed(loc, "data", meter)
        assert [o.key for o in objs] == sorted(files, key=lambda k: k.encode())
        for o in objs:
            assert o.size == len(files[o.key])
            assert o.etag == hashlib.md5(files[o.key]).hexdigest()  # S3's ETag of a single-part upload
            head = await loc.head(f"data/{o.key}", meter)
            assert head.etag == o.etag
        assert meter.requests == {"list": 1, "head": len(files)}
    finally:
        await loc.close()


async def test_head_reads_listed_checksums_and_missing_keys(monkeypatch: pytest.MonkeyPatch, moto: MotoServer) -> None:
    """The listing names the checksum algorithm; the HEAD returns its full-object value (the server's,
    equal to the body's own CRC32/SHA256); a key that is not there is S3Missing, as on the aioboto3 path."""
    from drwatch.storage.s3 import S3Missing

    name = bucket(moto, "lean-sum")
    body = os.urandom(3000)
    upload(moto, name, {"s.bin": body}, ChecksumAlgorithm="SHA256")
    upload(moto, name, {"c.bin": body}, ChecksumAlgorithm="CRC32")
    upload(moto, name, {"n.bin": body})
    loc = location(monkeypatch, moto, name)
    try:
        objs = {o.key: o for o in await listed(loc, "data")}
        assert {k: o.checksum_algorithm for k, o in objs.items()} == {"c.bin": "CRC32", "n.bin": None,
                                                                     "s.bin": "SHA256"}
        head = await loc.head("data/s.bin")
        assert head.checksums == {"SHA256": base64.b64encode(hashlib.sha256(body).digest()).decode()}
        assert set((await loc.head("data/c.bin")).checksums) == {"CRC32"}
        assert (await loc.head("data/n.bin")).checksums == {}
        with pytest.raises(S3Missing):
            await loc.head("data/absent.bin")
    finally:
        await loc.close()


async def test_pages_are_prefetched_in_order_and_closed_early(monkeypatch: pytest.MonkeyPatch, rgw: CephRGW) -> None:
    """2,500 objects come back in key order over three ListObjectsV2 pages; a consumer that stops after a
    few objects leaves no page request running (the prefetched page is cancelled and awaited at close)."""
    name = bucket(rgw, "lean-pages")
    files = {f"k{i:05d}": b"%d" % i for i in range(2500)}
    fast_upload(rgw, name, files)
    loc = location(monkeypatch, rgw, name)
    try:
        meter = RequestMeter("rgw")
        keys = [o.key for o in await listed(loc, "data/", meter)]
        assert keys == sorted(files)
        assert meter.requests == {"list": 3}

        before = asyncio.all_tasks()
        stream = loc.objects("data", RequestMeter("rgw"))
        assert isinstance(stream, AsyncIterator)
        first = [await anext(stream) for _ in range(5)]
        assert [o.key for o in first] == sorted(files)[:5]
        assert len(asyncio.all_tasks() - before) == 1  # the next page, requested while the first is consumed
        await stream.aclose()  # type: ignore[attr-defined]
        assert asyncio.all_tasks() - before == set()
    finally:
        await loc.close()


async def test_wrong_secret_is_access_denied_without_the_secret(monkeypatch: pytest.MonkeyPatch, rgw: CephRGW) -> None:
    """A wrong secret on the lean path is ``access_denied`` (RGW rejects the signature), for the listing and
    the HEAD alike, and no message carries the secret."""
    name = bucket(rgw, "lean-denied")
    upload(rgw, name, {"x.bin": b"x"})
    secret = "not-the-secret-key-0123456789"
    monkeypatch.setenv("DRWATCH_TEST_LEAN_WRONG", secret)
    loc = location(monkeypatch, rgw, name, secret_access_key_env="DRWATCH_TEST_LEAN_WRONG")
    try:
        with pytest.raises(S3Unavailable) as listing:
            await listed(loc, "data")
        with pytest.raises(S3Unavailable) as head:
            await loc.head("data/x.bin")
        for exc in (listing.value, head.value):
            assert exc.code == "access_denied"
            assert secret not in str(exc) and secret not in exc.message
    finally:
        await loc.close()
