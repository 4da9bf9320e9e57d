"""A thread with an event loop of its own, for the HTTP endpoints.

With thousands of assets the daemon's event loop is busy: runs starting and finishing, results recorded, the
scheduler firing. A request answered on that loop waits for every callback ahead of it in the loop's turn, so
scrapes and ``/-/healthy`` had tails of hundreds of milliseconds while their own work took a few. Served from
this thread, a request waits only for the GIL (released every ``sys.getswitchinterval()`` by a busy thread).
What the handlers read is shared safely: the snapshot and the config are replaced, never mutated; the
exposition and the status document are rendered in worker threads already. What must run on the daemon's loop
(a reload) is handed to it (:func:`asyncio.run_coroutine_threadsafe`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable


class LoopThread:
    """Runs ``setup`` on a new event loop in a thread, then keeps the loop running until :meth:`stop`, which
    runs ``teardown`` there and ends the thread (``asyncio.run``: tasks left are cancelled, the loop's executor
    is shut down and the loop closed)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ended: concurrent.futures.Future[None] | None = None
        self._halt: asyncio.Event | None = None
        self._halting = False

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self, setup: Callable[[], Awaitable[None]], teardown: Callable[[], Awaitable[None]]) -> None:
        """Start the thread and wait until ``setup`` returned (its exception is raised here, the thread ended)."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is running already")
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._ended = concurrent.futures.Future()
        self._halting = False
        self._thread = threading.Thread(target=self._main, args=(setup, teardown, started, self._ended),
                                        name=self.name, daemon=True)
        self._thread.start()
        try:
            await asyncio.wrap_future(started)
        except BaseException:
            await self.stop()
            raise

    def _main(self, setup: Callable[[], Awaitable[None]], teardown: Callable[[], Awaitable[None]],
              started: concurrent.futures.Future[None], ended: concurrent.futures.Future[None]) -> None:
        try:
            asyncio.run(self._serve(setup, teardown, started))
        finally:
            if not started.done():  # asyncio.run itself failed
                started.set_exception(RuntimeError(f"{self.name} ended before it started"))
            ended.set_result(None)

    async def _serve(self, setup: Callable[[], Awaitable[None]], teardown: Callable[[], Awaitable[None]],
                     started: concurrent.futures.Future[None]) -> None:
        self._halt = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        try:
            try:
                await setup()
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            if not self._halting:  # else stop() came before the loop was known: nothing will set _halt
                await self._halt.wait()
        finally:
            await teardown()

    async def stop(self) -> None:
        """Run ``teardown`` in the thread and wait (without blocking the caller's loop) for the thread to end."""
        thread, ended = self._thread, self._ended
        if thread is None or ended is None:
            return
        self._halting = True
        loop, halt = self.loop, self._halt
        if loop is not None and halt is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                loop.call_soon_threadsafe(halt.set)
        await asyncio.shield(asyncio.wrap_future(ended))
        thread.join()
        self._thread = self._ended = None
        self.loop = self._halt = None
