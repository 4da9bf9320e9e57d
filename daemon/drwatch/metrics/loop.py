"""``drwatch_event_loop_lag_seconds``: how late the daemon's event loop ran its heartbeat
(:class:`drwatch.engine.heartbeat.Heartbeat`), a figure of this process like the store's queue."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import HistogramMetricFamily, Metric

from drwatch.engine.heartbeat import LAG_BUCKETS, Heartbeat


class LoopLagCollector:
    def __init__(self, heartbeat: Heartbeat) -> None:
        self._heartbeat = heartbeat

    def collect(self) -> Iterator[Metric]:
        hb = self._heartbeat
        counts, lag_sum = list(hb.counts), hb.lag_sum  # written by the daemon's loop: copied once
        buckets, total = [], 0
        for le, count in zip((*LAG_BUCKETS, float("inf")), counts, strict=True):
            total += count
            buckets.append(("+Inf" if le == float("inf") else repr(le), total))
        family = HistogramMetricFamily(
            "drwatch_event_loop_lag_seconds",
            f"How late the event loop ran a callback due every {hb.interval:g} s (its heartbeat): what every timer, "
            "run and store write of this process waited for the loop.", buckets=buckets, sum_value=lag_sum)
        yield family
