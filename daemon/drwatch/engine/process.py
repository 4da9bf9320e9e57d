"""Live, in-memory facts about this process (not results), apart from :mod:`drwatch.metrics.collector` so that
``drwatch check`` does not import prometheus_client (tests/test_startup.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ProcessState:
    """Live, in-memory facts about this process (not results): reload status, start time."""

    started_at: float
    reload_successful: bool = True
    reload_success_at: float | None = None
    store_errors: int = 0
    results_pending: int = 0
    results_dropped: int = 0
