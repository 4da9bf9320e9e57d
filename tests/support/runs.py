"""One validator run the way the daemon makes it: the configured store opened, its state loaded, a Runner."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from drwatch.config.model import Config
from drwatch.core.sandbox import SandboxManager
from drwatch.engine.process import ProcessState
from drwatch.engine.runner import AppState, Runner
from drwatch.state.snapshot import Snapshot
from drwatch.store import open_store


@contextlib.asynccontextmanager
async def open_runner(cfg: Config, sandbox_root: Path | None,
                      clock: Callable[[], float] = time.time) -> AsyncIterator[Runner]:
    """A Runner over ``cfg``'s store (opened, its state loaded into the AppState) with sandboxes under
    ``sandbox_root``; the runner and then the store are closed on the way out."""
    store = open_store(cfg)
    await store.open()
    try:
        state = AppState(cfg, Snapshot.from_state(cfg, await store.load_state()), ProcessState(time.time()))
        runner = Runner(state, store, SandboxManager(sandbox_root), clock)
        try:
            yield runner
        finally:
            await runner.aclose()
    finally:
        await store.close()
