"""Name lookups of the dependency probes, in threads of their own.

``getaddrinfo`` holds its thread until the resolver answers or gives up (``resolv.conf``: timeout x attempts x
name servers: up to minutes), and a probe's timeout cannot stop it. asyncio runs it in the event loop's default
executor, which drwatch shares with file listings and sandbox work: a resolver that stopped answering would hold
those threads, and every validator's file work would wait behind the dependency probes (a DNS outage would look
like slow backups). Lookups here run in a small pool of their own, and:

- a lookup already waiting for the same name is joined, never asked again (a dead name server holds one thread,
  however often its names are probed);
- when every thread still waits on earlier lookups of other names, a new one is refused at once
  (:class:`LookupsBusy`): drwatch could not ask, which says nothing of that name.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

LOOKUP_THREADS = 4


class LookupsBusy(OSError):
    """Every lookup thread still waits for the resolver: this lookup was not made."""


class Lookups:
    """``getaddrinfo``/``getnameinfo`` with the signatures of the event loop's (aiohttp's resolver calls them)."""

    def __init__(self, threads: int = LOOKUP_THREADS) -> None:
        self.threads = threads
        self._guard = threading.RLock()  # a lookup answered at once calls _answered under it
        self._pool: ThreadPoolExecutor | None = None
        self._waiting: dict[tuple[Any, ...], Future[Any]] = {}

    async def getaddrinfo(self, host: str | None, port: str | int | None, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[Any]:
        result: list[Any] = await self._ask(socket.getaddrinfo, host, port, family, type, proto, flags)
        return result

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int = 0) -> tuple[str, str]:
        result: tuple[str, str] = await self._ask(socket.getnameinfo, sockaddr, flags)
        return result

    def waiting(self) -> int:
        """Lookups made and not answered yet (each holds a thread)."""
        with self._guard:
            return len(self._waiting)

    async def _ask(self, call: Callable[..., Any], *args: Any) -> Any:
        key = (call.__name__, *args)
        with self._guard:
            pending = self._waiting.get(key)
            if pending is None:
                if len(self._waiting) >= self.threads:
                    raise LookupsBusy(f"all {self.threads} name lookup threads still wait for the resolver's answer "
                                      f"to earlier lookups: not asked")
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="drwatch-lookup")
                pending = self._pool.submit(call, *args)
                self._waiting[key] = pending
                pending.add_done_callback(lambda _f: self._answered(key))
        # A waiter that gives up (its probe's timeout) leaves the lookup running for the others: never cancelled,
        # and its answer (or error) taken when it comes, so nothing is left unretrieved.
        answer = asyncio.wrap_future(pending)
        answer.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.shield(answer)

    def _answered(self, key: tuple[Any, ...]) -> None:
        with self._guard:
            self._waiting.pop(key, None)


LOOKUPS = Lookups()
