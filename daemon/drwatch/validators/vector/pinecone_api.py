"""A small Pinecone REST client on aiohttp: the calls drwatch's Pinecone restore drill needs, nothing more.

Implements Pinecone API version **2025-10** (sent as ``X-Pinecone-API-Version: 2025-10``; reference:
https://docs.pinecone.io/reference/api/2025-10/). Authentication is the ``Api-Key`` header.

Control plane (``https://api.pinecone.io``):

- ``GET /indexes``, ``GET /indexes/{name}``, ``DELETE /indexes/{name}``
- ``GET /indexes/{name}/backups`` (paged: ``limit``, ``paginationToken``; ``pagination.next``)
- ``POST /backups/{backup_id}/create-index`` (``{"name", "tags", "deletion_protection"}`` →
  ``{"restore_job_id", "index_id"}``)
- ``GET /restore-jobs`` (paged), ``GET /restore-jobs/{job_id}``

Data plane (``https://{host}`` of the index, as ``describe`` reports it):

- ``POST /describe_index_stats``, ``POST /query``, ``GET /vectors/fetch``, ``GET /vectors/list``

**Fence.** The client has no call that writes vectors, and it creates or deletes only indexes whose name
starts with :data:`TEMP_PREFIX` (anything else raises ``ValueError`` before a request is sent): the
production index is read-only to drwatch, whatever a caller does.

**Errors.** Every request has a timeout (the smaller of ``request_timeout`` and the time the caller has
left). 429 and 5xx answers, connection failures and timeouts of idempotent calls are retried with
exponential backoff (``Retry-After`` honoured, never past the caller's deadline); the create call is
retried only on 429 (the request was refused, so nothing was created). What remains is raised as
:class:`PineconeUnavailable` (a ``ValidatorError``: drwatch could not check) with a bounded ``code``:
``access_denied`` (401/403), ``throttled`` (429), ``server_error`` (5xx), ``unreachable``, ``timeout``,
``api_error`` (another 4xx), ``bad_response``; a 404 is :class:`PineconeNotFound`. The API key never
appears in an error or a log line.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from array import array
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from drwatch.core.errors import ValidatorError
from drwatch.core.secrets import redact
from drwatch.validators.vector.pinecone_model import Backup, IndexInfo, IndexStats, Match, RestoreJob, int_or_none

API_VERSION = "2025-10"
CONTROL_URL = "https://api.pinecone.io"
TEMP_PREFIX = "drwatch-drill-"  # every index drwatch creates; the only ones it may delete
_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,43}[a-z0-9])?$")  # Pinecone: lowercase, digits, '-', <= 45
FETCH_BATCH = 100  # ids per fetch request (they travel in the query string)
UPSERT_BATCH = 100  # vectors per upsert request (Pinecone: at most 1000 and 2 MB; 100 x 1536 dims is ~1.5 MB)
_PARSE_IN_THREAD = 64 * 1024  # answers larger than this are parsed in a thread (the loop never blocks)


class PineconeUnavailable(ValidatorError):
    """Pinecone could not be asked (denied, throttled, failing, unreachable, timed out)."""


class PineconeNotFound(PineconeUnavailable):
    """The index, backup or restore job does not exist (HTTP 404)."""

    def __init__(self, what: str) -> None:
        super().__init__("not_found", f"Pinecone: {what} not found")


def _fenced(name: str) -> None:
    if not name.startswith(TEMP_PREFIX) or not _NAME_RE.match(name):
        raise ValueError(f"refusing to create or delete index {name!r}: drwatch only manages {TEMP_PREFIX}* indexes")


def _transport_error(exc: BaseException, what: str, url: str) -> PineconeUnavailable:
    if isinstance(exc, TimeoutError):
        return PineconeUnavailable("timeout", f"Pinecone {what} timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return PineconeUnavailable("unreachable", f"Pinecone {what}: cannot connect to {_where(url)}")
    return PineconeUnavailable("unreachable", f"Pinecone {what}: {type(exc).__name__} from {_where(url)}")


async def _parsed(text: str, what: str, parse: Callable[[str], Any]) -> Any:
    """A successful answer's body (an empty one is ``{}``); a large one is parsed in a thread."""
    if not text.strip():
        return {}
    try:
        if len(text) > _PARSE_IN_THREAD:
            return await asyncio.to_thread(parse, text)
        return parse(text)
    except ValueError:
        raise PineconeUnavailable("bad_response", f"Pinecone {what}: answer is not JSON") from None


class PineconeClient:
    """One API key, one aiohttp session; use as ``async with`` (or close with :meth:`aclose`).

    ``remaining`` returns the seconds the caller has left (``RunContext.remaining``): no request or
    backoff outlives it.
    """

    def __init__(self, api_key: str, *, control_url: str = CONTROL_URL, api_version: str = API_VERSION,
                 request_timeout: float = 30.0, max_attempts: int = 4, backoff: float = 0.5,
                 backoff_cap: float = 20.0, remaining: Callable[[], float] | None = None) -> None:
        self._key = api_key
        self.control_url = control_url.rstrip("/")
        self.api_version = api_version
        self.request_timeout = request_timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self._remaining = remaining or (lambda: request_timeout * self.max_attempts)
        self._insecure_ok = urlsplit(self.control_url).scheme == "http"
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0  # requests sent (retries included)

    async def __aenter__(self) -> PineconeClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Api-Key": self._key, "X-Pinecone-API-Version": self.api_version,
                         "Accept": "application/json", "User-Agent": "drwatch"},
                raise_for_status=False)
        return self._session

    def data_url(self, host: str) -> str:
        """The base URL of an index's data plane. A bare host is HTTPS; an explicit ``http://`` host is
        accepted only when the control plane itself is plain HTTP (a local stand-in)."""
        if not host:
            raise PineconeUnavailable("bad_response", "Pinecone reported no host for the index")
        if "://" not in host:
            return f"https://{host.rstrip('/')}"
        scheme = urlsplit(host).scheme
        if scheme == "https" or (scheme == "http" and self._insecure_ok):
            return host.rstrip("/")
        raise PineconeUnavailable("bad_response", f"Pinecone reported an index host with scheme {scheme!r}")

    # --- transport -------------------------------------------------------------------------------

    async def _request(self, method: str, url: str, *, what: str, params: Sequence[tuple[str, str]] = (),
                       body: dict[str, Any] | None = None, idempotent: bool = True, allow_404: bool = False,
                       parse: Callable[[str], Any] = json.loads, budget: float | None = None) -> Any:
        """One call with retries. ``budget`` (seconds) replaces the caller's deadline: clean-up calls made
        after the run's deadline (deleting the temporary index) get their own bounded time."""
        last: PineconeUnavailable | None = None
        loop = asyncio.get_running_loop()
        until = None if budget is None else loop.time() + budget

        def remaining() -> float:
            return self._remaining() if until is None else until - loop.time()

        for attempt in range(self.max_attempts):
            left = remaining()
            if left <= 0:
                raise last or PineconeUnavailable("timeout", f"Pinecone {what}: no time left for the request")
            # A second past the caller's deadline: when that deadline comes first, the caller's own
            # timeout (the runner's: outcome ``timeout``) fires before this request's.
            timeout = aiohttp.ClientTimeout(total=min(self.request_timeout, left + (1.0 if until is None else 0.0)))
            retry_after: float | None = None
            try:
                status, text, retry_after = await self._send(method, url, params, body, timeout)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                last = _transport_error(exc, what, url)
                # Nothing was sent when the connection could not be made: safe to retry even a create.
                if not idempotent and not (isinstance(exc, aiohttp.ClientConnectorError)
                                           and not isinstance(exc, TimeoutError)):
                    raise last from None
            else:
                if status < 300:
                    return await _parsed(text, what, parse)
                if status == 404 and allow_404:
                    return None
                last = _error(status, text, what)
                if not (status == 429 or (status >= 500 and idempotent)):
                    raise last
            if attempt + 1 >= self.max_attempts:
                break
            delay = min(self.backoff_cap, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.backoff_cap))
            if delay >= remaining():
                break
            await asyncio.sleep(delay)
        assert last is not None
        raise last

    async def _send(self, method: str, url: str, params: Sequence[tuple[str, str]], body: dict[str, Any] | None,
                    limit: aiohttp.ClientTimeout) -> tuple[int, str, float | None]:
        """One request: (status, body text, Retry-After seconds)."""
        self.requests += 1
        async with self._http().request(method, url, params=list(params), json=body, timeout=limit) as resp:
            status = resp.status
            text = await resp.text(errors="replace")
            return status, text, _retry_after(resp.headers.get("Retry-After"))

    # --- control plane ---------------------------------------------------------------------------

    async def list_indexes(self) -> list[IndexInfo]:
        doc = await self._request("GET", f"{self.control_url}/indexes", what="list indexes")
        return [IndexInfo.from_json(d) for d in (doc or {}).get("indexes") or [] if isinstance(d, dict)]

    async def describe_index(self, name: str) -> IndexInfo | None:
        """The index, or None when it does not exist."""
        doc = await self._request("GET", f"{self.control_url}/indexes/{quote(name, safe='')}",
                                  what="describe index", allow_404=True)
        return None if doc is None else IndexInfo.from_json(doc)

    async def delete_index(self, name: str, budget: float | None = None) -> bool:
        """Delete a drwatch temporary index; False when it was already gone."""
        _fenced(name)
        doc = await self._request("DELETE", f"{self.control_url}/indexes/{quote(name, safe='')}",
                                  what="delete index", allow_404=True, budget=budget)
        return doc is not None

    async def create_index_from_backup(self, backup_id: str, name: str, tags: dict[str, str]) -> str:
        """Start restoring ``backup_id`` into a new drwatch temporary index; returns the restore job id."""
        _fenced(name)
        doc = await self._request("POST", f"{self.control_url}/backups/{quote(backup_id, safe='')}/create-index",
                                  what="create index from backup", idempotent=False,
                                  body={"name": name, "tags": tags, "deletion_protection": "disabled"})
        job = str((doc or {}).get("restore_job_id") or "")
        if not job:
            raise PineconeUnavailable("bad_response", "Pinecone create-index answered without a restore job id")
        return job

    async def create_index(self, name: str, dimension: int, metric: str, tags: dict[str, str], *,
                           cloud: str = "aws", region: str = "us-east-1") -> IndexInfo:
        """Create an empty serverless drwatch temporary index (to upsert a Parquet export into); it may not be
        ready yet (poll :meth:`describe_index`)."""
        _fenced(name)
        doc = await self._request("POST", f"{self.control_url}/indexes", what="create index", idempotent=False,
                                  body={"name": name, "dimension": int(dimension), "metric": metric, "tags": tags,
                                        "deletion_protection": "disabled", "vector_type": "dense",
                                        "spec": {"serverless": {"cloud": cloud, "region": region}}})
        if not isinstance(doc, dict):
            raise PineconeUnavailable("bad_response", "Pinecone create index answered without the index")
        return IndexInfo.from_json(doc)

    async def upsert(self, host: str, vectors: Sequence[tuple[str, Sequence[float], dict[str, Any] | None]],
                     namespace: str = "") -> int:
        """Write ``(id, values, metadata)`` into a drwatch temporary index, :data:`UPSERT_BATCH` per request
        (an upsert of the same vectors is idempotent: retried like a read); returns the count Pinecone
        reports."""
        written = 0
        for start in range(0, len(vectors), UPSERT_BATCH):
            batch = [{"id": i, "values": [float(x) for x in values], **({"metadata": meta} if meta else {})}
                     for i, values, meta in vectors[start:start + UPSERT_BATCH]]
            doc = await self._request("POST", f"{self.data_url(host)}/vectors/upsert", what="upsert",
                                      body={"vectors": batch, "namespace": namespace}) or {}
            count = int_or_none(doc.get("upsertedCount"))
            written += count if count is not None else 0
        return written

    async def _paged(self, url: str, what: str, limit: int = 100) -> AsyncIterator[dict[str, Any]]:
        token: str | None = None
        while True:
            params = [("limit", str(limit))] + ([("paginationToken", token)] if token else [])
            doc = await self._request("GET", url, params=params, what=what) or {}
            for item in doc.get("data") or []:
                if isinstance(item, dict):
                    yield item
            token = ((doc.get("pagination") or {}).get("next")) or None
            if not token:
                return

    async def list_backups(self, index: str) -> list[Backup]:
        url = f"{self.control_url}/indexes/{quote(index, safe='')}/backups"
        return [Backup.from_json(d) async for d in self._paged(url, "list backups")]

    async def list_restore_jobs(self) -> list[RestoreJob]:
        return [RestoreJob.from_json(d) async for d in self._paged(f"{self.control_url}/restore-jobs",
                                                                   "list restore jobs")]

    async def describe_restore_job(self, job_id: str) -> RestoreJob:
        doc = await self._request("GET", f"{self.control_url}/restore-jobs/{quote(job_id, safe='')}",
                                  what="describe restore job", allow_404=True)
        if doc is None:
            raise PineconeNotFound(f"restore job {job_id}")
        return RestoreJob.from_json(doc)

    # --- data plane (reads only) -----------------------------------------------------------------

    async def describe_index_stats(self, host: str) -> IndexStats:
        doc = await self._request("POST", f"{self.data_url(host)}/describe_index_stats", body={},
                                  what="describe index stats") or {}
        namespaces = {str(ns): int((v or {}).get("vectorCount", 0))
                      for ns, v in (doc.get("namespaces") or {}).items()}
        total = int_or_none(doc.get("totalVectorCount"))
        return IndexStats(total if total is not None else sum(namespaces.values()), namespaces,
                          int_or_none(doc.get("dimension")))

    async def query(self, host: str, vector: Sequence[float], top_k: int, namespace: str = "") -> list[Match]:
        doc = await self._request("POST", f"{self.data_url(host)}/query", what="query",
                                  body={"namespace": namespace, "vector": [float(x) for x in vector],
                                        "topK": int(top_k), "includeValues": False,
                                        "includeMetadata": False}) or {}
        return [Match(str(m["id"]), float(m.get("score", 0.0))) for m in doc.get("matches") or []
                if isinstance(m, dict) and "id" in m]

    async def fetch(self, host: str, ids: Sequence[str], namespace: str = "") -> dict[str, array[float]]:
        """Dense values (float32, as Pinecone stores them) of the ids that exist; missing ids are absent."""
        out: dict[str, array[float]] = {}
        for start in range(0, len(ids), FETCH_BATCH):
            params = [("ids", i) for i in ids[start:start + FETCH_BATCH]] + [("namespace", namespace)]
            part = await self._request("GET", f"{self.data_url(host)}/vectors/fetch", params=params,
                                       what="fetch", parse=_parse_fetch)
            out.update(part or {})
        return out

    async def list_ids(self, host: str, namespace: str = "", limit: int = 100) -> AsyncIterator[list[str]]:
        """Vector ids of a namespace, page by page (sorted by the server)."""
        token: str | None = None
        while True:
            params = [("namespace", namespace), ("limit", str(limit))] + \
                ([("paginationToken", token)] if token else [])
            doc = await self._request("GET", f"{self.data_url(host)}/vectors/list", params=params,
                                      what="list vectors") or {}
            yield [str(v["id"]) for v in doc.get("vectors") or [] if isinstance(v, dict) and "id" in v]
            token = ((doc.get("pagination") or {}).get("next")) or None
            if not token:
                return


def _parse_fetch(text: str) -> dict[str, array[float]]:
    doc = json.loads(text)
    vectors = doc.get("vectors") if isinstance(doc, dict) else None
    return {str(vid): array("f", (float(x) for x in vec.get("values") or []))
            for vid, vec in (vectors or {}).items() if isinstance(vec, dict)}


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _where(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def _error(status: int, text: str, what: str) -> PineconeUnavailable:
    """Map an HTTP error answer to a bounded code; Pinecone's own error code goes into the message."""
    detail = ""
    try:
        doc = json.loads(text)
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict):
            detail = f"{err.get('code', '')}: {err.get('message', '')}".strip(": ")
        elif isinstance(doc, dict) and doc.get("message"):
            detail = str(doc["message"])
    except ValueError:
        detail = text.strip()
    detail = redact(detail[:200])
    suffix = f" ({detail})" if detail else ""
    if status == 404:
        return PineconeNotFound(what.removeprefix("describe ").removeprefix("list "))
    if status in (401, 403):
        return PineconeUnavailable("access_denied", f"Pinecone {what}: HTTP {status}, access denied{suffix}")
    if status == 429:
        return PineconeUnavailable("throttled", f"Pinecone {what}: HTTP 429, rate limited{suffix}")
    if status >= 500:
        return PineconeUnavailable("server_error", f"Pinecone {what}: HTTP {status}{suffix}")
    return PineconeUnavailable("api_error", f"Pinecone {what}: HTTP {status}{suffix}")
