"""The one small interface between the daemon and the job engine of cluster mode.

The daemon starts either the single-node scheduler (no engine at all) or, with ``cluster.enabled``, an
engine through :func:`open_engine`. Runs still go through ``Runner.execute``, so results, metrics and
outcomes are the same as on one node. The engine package (pgqueuer, the ``cluster`` extra) is imported
only here, only in cluster mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from drwatch.core.errors import ValidatorError

if TYPE_CHECKING:
    from drwatch.cluster.heartbeat import ClusterView
    from drwatch.config.model import Config
    from drwatch.engine.runner import AppState, Runner


class ClusterEngine(Protocol):
    """What the daemon needs from an engine: start, a view for metrics, staged reloads, a bounded drain."""

    @property
    def view(self) -> ClusterView: ...

    async def start(self) -> None:
        """Join the cluster: install/upgrade the schema, heartbeat, enqueue due slots, take jobs."""

    def stage(self, cfg: Config) -> bool:
        """A reloaded, valid configuration. True: apply it now (it changes only node-local sections, or
        every live node has loaded the same hash). False: it waits; the engine calls ``on_agree`` (which
        reloads again) once every live node has loaded it."""

    async def drain(self, grace: float) -> None:
        """Stop taking work, wait up to ``grace`` seconds for running validators, cancel the rest."""

    async def close(self) -> None:
        """Leave the cluster (other nodes stop counting this one at once) and close connections."""


def cluster_dsn(cfg: Config) -> str:
    """The shared store's DSN (cluster mode requires ``store.postgres``; the config check enforces it)."""
    from drwatch.core.secrets import read_secret

    pg = cfg.store.postgres
    if pg is None:
        raise ValidatorError("cluster_unavailable", "cluster mode needs store: {postgres: ...}")
    return read_secret("store.postgres", env=pg.dsn_env, file=pg.dsn_file, base_dir=cfg.base_dir)


def open_engine(state: AppState, runner: Runner, dsn: str, on_agree: Callable[[], None],
                clock: Callable[[], float] = time.time) -> ClusterEngine:
    """The cluster engine (pgqueuer). A clear error when the ``cluster`` extra is not installed."""
    try:
        import pgqueuer  # noqa: F401
    except ImportError:
        from drwatch.core.extras import CLUSTER

        raise ValidatorError("cluster_unavailable",
                             f"cluster mode needs the job engine of the 'cluster' extra: {CLUSTER.install}") from None
    from drwatch.cluster.pgqueuer_engine import PgQueuerEngine

    return PgQueuerEngine(state, runner, dsn, on_agree, clock)
