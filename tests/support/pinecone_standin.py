"""A STAND-IN for Pinecone's REST API, for tests only. It is not Pinecone and does not pretend to be.

No local Pinecone server exists, so this aiohttp server implements the documented contract of the subset
of Pinecone API version 2025-10 that drwatch's client (``drwatch.validators.vector.pinecone_api``) uses, on 127.0.0.1
with
a free port, in its own thread and event loop (a real HTTP server, like the moto fixture):

- control plane: ``GET/DELETE /indexes/{name}``, ``GET/POST /indexes``, ``GET /indexes/{name}/backups``,
  ``GET /backups/{id}``, ``POST /backups/{id}/create-index``, ``GET /restore-jobs``,
  ``GET /restore-jobs/{id}``;
- data plane, under each index's ``host`` (``http://127.0.0.1:PORT/data/{name}``):
  ``POST /describe_index_stats``, ``POST /query`` (exact brute force: cosine, dotproduct, euclidean),
  ``GET /vectors/fetch``, ``GET /vectors/list`` (sorted, paged), ``POST /vectors/upsert``.

It checks the ``Api-Key`` (401 ``UNAUTHENTICATED``) and ``X-Pinecone-API-Version`` headers, answers
errors in Pinecone's ``{"error": {"code", "message"}, "status"}`` shape and refuses what Pinecone refuses
(invalid or taken index names, a backup that is not ready, deleting a protected index).

Faults, injected for real at the HTTP level: ``ready_delay`` (a restored index becomes ready late),
``restore_delay`` / ``restore_fails`` (the restore job), :meth:`fail` (the next N requests matching a path
answer 5xx/429/401...), :meth:`slow` (requests matching a path answer late), and per backup
:class:`BackupFault` (the index restored from it has perturbed or missing vectors, or degraded query
answers). ``requests`` logs every request as ``(method, path)`` so tests can prove what drwatch did.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

API_VERSION = "2025-10"
_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,43}[a-z0-9])?$")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class BackupFault:
    """How the index restored from a backup differs from the backup's content."""

    perturb: int = 0  # this many vectors get noise added to their values
    noise: float = 1e-3  # size of that noise (relative to each value's scale: absolute added)
    replace: bool = False  # perturbed vectors get entirely new random values instead of noise
    drop: int = 0  # this many vectors are missing from the restored index
    skip_rank: int | None = None  # queries on the restored index omit the match at this rank (0 = first)
    seed: int = 7


@dataclass
class StandInIndex:
    name: str
    dimension: int
    metric: str
    namespaces: dict[str, dict[str, list[float]]]
    tags: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    ready_at: float = 0.0  # monotonic
    deletion_protection: str = "disabled"
    skip_rank: int | None = None


@dataclass
class StandInBackup:
    backup_id: str
    name: str
    source_index_name: str
    dimension: int
    metric: str
    namespaces: dict[str, dict[str, list[float]]]
    created: float
    status: str = "Ready"
    fault: BackupFault | None = None


@dataclass
class StandInRestoreJob:
    job_id: str
    backup_id: str
    target: str
    created: float
    done_at: float  # monotonic
    fails: bool = False


class PineconeStandIn:
    """The stand-in server. Use :func:`pinecone_standin` (context manager) in tests."""

    def __init__(self, api_key: str = "pcsk-standin-secret-key-0001") -> None:
        self.api_key = api_key
        self.port = 0
        self.indexes: dict[str, StandInIndex] = {}
        self.backups: dict[str, StandInBackup] = {}
        self.jobs: dict[str, StandInRestoreJob] = {}
        self.requests: list[tuple[str, str]] = []
        self.ready_delay = 0.0
        self.restore_delay = 0.0
        self.restore_fails = False
        self._faults: list[list[Any]] = []  # [path substring, status, remaining count, method or None]
        self._slow: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        started = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                runner = self._runner = web.AppRunner(self._app(), access_log=None)
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", 0)
                loop.run_until_complete(site.start())
                self.port = int(runner.addresses[0][1])
            except BaseException as exc:
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="pinecone-standin", daemon=True)
        self._thread.start()
        started.wait(10)
        if errors:
            raise errors[0]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # --- seeding (test side) ---------------------------------------------------------------------

    def host(self, name: str) -> str:
        return f"{self.url}/data/{name}"

    def create_index(self, name: str, dimension: int, metric: str = "cosine",
                     vectors: Mapping[str, list[float]] | None = None, namespace: str = "",
                     deletion_protection: str = "disabled") -> None:
        with self._lock:
            self.indexes[name] = StandInIndex(name, dimension, metric, {namespace: dict(vectors or {})},
                                              deletion_protection=deletion_protection)

    def upsert(self, name: str, vectors: Mapping[str, list[float]], namespace: str = "") -> None:
        with self._lock:
            self.indexes[name].namespaces.setdefault(namespace, {}).update(vectors)

    def create_backup(self, index: str, name: str = "nightly", created: float | None = None,
                      status: str = "Ready", fault: BackupFault | None = None) -> str:
        with self._lock:
            src = self.indexes[index]
            backup_id = str(uuid.uuid4())
            self.backups[backup_id] = StandInBackup(backup_id, name, index, src.dimension, src.metric,
                                                    copy.deepcopy(src.namespaces),
                                                    time.time() if created is None else created, status, fault)
            return backup_id

    # --- faults ----------------------------------------------------------------------------------

    def fail(self, path_contains: str, status: int, times: int = 1, method: str | None = None) -> None:
        """The next ``times`` requests whose path contains ``path_contains`` answer ``status``."""
        with self._lock:
            self._faults.append([path_contains, status, times, method])

    def slow(self, path_contains: str, seconds: float) -> None:
        with self._lock:
            self._slow.append((path_contains, seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._slow.clear()

    def index_names(self) -> list[str]:
        with self._lock:
            return sorted(self.indexes)

    def requests_matching(self, method: str, path_contains: str) -> list[str]:
        with self._lock:
            return [p for m, p in self.requests if m == method and path_contains in p]

    # --- HTTP ------------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/indexes", self._list_indexes)
        r.add_post("/indexes", self._create_index)
        r.add_get("/indexes/{name}", self._describe_index)
        r.add_delete("/indexes/{name}", self._delete_index)
        r.add_get("/indexes/{name}/backups", self._list_backups)
        r.add_get("/backups/{backup_id}", self._describe_backup)
        r.add_post("/backups/{backup_id}/create-index", self._create_from_backup)
        r.add_get("/restore-jobs", self._list_jobs)
        r.add_get("/restore-jobs/{job_id}", self._describe_job)
        r.add_post("/data/{name}/describe_index_stats", self._stats)
        r.add_post("/data/{name}/query", self._query)
        r.add_get("/data/{name}/vectors/fetch", self._fetch)
        r.add_get("/data/{name}/vectors/list", self._list_vectors)
        r.add_post("/data/{name}/vectors/upsert", self._upsert)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        with self._lock:
            self.requests.append((request.method, request.path))
            delay = sum(s for p, s in self._slow if p in request.path)
            status = None
            for fault in self._faults:
                if fault[2] > 0 and fault[0] in request.path and fault[3] in (None, request.method):
                    fault[2] -= 1
                    status = int(fault[1])
                    break
        if delay:
            await asyncio.sleep(delay)
        if status is not None:
            return _error(status, "INJECTED" if status != 429 else "RESOURCE_EXHAUSTED", "injected fault")
        if request.headers.get("Api-Key") != self.api_key:
            return _error(401, "UNAUTHENTICATED", "Invalid API Key")
        if request.headers.get("X-Pinecone-API-Version") != API_VERSION:
            return _error(400, "INVALID_ARGUMENT", "unsupported or missing X-Pinecone-API-Version")
        return await handler(request)  # type: ignore[no-any-return]

    def _index_json(self, idx: StandInIndex) -> dict[str, Any]:
        ready = time.monotonic() >= idx.ready_at
        return {"name": idx.name, "dimension": idx.dimension, "metric": idx.metric, "host": self.host(idx.name),
                "deletion_protection": idx.deletion_protection, "tags": dict(idx.tags), "vector_type": "dense",
                "spec": {"serverless": {"cloud": "aws", "region": "us-east-1"}},
                "status": {"ready": ready, "state": "Ready" if ready else "Initializing"}}

    @staticmethod
    def _backup_json(b: StandInBackup) -> dict[str, Any]:
        count = sum(len(v) for v in b.namespaces.values())
        return {"backup_id": b.backup_id, "source_index_id": f"id-{b.source_index_name}",
                "source_index_name": b.source_index_name, "tags": {}, "name": b.name, "description": None,
                "status": b.status, "cloud": "aws", "region": "us-east-1", "dimension": b.dimension,
                "metric": b.metric, "record_count": count, "namespace_count": len(b.namespaces),
                "size_bytes": count * b.dimension * 4, "created_at": rfc3339(b.created)}

    def _job_json(self, j: StandInRestoreJob) -> dict[str, Any]:
        now = time.monotonic()
        status = ("Failed" if j.fails else "Completed") if now >= j.done_at else "Pending"
        doc: dict[str, Any] = {"restore_job_id": j.job_id, "backup_id": j.backup_id, "target_index_name": j.target,
                               "target_index_id": f"id-{j.target}", "status": status,
                               "created_at": rfc3339(j.created),
                               "percent_complete": 100.0 if status != "Pending" else 50.0}
        if status == "Completed":
            doc["completed_at"] = rfc3339(time.time())
        return doc

    async def _list_indexes(self, request: web.Request) -> web.Response:
        with self._lock:
            return web.json_response({"indexes": [self._index_json(i) for i in self.indexes.values()]})

    async def _create_index(self, request: web.Request) -> web.Response:
        """``POST /indexes`` (serverless): an empty index, ready after ``ready_delay``."""
        body = await request.json()
        name, dimension = str(body.get("name", "")), body.get("dimension")
        metric = str(body.get("metric") or "cosine")
        if not _NAME_RE.match(name):
            return _error(400, "INVALID_ARGUMENT", "Index name must contain only lowercase alphanumeric "
                          "characters or hyphens, and must not begin or end with a hyphen.")
        if not isinstance(dimension, int) or not 1 <= dimension <= 20000:
            return _error(400, "INVALID_ARGUMENT", "dimension must be an integer between 1 and 20000")
        if metric not in ("cosine", "dotproduct", "euclidean") or "serverless" not in (body.get("spec") or {}):
            return _error(400, "INVALID_ARGUMENT", "metric or spec is invalid")
        with self._lock:
            if name in self.indexes:
                return _error(409, "ALREADY_EXISTS", f"Resource {name} already exists")
            idx = self.indexes[name] = StandInIndex(
                name, dimension, metric, {}, tags={str(k): str(v) for k, v in (body.get("tags") or {}).items()},
                ready_at=time.monotonic() + self.ready_delay,
                deletion_protection=str(body.get("deletion_protection", "disabled")))
            return web.json_response(self._index_json(idx), status=201)

    async def _upsert(self, request: web.Request) -> web.Response:
        """``POST {host}/vectors/upsert``: values of the index's dimension, at most 1000 per request."""
        body = await request.json()
        vectors = body.get("vectors") or []
        with self._lock:
            idx = self._data_index(request)
            if isinstance(idx, web.Response):
                return idx
            if len(vectors) > 1000:
                return _error(400, "INVALID_ARGUMENT", "at most 1000 vectors per upsert")
            for v in vectors:
                values = v.get("values") or []
                if not isinstance(v.get("id"), str) or not v["id"] or len(values) != idx.dimension:
                    return _error(400, "INVALID_ARGUMENT", f"Vector dimension {len(values)} does not match the "
                                  f"dimension of the index {idx.dimension}")
            ns = idx.namespaces.setdefault(str(body.get("namespace") or ""), {})
            for v in vectors:
                ns[v["id"]] = [float(x) for x in v["values"]]
        return web.json_response({"upsertedCount": len(vectors)})

    async def _describe_index(self, request: web.Request) -> web.Response:
        with self._lock:
            idx = self.indexes.get(request.match_info["name"])
            if idx is None:
                return _error(404, "NOT_FOUND", f"Resource {request.match_info['name']} not found")
            return web.json_response(self._index_json(idx))

    async def _delete_index(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with self._lock:
            idx = self.indexes.get(name)
            if idx is None:
                return _error(404, "NOT_FOUND", f"Resource {name} not found")
            if idx.deletion_protection == "enabled":
                return _error(403, "FORBIDDEN", "Deletion protection is enabled for this index")
            del self.indexes[name]
        return web.Response(status=202)

    async def _list_backups(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with self._lock:
            if name not in self.indexes:
                return _error(404, "NOT_FOUND", f"Resource {name} not found")
            items = sorted((b for b in self.backups.values() if b.source_index_name == name),
                           key=lambda b: b.backup_id)
            return _paged(request, [self._backup_json(b) for b in items])

    async def _describe_backup(self, request: web.Request) -> web.Response:
        with self._lock:
            b = self.backups.get(request.match_info["backup_id"])
            if b is None:
                return _error(404, "NOT_FOUND", "Backup not found")
            return web.json_response(self._backup_json(b))

    async def _create_from_backup(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = str(body.get("name", ""))
        with self._lock:
            b = self.backups.get(request.match_info["backup_id"])
            if b is None:
                return _error(404, "NOT_FOUND", f"Backup {request.match_info['backup_id']} not found.")
            if not _NAME_RE.match(name):
                return _error(400, "INVALID_ARGUMENT", "Index name must contain only lowercase alphanumeric "
                              "characters or hyphens, and must not begin or end with a hyphen.")
            if name in self.indexes:
                return _error(409, "ALREADY_EXISTS", f"Resource {name} already exists")
            if b.status.lower() != "ready":
                return _error(412, "FAILED_PRECONDITION", f"Backup {b.backup_id} is not completed")
            namespaces = copy.deepcopy(b.namespaces)
            fault = b.fault
            if fault is not None:
                _apply_fault(namespaces, fault)
            now = time.monotonic()
            self.indexes[name] = StandInIndex(name, b.dimension, b.metric, namespaces,
                                              tags={str(k): str(v) for k, v in (body.get("tags") or {}).items()},
                                              ready_at=now + self.ready_delay,
                                              deletion_protection=str(body.get("deletion_protection", "disabled")),
                                              skip_rank=fault.skip_rank if fault else None)
            job = StandInRestoreJob(str(uuid.uuid4()), b.backup_id, name, time.time(), now + self.restore_delay,
                                    self.restore_fails)
            self.jobs[job.job_id] = job
        return web.json_response({"restore_job_id": job.job_id, "index_id": f"id-{name}"}, status=202)

    async def _list_jobs(self, request: web.Request) -> web.Response:
        with self._lock:
            items = sorted(self.jobs.values(), key=lambda j: j.job_id)
            return _paged(request, [self._job_json(j) for j in items])

    async def _describe_job(self, request: web.Request) -> web.Response:
        with self._lock:
            job = self.jobs.get(request.match_info["job_id"])
            if job is None:
                return _error(404, "NOT_FOUND", "Restore job not found")
            return web.json_response(self._job_json(job))

    def _data_index(self, request: web.Request) -> StandInIndex | web.Response:
        idx = self.indexes.get(request.match_info["name"])
        if idx is None:
            return _error(404, "NOT_FOUND", "index not found")
        if time.monotonic() < idx.ready_at:
            return _error(503, "UNAVAILABLE", "index is not ready")
        return idx

    async def _stats(self, request: web.Request) -> web.Response:
        with self._lock:
            idx = self._data_index(request)
            if isinstance(idx, web.Response):
                return idx
            namespaces = {ns: {"vectorCount": len(v)} for ns, v in idx.namespaces.items() if v}
            return web.json_response({"namespaces": namespaces, "dimension": idx.dimension, "indexFullness": 0.0,
                                      "totalVectorCount": sum(len(v) for v in idx.namespaces.values()),
                                      "metric": idx.metric, "vectorType": "dense"})

    async def _query(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            idx = self._data_index(request)
            if isinstance(idx, web.Response):
                return idx
            vector = [float(x) for x in body.get("vector") or []]
            if len(vector) != idx.dimension:
                return _error(400, "INVALID_ARGUMENT", f"Vector dimension {len(vector)} does not match the "
                              f"dimension of the index {idx.dimension}")
            top_k = int(body.get("topK", 10))
            items = list(idx.namespaces.get(str(body.get("namespace", "")), {}).items())
            metric, skip = idx.metric, idx.skip_rank
        scored = [(vid, _score(metric, vector, values)) for vid, values in items]
        if metric == "euclidean":
            scored.sort(key=lambda t: (t[1], t[0]))
        else:
            scored.sort(key=lambda t: (-t[1], t[0]))
        ranked = scored[:top_k + 1]
        if skip is not None and skip < len(ranked):
            del ranked[skip]
        matches = [{"id": vid, "score": score, "values": []} for vid, score in ranked[:top_k]]
        return web.json_response({"matches": matches, "namespace": body.get("namespace", ""),
                                  "usage": {"readUnits": 1}})

    async def _fetch(self, request: web.Request) -> web.Response:
        ids = request.query.getall("ids", [])
        namespace = request.query.get("namespace", "")
        with self._lock:
            idx = self._data_index(request)
            if isinstance(idx, web.Response):
                return idx
            if not ids:
                return _error(400, "INVALID_ARGUMENT", "No IDs provided")
            ns = idx.namespaces.get(namespace, {})
            vectors = {i: {"id": i, "values": list(ns[i])} for i in ids if i in ns}
        return web.json_response({"vectors": vectors, "namespace": namespace, "usage": {"readUnits": 1}})

    async def _list_vectors(self, request: web.Request) -> web.Response:
        namespace = request.query.get("namespace", "")
        prefix = request.query.get("prefix", "")
        limit = int(request.query.get("limit", "100"))
        token = request.query.get("paginationToken")
        after = base64.b64decode(token).decode() if token else None
        with self._lock:
            idx = self._data_index(request)
            if isinstance(idx, web.Response):
                return idx
            ids = sorted(i for i in idx.namespaces.get(namespace, {}) if i.startswith(prefix))
        if after is not None:
            ids = [i for i in ids if i > after]
        page = ids[:limit]
        doc: dict[str, Any] = {"vectors": [{"id": i} for i in page], "namespace": namespace,
                               "usage": {"readUnits": 1}}
        if len(ids) > limit:
            doc["pagination"] = {"next": base64.b64encode(page[-1].encode()).decode()}
        return web.json_response(doc)


def _apply_fault(namespaces: dict[str, dict[str, list[float]]], fault: BackupFault) -> None:
    rng = random.Random(fault.seed)
    ids = sorted((ns, vid) for ns, vectors in namespaces.items() for vid in vectors)
    rng.shuffle(ids)
    for ns, vid in ids[:fault.drop]:
        del namespaces[ns][vid]
    for ns, vid in ids[fault.drop:fault.drop + fault.perturb]:
        values = namespaces[ns][vid]
        if fault.replace:
            namespaces[ns][vid] = [rng.gauss(0.0, 1.0) for _ in values]
        else:
            namespaces[ns][vid] = [x + rng.choice((-1.0, 1.0)) * fault.noise for x in values]


def _score(metric: str, q: list[float], v: list[float]) -> float:
    if metric == "euclidean":
        return sum((a - b) ** 2 for a, b in zip(q, v, strict=True))
    dot = sum(a * b for a, b in zip(q, v, strict=True))
    if metric == "dotproduct":
        return dot
    norm = math.sqrt(sum(a * a for a in q)) * math.sqrt(sum(b * b for b in v))
    return dot / norm if norm else 0.0


def _paged(request: web.Request, items: list[dict[str, Any]]) -> web.Response:
    limit = int(request.query.get("limit", "10"))
    start = int(base64.b64decode(request.query["paginationToken"]).decode()) \
        if "paginationToken" in request.query else 0
    page = items[start:start + limit]
    nxt = start + limit
    pagination = {"next": base64.b64encode(str(nxt).encode()).decode()} if nxt < len(items) else None
    return web.json_response({"data": page, "pagination": pagination})


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}, "status": status}, status=status)


@contextmanager
def pinecone_standin(api_key: str = "pcsk-standin-secret-key-0001") -> Iterator[PineconeStandIn]:
    """A running stand-in; stopped on exit."""
    server = PineconeStandIn(api_key)
    server.start()
    try:
        yield server
    finally:
        server.stop()
