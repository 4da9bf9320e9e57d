"""The store's result chain checked while ``drwatch report`` is built, so that a report made from a tampered store
says so itself (HTML banner, JSON ``chain``, a warning on stderr and exit status 1), not only ``verify-report``.

The check is the one ``verify-report`` runs (:meth:`Store.chain_check`: every stored result re-hashed, every link
and the head compared). It runs in a child process forked before the report opens the store: re-hashing 100k
results costs some two thirds of the CPU of building their report, and beside it, not after it, it adds little
to the report's wall time where a second core is free. Where ``fork`` is not available the check runs after the
build.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import sqlite3
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from drwatch.core.errors import ValidatorError
from drwatch.store.chain import ChainCheck

MAX_PROBLEMS = 50  # listed in the report (the count is always whole; verify-report prints every one)


def summary(chain: ChainCheck) -> dict[str, Any]:
    """The report's ``chain`` member: what the check of the whole store found."""
    kinds = Counter(p.kind for p in chain.problems)
    return {"checked": True, "intact": chain.intact, "results": chain.results, "pruned": chain.pruned,
            "head": {"id": chain.head_id, "digest": chain.head}, "problems_total": len(chain.problems),
            "problem_kinds": dict(sorted(kinds.items())),
            "problems": [p.to_dict() for p in chain.problems[:MAX_PROBLEMS]]}


def _reason(exc: BaseException) -> str:
    # SQLite's and the PostgreSQL server's reasons name no password; anything else: its type only.
    return str(exc) if isinstance(exc, sqlite3.Error) or hasattr(exc, "sqlstate") else type(exc).__name__


async def check_store(cfg: Any) -> dict[str, Any]:
    from drwatch.store import open_store

    store = open_store(cfg)
    await store.open()
    try:
        return summary(await store.chain_check())
    finally:
        await store.close()


def _child(cfg: Any, conn: Connection) -> None:
    gc.disable()  # a short-lived process that frees nothing before it exits (see cli/report.py)
    try:
        conn.send(("ok", asyncio.run(check_store(cfg))))
    except Exception as exc:  # every failure goes back to the report as its reason
        conn.send(("error", _reason(exc)))
    finally:
        conn.close()


class PendingCheck:
    """A chain check started beside the report; :meth:`result` waits for it."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.process: Any = None
        self.reader: Connection | None = None
        if "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")
            self.reader, writer = ctx.Pipe(duplex=False)
            self.process = ctx.Process(target=_child, args=(cfg, writer), name="drwatch-chain-check", daemon=True)
            self.process.start()
            writer.close()  # the child's end: if the child dies, recv() ends with EOFError instead of waiting

    async def result(self) -> dict[str, Any]:
        """The ``chain`` summary; a store that cannot be read is ``store_unavailable`` (exit 69)."""
        if self.reader is None:
            try:
                return await check_store(self.cfg)
            except Exception as exc:  # as in the child: the reason, never a traceback
                raise ValidatorError("store_unavailable", f"cannot check the store's result chain: "
                                                          f"{_reason(exc)}") from None
        try:
            status, value = await asyncio.to_thread(self.reader.recv)
        except EOFError:
            await asyncio.to_thread(self.process.join, 10)
            status, value = "error", f"the chain check ended without an answer (exit {self.process.exitcode})"
        finally:
            self.reader.close()
            await asyncio.to_thread(self.process.join, 10)
        if status != "ok":
            raise ValidatorError("store_unavailable", f"cannot check the store's result chain: {value}")
        result: dict[str, Any] = value
        return result

    def cancel(self) -> None:
        """Stop the check (the report failed before it needed the answer)."""
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        if self.reader is not None:
            self.reader.close()
