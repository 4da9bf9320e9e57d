"""Helpers for cluster tests and the cluster benchmark: an estate of many small replicated assets (plus
slow ones whose runs take seconds), one config per node, nodes as real `drwatch run` processes, and
read-only queries of the shared database."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import signal
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from tests.support.helpers import DaemonProcess, free_port, sample_files, write_config, write_tree

DSN_ENV = "DRWATCH_CLUSTER_TEST_DSN"
SITES = ("dc-a", "dc-b", "dc-c")


@dataclass
class Estate:
    root: Path
    fast: list[str]
    slow: list[str]
    bad: list[str]
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    slow_location: dict[str, Any] | None = None  # an S3 location behind a slow proxy, for the slow assets
    env: dict[str, str] = field(default_factory=dict)  # credentials of that location

    @property
    def assets(self) -> list[str]:
        return [*self.fast, *self.slow, *self.bad]


def make_estate(root: Path, fast: int, slow: int = 0, bad: int = 0) -> Estate:
    """Production and two copies per asset, as directories under three filesystem locations.

    The second copy of a ``slow`` asset is meant to live in S3 behind a proxy that delays object reads
    (the caller uploads ``est.files[name]`` and sets ``est.slow_location``), so its runs take seconds without
    using CPU; ``bad`` assets have one byte flipped in their second copy (their `copies` rule fails)."""
    est = Estate(root, [f"a{i:03d}" for i in range(fast)], [f"slow{i}" for i in range(slow)],
                 [f"bad{i}" for i in range(bad)])
    for i, name in enumerate(est.assets):
        files = sample_files(n=3, size=512, seed=i + 1)
        est.files[name] = files
        for loc in ("prod", "copy1", "copy2"):
            if loc == "copy2" and name in est.slow:
                continue
            write_tree(root / loc / name, files)
        if name in est.bad:
            target = root / "copy2" / name / sorted(files)[0]
            data = bytearray(target.read_bytes())
            data[0] ^= 0xFF
            target.write_bytes(bytes(data))
    return est


def cluster_config(est: Estate, node: str, port: int, *, every: str = "5s", slow_every: str = "8s",
                   heartbeat: str = "1s", lease: str = "5s", poll: str = "1s", rerun_after: str = "15s",
                   max_concurrent: int = 4, enabled: bool = True, timeout: str = "60s") -> dict[str, Any]:
    locations = {loc: {"kind": "filesystem", "path": str(est.root / loc), "site": site}
                 for loc, site in zip(("prod", "copy1", "copy2"), SITES, strict=True)}
    if est.slow_location is not None:
        locations["vault"] = dict(est.slow_location)
    assets = {}
    for name in est.assets:
        second = "vault" if name in est.slow else "copy2"
        assets[name] = {
            "rpo": "30d", "rto": "1h",
            "production": {"location": "prod", "prefix": name},
            "copies": [{"location": "copy1", "prefix": name}, {"location": second, "prefix": name}],
            "validators": [{"kind": "replica", "timeout": timeout,
                            "schedule": {"every": slow_every if name in est.slow else every}}],
        }
    cfg: dict[str, Any] = {
        "store": {"postgres": {"dsn_env": DSN_ENV, "pool_max": 3}},
        "http": {"listen": f"127.0.0.1:{port}"},
        "limits": {"max_concurrent": max_concurrent, "per_location": max_concurrent, "hash_workers": 1,
                   "drain_timeout": "5s"},
        "logging": {"format": "json"},
        "compliance": {"copies": 3, "media": 1, "offsite": 0, "immutable": 0},
        "locations": locations,
        "assets": assets,
    }
    if enabled:
        cfg["cluster"] = {"enabled": True, "node": node, "heartbeat": heartbeat, "lease": lease, "poll": poll,
                          "rerun_after": rerun_after}
    return cfg


def slow_s3_copies(est: Estate, server: Any, get_delay: float) -> Any:
    """Upload the slow assets' second copies to a new bucket on ``server`` (moto) and put a proxy in front
    that delays every object GET by ``get_delay`` seconds; returns the started proxy (stop it after)."""
    from tests.support.s3helpers import bucket, upload
    from tests.support.s3proxy import RecordingProxy

    name = bucket(server, "cluster-vault")
    for asset in est.slow:
        upload(server, name, est.files[asset], prefix=f"{asset}/")
    proxy = RecordingProxy("127.0.0.1", server.port, get_delay=get_delay)
    proxy.start()
    est.slow_location = {
        "kind": "s3", "bucket": name, "endpoint_url": proxy.endpoint_url, "region": server.region,
        "addressing_style": "path", "site": SITES[2], "access_key_id_env": "DRW_CLUSTER_AK",
        "secret_access_key_env": "DRW_CLUSTER_SK", "max_attempts": 2, "connect_timeout": "5s",
        "read_timeout": "30s",
    }
    est.env = {"DRW_CLUSTER_AK": server.access_key, "DRW_CLUSTER_SK": server.secret_key}
    return proxy


@dataclass
class Node:
    name: str
    proc: DaemonProcess
    config: Path


@dataclass
class Cluster:
    """N nodes on one database: each its own config file (name, port), otherwise the same config."""

    est: Estate
    dsn: str
    workdir: Path
    options: Mapping[str, Any] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)

    def add(self, name: str, start: bool = True) -> Node:
        port = free_port()
        path = write_config(self.workdir / f"{name}.yaml", cluster_config(self.est, name, port, **self.options))
        node = Node(name, DaemonProcess(path, port, env={DSN_ENV: self.dsn, **self.est.env}), path)
        self.nodes[name] = node
        if start:
            node.proc.start(timeout=60)
        return node

    def stop_all(self) -> None:
        for node in self.nodes.values():
            proc = node.proc.proc
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            node.proc.stop(timeout=30)


def query(dsn: str, sql: str, *args: object) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args, timeout=30)]
        finally:
            await conn.close()

    return asyncio.run(go())


def results(dsn: str) -> list[dict[str, Any]]:
    """Every stored result (the result store's own table), joined with the cluster's run rows."""
    return query(dsn, "SELECT r.run_id, r.asset, r.validator, r.outcome, r.started_at, r.finished_at, "
                      "c.slot, c.node, c.due FROM results r LEFT JOIN drwatch_cluster.runs c ON c.run_id = r.run_id "
                      "ORDER BY r.asset, r.validator, r.started_at")


def overlaps(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """Pairs of runs of the same validator whose [started_at, finished_at] intervals intersect."""
    by_key: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        by_key.setdefault((r["asset"], r["validator"]), []).append(r)
    found = []
    for unordered in by_key.values():
        runs = sorted(unordered, key=lambda r: r["started_at"])
        for a, b in itertools.pairwise(runs):
            if b["started_at"] < a["finished_at"]:
                found.append((a["asset"], a["run_id"], b["run_id"]))
    return found


def duplicate_slots(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int]]:
    counts: dict[tuple[str, str, int], int] = {}
    for r in rows:
        if r["slot"] is not None:
            key = (r["asset"], r["validator"], int(r["slot"]))
            counts[key] = counts.get(key, 0) + 1
    return [(k[0], k[2], n) for k, n in counts.items() if n > 1]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def rule_states(metrics_text: str) -> dict[tuple[str, str], str]:
    """(asset, rule) -> the state whose drwatch_asset_rule_state sample is 1."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == "drwatch_asset_rule_state" and s.value == 1:
                out[(s.labels["asset"], s.labels["rule"])] = s.labels["state"]
    return out
