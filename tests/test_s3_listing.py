"""Split listings (``storage/s3list.py``) against real servers: a prefix longer than one page is listed by
common prefix, several ListObjectsV2 requests in flight, and comes back exactly as the plain listing (same
keys, same order, each once), whatever the layout: keys beside "directories", a first page that ends inside
a directory, directories the first page covered whole, nested single-directory levels.

Pages are made small (``s3lean.PAGE_KEYS``, sent as ``max-keys``) so that a few dozen objects span many pages;
the servers answer every request. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from drwatch.storage import s3lean
from drwatch.storage.config import S3LocationConfig
from drwatch.storage.s3 import RequestMeter, S3Location, S3Pool, S3Unavailable
from drwatch.storage.s3lean import _OBJECT, parse_list_page, parse_list_page_fast, parse_list_page_tree
from tests.support.s3helpers import Server, bucket, client, fast_upload, upload
from tests.support.s3servers import CephRGW, MotoServer

# data/ holds keys beside directories; the first 7-key page ends inside data/a/ (start-after on its rest),
# data/b/ is a directory after it, data/n/ nests one more level (only one directory in data/n/),
# data/b.bin sorts before data/b/ ('.' < '/'), data/z.bin after every directory.
KEYS = ([f"a/{i:02d}.bin" for i in range(9)] + ["a.bin", "b.bin"] + [f"b/{i:02d}.bin" for i in range(11)]
        + [f"n/deep/{i:02d}.bin" for i in range(15)] + ["m.bin", "z.bin", "00-first.bin"])


def location(mp: pytest.MonkeyPatch, server: Server, name: str, **extra: object) -> S3Location:
    mp.setenv("DRWATCH_TEST_LIST_KEY", server.access_key)
    mp.setenv("DRWATCH_TEST_LIST_SECRET", server.secret_key)
    cfg = S3LocationConfig.model_validate({
        "kind": "s3", "bucket": name, "endpoint_url": server.endpoint_url, "region": "us-east-1",
        "addressing_style": "path", "access_key_id_env": "DRWATCH_TEST_LIST_KEY",
        "secret_access_key_env": "DRWATCH_TEST_LIST_SECRET", "max_attempts": 1, **extra})
    return S3Pool(Path("/")).get(name, cfg)


def plain_listing(server: Server, name: str, prefix: str) -> list[tuple[str, int, str]]:
    """boto3's own paginated listing of the bucket: the reference."""
    pages = client(server).get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix)
    return [(o["Key"], o["Size"], o["ETag"].strip('"')) for p in pages for o in p.get("Contents", [])]


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(s3lean, "PAGE_KEYS", 7)
    yield


async def check_layout(mp: pytest.MonkeyPatch, server: Server, label: str) -> None:
    name = bucket(server, f"split-{label}")
    fast_upload(server, name, {k: k.encode() * 2 for k in KEYS})
    want = plain_listing(server, name, "data/")
    assert len(want) == len(KEYS)
    split = location(mp, server, name)
    plain = location(mp, server, name, list_concurrency=1)  # the same bucket, never split
    try:
        meter = RequestMeter(label)
        got = [(f"data/{o.key}", o.size, o.etag) async for o in split.objects("data", meter)]
        assert got == want  # every key once, in the plain listing's order, with its size and ETag
        # split: first page + delimiter listings (data/, then data/n/ descended) + the directories' own pages
        assert meter.requests["list"] > len(KEYS) // 7
        meter1 = RequestMeter(label)
        assert [(f"data/{o.key}", o.size, o.etag) async for o in plain.objects("data", meter1)] == want
        assert meter1.requests == {"list": -(-len(KEYS) // 7)}  # plain: one request per page
    finally:
        await split.close()
        await plain.close()


async def test_split_listing_equals_the_plain_listing_on_moto(monkeypatch: pytest.MonkeyPatch, moto: MotoServer,
                                                              small_pages: None) -> None:
    await check_layout(monkeypatch, moto, "moto")


async def test_split_listing_equals_the_plain_listing_on_rgw(monkeypatch: pytest.MonkeyPatch, rgw: CephRGW,
                                                             small_pages: None) -> None:
    await check_layout(monkeypatch, rgw, "rgw")


async def test_short_listing_is_one_request_and_early_close_leaves_no_task(
        monkeypatch: pytest.MonkeyPatch, moto: MotoServer, small_pages: None) -> None:
    """A prefix that fits one page costs one request (no split); a consumer that stops early inside a split
    listing leaves no request running (every unit's task is cancelled and awaited)."""
    name = bucket(moto, "split-short")
    fast_upload(moto, name, {k: b"x" for k in KEYS})
    loc = location(monkeypatch, moto, name)
    try:
        meter = RequestMeter("moto")
        assert len([o async for o in loc.objects("data/n/deep", meter)]) == 15
        assert meter.requests == {"list": 3}  # 15 keys, no directory below: plain pages, no delimiter listing
        monkeypatch.setattr(s3lean, "PAGE_KEYS", 50)
        meter = RequestMeter("moto")
        assert len([o async for o in loc.objects("data", meter)]) == len(KEYS)
        assert meter.requests == {"list": 1}  # one page: no split
        monkeypatch.setattr(s3lean, "PAGE_KEYS", 7)

        before = asyncio.all_tasks()
        stream = loc.objects("data", RequestMeter("moto"))
        seen = [await anext(stream) for _ in range(12)]  # past the first page, into the split
        assert [o.key for o in seen] == sorted(k for k in KEYS)[:12]
        await stream.aclose()  # type: ignore[attr-defined]
        assert asyncio.all_tasks() - before == set()
    finally:
        await loc.close()


async def test_a_failing_directory_listing_is_could_not_check(monkeypatch: pytest.MonkeyPatch, rgw: CephRGW,
                                                             small_pages: None) -> None:
    """The gateway stops while the directories are listed: the listing raises S3Unavailable (the replica check
    ends as ``error``, never as missing objects)."""
    name = bucket(rgw, "split-down")
    fast_upload(rgw, name, {k: b"y" for k in KEYS})
    loc = location(monkeypatch, rgw, name, connect_timeout="2s", read_timeout="2s")
    try:
        stream = loc.objects("data", RequestMeter("rgw"))
        first = [await anext(stream) for _ in range(3)]
        assert len(first) == 3
        rgw.stop()
        try:
            with pytest.raises(S3Unavailable) as err:
                async for _ in stream:
                    pass
        finally:
            rgw.restart()
        assert err.value.code == "unreachable"
    finally:
        await loc.close()


# keys that need URL encoding and XML escaping (&, <, quotes), beside plain ones and a directory
PARSE_KEYS = ["a b.bin", "plus+sign.bin", "100%.bin", "amp&lt<gt>.bin", "quote\"'.bin", "ünïcødé/ж.bin",
              "q?x=1&y=2.bin", "dir/one.bin", "dir/two.bin", "z.bin"]


def raw_pages(server: Server, name: str) -> list[bytes]:
    """ListObjectsV2 answers as the server writes them: flat and with a delimiter, URL encoding asked."""
    s3 = client(server)
    out = []
    for params in ({"Prefix": "data/"}, {"Prefix": "data/", "Delimiter": "/"}, {"Prefix": "data/", "MaxKeys": 3}):
        url = s3.generate_presigned_url("list_objects_v2", Params={"Bucket": name, "EncodingType": "url", **params})
        with urllib.request.urlopen(url, timeout=30) as resp:
            out.append(resp.read())
    return out


@pytest.mark.parametrize("server_name", ["moto", "rgw"])
def test_page_parsers_agree_on_real_answers(request: pytest.FixtureRequest, server_name: str) -> None:
    """The regular-expression parse, the per-tag search and the XML tree read the same objects, sizes, ETags,
    times, classes, checksum algorithms, common prefixes and tokens from moto's and RGW's own answers (keys
    with escapes and entities, checksums on moto), and the regular expression is the one that took them."""
    server: Server = request.getfixturevalue(server_name)
    name = bucket(server, f"parse-{server_name}")
    upload(server, name, {k: k.encode() for k in PARSE_KEYS[:5]}, ChecksumAlgorithm="CRC32")
    upload(server, name, {k: k.encode() * 2 for k in PARSE_KEYS[5:]})
    for body in raw_pages(server, name):
        page = parse_list_page(body)
        assert page == parse_list_page_fast(body) == parse_list_page_tree(body)
        assert len(_OBJECT.findall(body.decode())) == len(page.objects) > 0
    flat, split, short = (parse_list_page(b) for b in raw_pages(server, name))
    assert [o.key for o in flat.objects] == sorted(f"data/{k}" for k in PARSE_KEYS)
    assert flat.next_token is None and short.next_token is not None and len(short.objects) == 3
    assert split.prefixes == ["data/dir/", "data/ünïcødé/"]
    if server_name == "moto":  # RGW Pacific stores no flexible checksums
        assert {o.key: o.checksum_algorithm for o in flat.objects if o.checksum_algorithm} == {
            f"data/{k}": "CRC32" for k in PARSE_KEYS[:5]}
