"""Metric families of cluster mode, projected from the latest heartbeat's view (no I/O at scrape).

Every node serves the same values for every node (the view is read from the shared database), so
Prometheus may scrape any or all of them; aggregate across targets with ``max by (node, ...)``.
Labels are bounded by the number of nodes: ``node`` (a configured name), ``hash`` (one per node),
``outcome``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drwatch.cluster.heartbeat import ClusterView
from drwatch.core.model import OUTCOMES


def cluster_families(view: ClusterView) -> Iterator[Metric]:
    nodes = GaugeMetricFamily("drwatch_cluster_nodes",
                              "Live drwatch nodes in the cluster (heartbeat within the lease).")
    nodes.add_metric([], len(view.live))
    yield nodes
    info = GaugeMetricFamily("drwatch_config_hash_info",
                             "Hash of the cluster-wide configuration each live node has loaded (1); nodes with "
                             "different hashes have drifted and a reload waits for them.", labels=["node", "hash"])
    for n in view.live:
        info.add_metric([n.node, n.loaded_hash], 1)
    yield info
    runs = CounterMetricFamily("drwatch_node_runs", "Validator runs by the node that ran them and outcome "
                               "(persisted in the shared database).", labels=["node", "outcome"])
    for node in sorted({n for n, _ in view.runs} | {n.node for n in view.live}):
        for outcome in OUTCOMES:
            runs.add_metric([node, outcome], view.runs.get((node, outcome), 0))
    yield runs


class ClusterCollector(Collector):
    def __init__(self, view: Callable[[], ClusterView]) -> None:
        self._view = view

    def describe(self) -> list[Metric]:
        return []  # dynamic collector: skip the registry's duplicate check at registration

    def collect(self) -> Iterator[Metric]:
        yield from cluster_families(self._view())
