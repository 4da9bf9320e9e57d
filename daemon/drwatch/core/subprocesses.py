"""External tools as subprocesses, and cleanup steps that run to their end.

Every tool runs in its own process group (its own session), with a time limit; on timeout or cancellation
the whole group is killed (SIGKILL) and reaped before the exception propagates, so a tool's own workers
(``pg_restore -j N``, an inference server's children) never outlive a run. Nothing here blocks the event
loop: processes via ``asyncio.create_subprocess_exec``, pipes drained concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from drwatch.core.errors import ValidatorError
from drwatch.core.secrets import redact

OUTPUT_LIMIT = 64 * 1024  # bytes kept of a tool's stdout/stderr (the rest is read and dropped)
REAP_TIMEOUT = 10.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class ToolResult:
    tool: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float


async def _drain(stream: asyncio.StreamReader | None, keep: bool) -> bytes:
    """Read a pipe to its end (so the child never blocks on it), keeping at most OUTPUT_LIMIT bytes."""
    if stream is None:
        return b""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if keep and len(kept) < OUTPUT_LIMIT:
            kept += chunk[: OUTPUT_LIMIT - len(kept)]
    return bytes(kept)


async def unwind(work: Awaitable[_T], within: float) -> _T | None:
    """Run cleanup ``work`` to its end even if the caller is cancelled meanwhile (bounded by ``within`` seconds).

    A cancellation that arrives while waiting is re-raised once the work is done. Work still running after
    ``within`` seconds is left to finish in the background (its result is dropped).
    """
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    cancelled = False
    while not task.done() and (left := deadline - loop.time()) > 0:
        try:
            await asyncio.wait({task}, timeout=left)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result() if task.done() else None


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group of ``proc`` (its own session) and wait for it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await unwind(proc.wait(), REAP_TIMEOUT)


async def run_tool(argv: Sequence[str], *, env: Mapping[str, str], limit: float, run_as: str | None = None,
                   keep_stdout: bool = True, cwd: Path | None = None) -> ToolResult:
    """Run one tool to completion in its own process group; kill and reap the group on timeout/cancel.

    ``run_as`` prefixes ``runuser -u USER --`` (drwatch runs as root; PostgreSQL refuses root).
    Raises ValidatorError when the tool is missing or runs longer than ``limit`` seconds.
    """
    name = Path(argv[0]).name
    full = ["runuser", "-u", run_as, "--", *argv] if run_as else list(argv)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *full, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(env), cwd=cwd, start_new_session=True)
    except (FileNotFoundError, PermissionError) as exc:
        raise ValidatorError("tools_missing", f"cannot run {full[0]}: {exc.strerror}") from None
    try:
        async with asyncio.timeout(limit):
            out, err = await asyncio.gather(_drain(proc.stdout, keep_stdout), _drain(proc.stderr, True))
            rc = await proc.wait()
    except TimeoutError:
        await _reap(proc)
        raise ValidatorError("tool_timeout", f"{name} did not finish within {limit:.0f}s (killed)") from None
    except BaseException:
        await _reap(proc)  # cancelled (drwatch stops, the run timed out): no child outlives the run
        raise
    return ToolResult(name, rc, out.decode(errors="replace"), redact(err.decode(errors="replace")),
                      time.monotonic() - started)
