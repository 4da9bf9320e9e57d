"""Nodes prove they are alive: one row per node in ``drwatch_cluster.nodes``, refreshed every heartbeat.

Liveness is judged on database time (``now() - last_seen < lease``), so host clocks do not matter. The
heartbeat also reads what the metrics show: the live nodes, each node's configuration hash and the per-node
run counters. Those land in an immutable :class:`ClusterView` that ``/metrics`` reads without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from drwatch.cluster.schema import SCHEMA

if TYPE_CHECKING:
    import asyncpg


@dataclass(frozen=True)
class NodeInfo:
    node: str
    loaded_hash: str
    active_hash: str
    age: float  # seconds since its last heartbeat (database time)
    live: bool


@dataclass(frozen=True)
class ClusterView:
    node: str
    nodes: tuple[NodeInfo, ...] = ()
    runs: dict[tuple[str, str], int] = field(default_factory=dict)  # (node, outcome) -> count

    @property
    def live(self) -> tuple[NodeInfo, ...]:
        return tuple(n for n in self.nodes if n.live)

    def agreed(self, loaded_hash: str) -> bool:
        """Every live node has loaded a configuration with this hash (this node included)."""
        live = self.live
        return any(n.node == self.node for n in live) and all(n.loaded_hash == loaded_hash for n in live)


_BEAT = f"""
INSERT INTO {SCHEMA}.nodes (node, instance, pid, started_at, last_seen, loaded_hash, active_hash)
VALUES ($1, $2, $3, now(), clock_timestamp(), $4, $5)
ON CONFLICT (node) DO UPDATE SET
  instance = excluded.instance, pid = excluded.pid, last_seen = excluded.last_seen,
  loaded_hash = excluded.loaded_hash, active_hash = excluded.active_hash,
  started_at = CASE WHEN {SCHEMA}.nodes.instance = excluded.instance THEN {SCHEMA}.nodes.started_at
                    ELSE excluded.started_at END
"""
_NODES = f"""SELECT node, loaded_hash, active_hash, extract(epoch FROM clock_timestamp() - last_seen)::float8 AS age
FROM {SCHEMA}.nodes ORDER BY node"""
_RUNS = f"SELECT node, outcome, count FROM {SCHEMA}.node_runs"


async def live_previous_owner(conn: asyncpg.Connection, node: str, instance: str, lease: float) -> bool:
    """Whether another process that calls itself ``node`` heartbeated within the lease."""
    row = await conn.fetchrow(
        f"SELECT instance, extract(epoch FROM clock_timestamp() - last_seen)::float8 AS age "
        f"FROM {SCHEMA}.nodes WHERE node = $1", node)
    return row is not None and row["instance"] != instance and float(row["age"]) < lease


async def beat(conn: asyncpg.Connection, node: str, instance: str, pid: int, loaded_hash: str,
               active_hash: str, lease: float) -> ClusterView:
    """Write this node's heartbeat, then read the cluster as the metrics show it (the connection's
    command timeout bounds each query)."""
    await conn.execute(_BEAT, node, instance, pid, loaded_hash, active_hash)
    rows = await conn.fetch(_NODES)
    counts = await conn.fetch(_RUNS)
    nodes = tuple(NodeInfo(r["node"], r["loaded_hash"], r["active_hash"], float(r["age"]), float(r["age"]) < lease)
                  for r in rows)
    return ClusterView(node, nodes, {(r["node"], r["outcome"]): int(r["count"]) for r in counts})
