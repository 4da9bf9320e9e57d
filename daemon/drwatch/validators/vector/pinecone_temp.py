"""What every Pinecone drill shares (the backups API restore, :mod:`.pinecone`, and the Parquet export upsert,
:mod:`.pinecone_parquet`): the temporary index's name and owner tags, the sweep of orphaned temporary indexes,
the connection to the project (API key from a secret, client closed with the run, orphans swept, production's
index described), the temporary index's removal (from the run's exit stack on any failure, timeout or
cancellation, shielded and bounded) and the RTO finding."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from drwatch.core.durations import format_duration
from drwatch.core.errors import ConfigError, ValidatorError
from drwatch.core.model import Finding, Severity
from drwatch.validators.base import RunContext
from drwatch.validators.vector.config import PineconeBackend

if TYPE_CHECKING:
    from drwatch.validators.base import ConfigView
    from drwatch.validators.vector.pinecone_api import PineconeClient
    from drwatch.validators.vector.pinecone_model import IndexInfo

TEMP_PREFIX = "drwatch-drill-"  # the same as drwatch.validators.vector.pinecone_api.TEMP_PREFIX (kept import-free here)
ORPHAN_MARGIN = 300.0
REMOVE_BUDGET = 60.0  # seconds the deletion of a temporary index may take, after the run's deadline too
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

def temp_index_name(now: float) -> str:
    """``drwatch-drill-<creation time, base 36>-<8 hex>`` (29 characters; Pinecone allows 45)."""
    stamp, digits = int(now), ""
    while True:
        stamp, rem = divmod(stamp, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[rem] + digits
        if not stamp:
            break
    return f"{TEMP_PREFIX}{digits}-{secrets.token_hex(4)}"


def created_from_name(name: str) -> float | None:
    match = re.fullmatch(re.escape(TEMP_PREFIX) + r"([0-9a-z]{1,12})-[0-9a-f]{8}", name)
    return float(int(match.group(1), 36)) if match else None


def _tag(value: str) -> str:
    return _TAG_UNSAFE.sub("_", value)[:120]


def owner_tags(run_id: str) -> dict[str, str]:
    return {"drwatch_host": _tag(socket.gethostname()), "drwatch_pid": str(os.getpid()),
            "drwatch_run": _tag(run_id)}


def _owner_alive(tags: dict[str, str], created: float) -> bool:
    """The owning process runs on this host and is the one that created the index (not a reused PID)."""
    from drwatch.core.sandbox import _pid_alive, _process_start_time

    if tags.get("drwatch_host") != _tag(socket.gethostname()):
        return True  # another host's: only age tells
    try:
        pid = int(tags.get("drwatch_pid", ""))
    except ValueError:
        return False
    if pid <= 0 or not _pid_alive(pid):
        return False
    started = _process_start_time(pid)
    return started is None or started <= created + 2.0


def orphan_grace(config: ConfigView) -> float:
    """Longest timeout of any Pinecone drill in the config, plus a margin: no live run is older."""
    longest = 0.0
    for _asset, vcfg in _pinecone_validators(config):
        longest = max(longest, vcfg.effective_timeout(config))
    return (longest or config.limits.default_timeout.total_seconds()) + ORPHAN_MARGIN


def _pinecone_validators(config: ConfigView) -> list[tuple[str, Any]]:
    return [(name, v) for name, asset in config.assets.items() for v in asset.validators
            if v.kind == "vector_restore" and isinstance(getattr(v, "backend", None), PineconeBackend)]


async def sweep_project(client: PineconeClient, grace: float, now: float, log: Any = None) -> list[str]:
    """Delete this project's orphaned ``drwatch-drill-*`` indexes; returns their names."""
    removed = []
    for idx in await client.list_indexes():
        created = created_from_name(idx.name)
        if created is None:  # not a name drwatch makes: never touched
            continue
        if now - created <= grace and _owner_alive(idx.tags, created):
            continue
        if await client.delete_index(idx.name):
            removed.append(idx.name)
            if log is not None:
                log.warning("pinecone_orphan_deleted", index=idx.name, age_seconds=round(now - created))
    return removed


async def sweep_pinecone_orphans(config: ConfigView, log: Any = None, budget: float = 120.0) -> list[str]:
    """Start-up sweep for the daemon: every Pinecone project named by a ``vector_restore`` validator.

    Never raises for Pinecone or secret problems (they are logged; every run sweeps again); each project
    gets at most ``budget`` seconds.
    """
    projects: dict[tuple[str, str | None, str | None], PineconeBackend] = {}
    for _asset, vcfg in _pinecone_validators(config):
        b = vcfg.backend
        projects.setdefault((b.control_url, b.api_key_env, b.api_key_file), b)
    if not projects:
        return []
    from drwatch.core.secrets import read_secret
    from drwatch.validators.vector import pinecone_api as pc

    grace, removed = orphan_grace(config), []
    loop = asyncio.get_running_loop()
    for backend in projects.values():
        until = loop.time() + budget

        def remaining(until: float = until) -> float:
            return until - loop.time()

        try:
            key = await asyncio.to_thread(read_secret, "api_key", backend.api_key_env, backend.api_key_file,
                                          config.base_dir)
            async with pc.PineconeClient(key, control_url=backend.control_url,
                                         request_timeout=backend.request_timeout.total_seconds(),
                                         max_attempts=backend.max_attempts, remaining=remaining) as client:
                removed += await sweep_project(client, grace, time.time(), log)
        except (pc.PineconeUnavailable, ConfigError) as exc:
            if log is not None:
                log.warning("pinecone_orphan_sweep_failed", control_url=backend.control_url,
                            error=getattr(exc, "code", "secret_unavailable"))
    return removed

async def api_key(ctx: RunContext, backend: PineconeBackend) -> str:
    from drwatch.core.secrets import read_secret

    try:
        return await asyncio.to_thread(read_secret, "backend.api_key", backend.api_key_env, backend.api_key_file,
                                       ctx.config.base_dir)
    except ConfigError as exc:
        raise ValidatorError("secret_unavailable", "; ".join(str(p) for p in exc.problems)) from None

async def remove_temp(client: PineconeClient, name: str, log: Any) -> bool:
    """Delete the temporary index, shielded from cancellation and bounded; False when it could not be."""
    from drwatch.validators.vector.pinecone_api import PineconeUnavailable

    async def delete() -> bool:
        try:
            await client.delete_index(name, budget=REMOVE_BUDGET)
            return True
        except PineconeUnavailable as exc:
            log.warning("pinecone_temp_index_not_deleted", index=name, code=exc.code)
            return False

    task = asyncio.ensure_future(delete())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):  # a second cancellation stops the wait, not the delete
            await asyncio.wait_for(asyncio.shield(task), timeout=REMOVE_BUDGET)
        raise

async def temp_index_guard(client: PineconeClient, backend: PineconeBackend) -> None:
    """``cost_guard`` (error) when the project already holds ``max_temporary_indexes`` drwatch indexes."""
    temps = [i.name for i in await client.list_indexes() if i.name.startswith(TEMP_PREFIX)]
    if len(temps) >= backend.max_temporary_indexes:
        raise ValidatorError("cost_guard", f"{len(temps)} temporary drwatch indexes exist (max_temporary_indexes="
                                           f"{backend.max_temporary_indexes}): drill refused")


def rto_exceeded(ctx: RunContext, restore_seconds: float, index: str) -> list[Finding]:
    rto = ctx.asset.rto
    if rto is None or restore_seconds <= rto.total_seconds():
        return []
    return [Finding(Severity.WARNING, "rto_exceeded", f"restore took {format_duration(restore_seconds)}"
                    f" (RTO {format_duration(rto.total_seconds())})", index)]


async def connect(ctx: RunContext, backend: PineconeBackend,
                  findings: list[Finding]) -> tuple[PineconeClient, IndexInfo]:
    """The Pinecone client (closed with the run), the project swept of earlier runs' orphans, production's index
    (``production_not_found``, error, when it does not exist)."""
    from drwatch.validators.vector import pinecone_api as pc

    key = await api_key(ctx, backend)
    client = await ctx.exit_stack.enter_async_context(pc.PineconeClient(
        key, control_url=backend.control_url, request_timeout=backend.request_timeout.total_seconds(),
        max_attempts=backend.max_attempts, remaining=ctx.remaining))
    swept = await sweep_project(client, orphan_grace(ctx.config), ctx.clock(), ctx.log)
    if swept:
        findings.append(Finding(Severity.INFO, "orphans_deleted", f"deleted {len(swept)} orphaned temporary "
                                                                  "index(es) of earlier runs"))
    prod = await client.describe_index(backend.index)
    if prod is None:
        raise ValidatorError("production_not_found", f"Pinecone index {backend.index} does not exist")
    return client, prod


class TempIndex:
    """A drill's temporary index. Registered on the run's exit stack when made, before the index is created (a
    lost answer to the create still gets cleaned up): removed there on any failure, timeout or cancellation,
    unless :meth:`delete` already made its one attempt."""

    def __init__(self, ctx: RunContext, client: PineconeClient, name: str) -> None:
        self.client, self.name, self.log = client, name, ctx.log
        self.attempted = False
        ctx.exit_stack.push_async_callback(self._fallback)

    async def _fallback(self) -> None:
        if not self.attempted:
            await remove_temp(self.client, self.name, self.log)

    async def delete(self, findings: list[Finding]) -> None:
        """Delete it now; a deletion that failed is the ``temp_index_not_deleted`` warning."""
        removed = await remove_temp(self.client, self.name, self.log)
        self.attempted = True  # one attempt from here; the fallback would only repeat it
        if not removed:
            findings.append(Finding(Severity.WARNING, "temp_index_not_deleted", f"temporary index {self.name} could "
                                    "not be deleted; the next run's orphan sweep retries", self.name))
