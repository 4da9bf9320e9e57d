"""The lean S3 hot path: the requests paid per page or per object (ListObjectsV2, HeadObject).

botocore's generic per-request pipeline (endpoint rule resolution per key, request serialisation, event
hooks, user-agent building, response parsing with dateutil) cost ~4.6 ms of client CPU per HeadObject
(benchmarks/README.md). These two requests are built here instead: signed with botocore's own
``S3SigV4Auth`` (the credentials of the location's aioboto3 client, so profiles, the default chain and
refreshable credentials behave as before), sent through that client's own aiohttp session (same TLS
settings: ``AWS_CA_BUNDLE``, the endpoint's verification, proxies; same connect/read timeouts and
connection pool), retried on 5xx/throttling/transport errors up to the location's ``max_attempts`` with
botocore's exponential backoff, and parsed for the fields drwatch reads only. Errors are raised as the
botocore exceptions the generic path raises, so :func:`drwatch.storage.s3errors.classify` maps them the same
way. Nothing here logs; requests are signed in headers (no secret in a URL).

The bucket's base URL (path or virtual addressing, as configured) is resolved once per location by
botocore itself (a presigned ListObjectsV2 URL, whose query is dropped). Everything else (bucket facts,
GETs, the canary) stays on aioboto3.
"""

from __future__ import annotations

import asyncio
import html
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.utils import percent_encode

from drwatch.storage.s3list import ListedObject, ListPage
from drwatch.storage.s3model import parse_time

_RETRY_STATUS = frozenset({500, 502, 503, 504})
_RETRY_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                          "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
                          "ProvisionedThroughputExceededException", "TooManyRequestsException",
                          "BandwidthLimitExceeded", "EC2ThrottledException", "TransactionInProgressException"})
_TRANSIENT = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError, HTTPClientError)
_CODE = re.compile(rb"<Code>([^<]{1,128})</Code>")
_MAX_BACKOFF = 20.0
PAGE_KEYS: int | None = None  # max-keys of a listing page; None: the server's default (1,000 on S3). Tests set it


class _Wire:
    """What aiobotocore's ``AIOHTTPSession.send`` reads of a request (an ``AWSRequest`` would be
    prepared again for its ``body``)."""

    __slots__ = ("headers", "method", "url")
    body = None
    stream_output = False

    def __init__(self, method: str, url: str, headers: HTTPHeaders) -> None:
        self.method, self.url, self.headers = method, url, headers


def _unquote(text: str) -> str:
    """``unquote_plus`` of a URL-encoded key; keys whose only escape is ``%2F`` (RGW encodes every ``/``) or that
    have none take a replace instead (the same result, ~10x cheaper)."""
    if "%" not in text and "+" not in text:
        return text
    plain = text.replace("%2F", "/")
    return plain if "%" not in plain and "+" not in plain else unquote_plus(text)


def _value(text: str, tag: str, start: int = 0, end: int | None = None) -> str | None:
    """The text of the first ``<tag>...</tag>`` in ``text[start:end]`` (entities decoded), or None."""
    i = text.find(f"<{tag}>", start, end)
    if i < 0:
        return None
    i += len(tag) + 2
    j = text.find(f"</{tag}>", i, end)
    if j < 0:
        raise ValueError(f"unterminated <{tag}>")
    value = text[i:j]
    return html.unescape(value) if "&" in value else value


# One object as S3, Ceph RGW and moto write it: Key, LastModified, ETag, ChecksumAlgorithm (0 or more; and
# ChecksumType), Size, StorageClass, then what drwatch does not read. A page is taken by this pattern only if it
# matches every ``<Contents>`` of the page; otherwise the general parse below reads it.
_OBJECT = re.compile(
    r"<Contents><Key>([^<]*)</Key><LastModified>([^<]*)</LastModified><ETag>([^<]*)</ETag>"
    r"((?:<ChecksumAlgorithm>[^<]*</ChecksumAlgorithm>)*)(?:<ChecksumType>[^<]*</ChecksumType>)?"
    r"<Size>([0-9]+)</Size><StorageClass>([^<]*)</StorageClass>")
_ALGO = len("<ChecksumAlgorithm>")


def parse_list_page(body: bytes) -> ListPage:
    """The fields drwatch reads of one ListObjectsV2 page (``encoding-type=url`` decoded): one regular
    expression over the page when every object is laid out as S3 writes it (the XML tree cost ~40% of a
    listing's client CPU), else :func:`parse_list_page_fast` / :func:`parse_list_page_tree` (the same result,
    tested against each other on real servers' pages)."""
    text = body.decode("utf-8")
    found = _OBJECT.findall(text)
    if len(found) != text.count("<Contents>") or "<![CDATA[" in text or "<ListBucketResult" not in text:
        return parse_list_page_fast(body)
    decode = (_value(text, "EncodingType") or "").strip().lower() == "url"
    truncated = (_value(text, "IsTruncated") or "").strip().lower() == "true"
    token = _value(text, "NextContinuationToken") or None
    objects = [ListedObject(
        _key(key, decode), int(size), (html.unescape(etag) if "&" in etag else etag).strip('"'), parse_time(stamp),
        (html.unescape(klass) if "&" in klass else klass) or "STANDARD",
        algos[_ALGO:algos.index("<", _ALGO)] or None if algos else None)
        for key, stamp, etag, algos, size, klass in found]
    return ListPage(objects, token if truncated else None, _prefixes(text, decode))


def _key(raw: str, decode: bool) -> str:
    key = html.unescape(raw) if "&" in raw else raw
    return _unquote(key) if decode else key


def _prefixes(text: str, decode: bool) -> list[str]:
    prefixes: list[str] = []
    at = text.find("<CommonPrefixes>")
    while at >= 0:
        close = text.find("</CommonPrefixes>", at)
        prefix = _value(text, "Prefix", at, close)
        if prefix:
            prefixes.append(_unquote(prefix) if decode else prefix)
        at = text.find("<CommonPrefixes>", close)
    return prefixes


def parse_list_page_fast(body: bytes) -> ListPage:
    """:func:`parse_list_page` with string searches per tag (any order of the fields in an object). Sound for
    S3's answers: a ``<`` inside a value is always escaped, so every ``<Tag>`` found is a tag. An answer with
    prefixed tags or CDATA takes :func:`parse_list_page_tree`."""
    text = body.decode("utf-8")
    if "<![CDATA[" in text or ("Contents>" in text and "<Contents>" not in text) or "<ListBucketResult" not in text:
        return parse_list_page_tree(body)
    first = text.find("<Contents>")
    decode = (_value(text, "EncodingType") or "").strip().lower() == "url"
    truncated = (_value(text, "IsTruncated") or "").strip().lower() == "true"
    token = _value(text, "NextContinuationToken") or None
    prefixes = _prefixes(text, decode)
    objects: list[ListedObject] = []
    append = objects.append
    at = first
    while at >= 0:
        close = text.find("</Contents>", at)
        if close < 0:
            raise ValueError("unterminated <Contents>")
        key = _value(text, "Key", at, close) or ""
        size = _value(text, "Size", at, close)
        etag = _value(text, "ETag", at, close) or ""
        storage = _value(text, "StorageClass", at, close)
        algo = _value(text, "ChecksumAlgorithm", at, close)
        append(ListedObject(_unquote(key) if decode else key, int(size or 0), etag.strip('"'),
                            parse_time(_value(text, "LastModified", at, close)), storage or "STANDARD", algo or None))
        at = text.find("<Contents>", close)
    return ListPage(objects, token if truncated else None, prefixes)


def parse_list_page_tree(body: bytes) -> ListPage:
    """:func:`parse_list_page` with a full XML tree (ElementTree): the reference, and the path for answers the
    fast parse does not take (prefixed tags, CDATA). One pass over each ``Contents`` element."""
    root = ET.fromstring(body)  # the configured endpoint's answer; expat expands no external entities
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    contents, key_t, size_t, etag_t = f"{ns}Contents", f"{ns}Key", f"{ns}Size", f"{ns}ETag"
    time_t, class_t, algo_t = f"{ns}LastModified", f"{ns}StorageClass", f"{ns}ChecksumAlgorithm"
    decode = (root.findtext(f"{ns}EncodingType") or "").strip().lower() == "url"
    truncated = (root.findtext(f"{ns}IsTruncated") or "").strip().lower() == "true"
    token = root.findtext(f"{ns}NextContinuationToken") or None
    prefixes = [_unquote(t) if decode else t for el in root.iter(f"{ns}CommonPrefixes")
                if (t := el.findtext(f"{ns}Prefix"))]
    objects: list[ListedObject] = []
    for child in root.iter(contents):
        key = etag = stamp = algo = ""
        size = 0
        storage = "STANDARD"
        for el in child:
            tag, text = el.tag, el.text or ""
            if tag == key_t:
                key = _unquote(text) if decode else text
            elif tag == size_t:
                size = int(text or 0)
            elif tag == etag_t:
                etag = text.strip('"')
            elif tag == time_t:
                stamp = text
            elif tag == class_t:
                storage = text or "STANDARD"
            elif tag == algo_t:
                algo = text
        objects.append(ListedObject(key, size, etag, parse_time(stamp), storage, algo or None))
    return ListPage(objects, token if truncated else None, prefixes)


class LeanS3:
    """ListObjectsV2 and HeadObject of one bucket, on the aioboto3 client of its location."""

    def __init__(self, client: Any, bucket: str, base_url: str, region: str, max_attempts: int) -> None:
        self._client = client
        self._http = client._endpoint.http_session  # aiobotocore's AIOHTTPSession (TLS, proxies, timeouts, pool)
        self._credentials = client._request_signer._credentials
        self.bucket = bucket
        self.base_url = base_url.rstrip("/")
        self.region = region
        self.attempts = max_attempts
        self._auth: S3SigV4Auth | None = None
        self._frozen: Any = None

    @classmethod
    async def create(cls, client: Any, bucket: str, max_attempts: int) -> LeanS3:
        """Resolve the bucket's base URL with botocore's endpoint rules (once)."""
        url = await client.generate_presigned_url("list_objects_v2", Params={"Bucket": bucket}, ExpiresIn=60)
        parts = urlsplit(url)
        return cls(client, bucket, f"{parts.scheme}://{parts.netloc}{parts.path}",
                   client.meta.region_name or "us-east-1", max_attempts)

    async def _signer(self) -> S3SigV4Auth:
        creds = self._credentials
        frozen = creds.get_frozen_credentials() if creds is not None else None
        if asyncio.iscoroutine(frozen):
            frozen = await frozen  # aiobotocore's (refreshable) credentials refresh here
        if frozen is None:
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()
        if self._auth is None or frozen != self._frozen:  # the same keys: the same signer (a refresh: a new one)
            self._auth, self._frozen = S3SigV4Auth(frozen, "s3", self.region), frozen
        return self._auth

    async def _send(self, op: str, method: str, url: str, headers: Mapping[str, str]) -> tuple[Any, bytes, int]:
        """One request with retries: (response, body, attempts). Raises ClientError for an error status
        that is not retried (or when the attempts are spent), and botocore's transport exceptions."""
        attempt = 0
        while True:
            attempt += 1
            req = AWSRequest(method=method, url=url, headers=dict(headers))
            (await self._signer()).add_auth(req)
            try:
                resp = await self._http.send(_Wire(method, url, req.headers))
                body = await resp.content
            except _TRANSIENT:
                if attempt >= self.attempts:
                    raise
                await asyncio.sleep(self._backoff(attempt))
                continue
            status = resp.status_code
            if status < 300:
                return resp, body, attempt
            match = _CODE.search(body) if body else None
            code = match.group(1).decode("utf-8", "replace") if match else str(status)
            if (status in _RETRY_STATUS or code in _RETRY_CODES) and attempt < self.attempts:
                await asyncio.sleep(self._backoff(attempt))
                continue
            raise ClientError({"Error": {"Code": code, "Message": ""},
                               "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": attempt - 1}}, op)

    @staticmethod
    def _backoff(attempt: int) -> float:
        """botocore's exponential backoff with full jitter (base 1 s, cap 20 s)."""
        return min(_MAX_BACKOFF, random.random() * 2.0 ** (attempt - 1))

    async def list_page(self, prefix: str, token: str | None, delimiter: str | None = None,
                        start_after: str | None = None) -> tuple[ListPage, int]:
        """One ListObjectsV2 page under prefix (with ``delimiter``: its CommonPrefixes too; ``start_after``: the
        keys after that one), and the HTTP requests it took."""
        # botocore's order on the wire (SigV4 signs the sorted query, whatever the order sent).
        query = [("list-type", "2"), ("prefix", prefix), ("encoding-type", "url")]
        if token is not None:
            query.insert(1, ("continuation-token", token))
        if delimiter is not None:
            query.insert(1, ("delimiter", delimiter))
        if start_after is not None:
            query.append(("start-after", start_after))
        if PAGE_KEYS is not None:
            query.append(("max-keys", str(PAGE_KEYS)))
        qs = "&".join(f"{k}={percent_encode(v)}" for k, v in query)
        # Path addressing lists ``/bucket?...``, virtual addressing ``/?...`` (as botocore sends them).
        base = self.base_url if urlsplit(self.base_url).path else f"{self.base_url}/"
        _, body, attempts = await self._send("ListObjectsV2", "GET", f"{base}?{qs}", {})
        return parse_list_page(body), attempts

    async def head(self, key: str) -> tuple[dict[str, str], int]:
        """HeadObject with checksum mode: the response headers (lower-case names), and the requests it took."""
        url = f"{self.base_url}/{percent_encode(key, safe='/~')}"
        resp, _, attempts = await self._send("HeadObject", "HEAD", url, {"x-amz-checksum-mode": "ENABLED"})
        return dict(resp.headers), attempts
