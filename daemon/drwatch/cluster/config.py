"""The ``cluster:`` section: several nodes on one PostgreSQL store (see docs/scaling.md)."""

from __future__ import annotations

import re
import socket
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drwatch.core.durations import Duration

_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def default_node_name() -> str:
    """The host name up to its first dot, made a valid node name (letters, digits, '_', '.', '-')."""
    host = socket.gethostname().split(".")[0] or "node"
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", host).lstrip("_.-")[:63]
    return cleaned or "node"


class ClusterConfig(BaseModel):
    """``cluster: {enabled: true, node: NAME}``; the timings bound how fast a dead node's work moves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    node: str | None = None  # default: the host name
    heartbeat: Duration = timedelta(seconds=5)  # how often a node proves it is alive (and refreshes its view)
    lease: Duration = timedelta(seconds=30)  # a run whose node was silent this long is taken over elsewhere
    poll: Duration = timedelta(seconds=5)  # how often an idle node looks for work nobody announced
    rerun_after: Duration = timedelta(seconds=60)  # promised bound: a killed node's runs restart elsewhere
    max_attempts: Annotated[int, Field(strict=True, ge=1, le=100)] = 3  # runs of one slot that killed nodes

    @field_validator("node")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        if value is not None and not _NODE.match(value):
            raise ValueError(f"invalid node name {value!r}: use letters, digits, '_', '.', '-' "
                             "(max 63, no leading symbol)")
        return value

    @model_validator(mode="after")
    def _timings(self) -> ClusterConfig:
        if self.heartbeat < timedelta(milliseconds=100):
            raise ValueError("'heartbeat' must be at least 100ms")
        if self.poll < timedelta(milliseconds=100):
            raise ValueError("'poll' must be at least 100ms")
        if self.lease < 2 * self.heartbeat:
            raise ValueError("'lease' must be at least twice 'heartbeat' (one late heartbeat is not a death)")
        if self.lease + self.poll + self.heartbeat > self.rerun_after:
            raise ValueError("'rerun_after' cannot be kept: a dead node's run is noticed after 'lease' and "
                             "picked up within 'poll' + 'heartbeat'; raise rerun_after or lower those")
        return self

    @property
    def node_name(self) -> str:
        return self.node or default_node_name()
