"""The hash of the cluster-wide part of a configuration.

Every node loads the same file, but some sections are legitimately per node: ``cluster.node`` (its
name), ``http`` (its listen address), ``limits`` (its hardware), ``logging`` and ``reports`` (a key file).
Everything else decides what runs and how results are judged, and must be identical on every node before a
reload applies.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drwatch.config.model import Config

NODE_LOCAL = ("http", "limits", "logging", "reports")
HASH_LENGTH = 12  # hex digits shown in drwatch_config_hash_info (48 bits: collisions are not a concern)


def config_hash(cfg: Config) -> str:
    data: dict[str, Any] = cfg.model_dump(mode="json", exclude=set(NODE_LOCAL))
    data["cluster"].pop("node", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


_LAST: list[tuple[object, str]] = []  # the configuration last hashed and its hash


def cached_config_hash(cfg: Config) -> str:
    """``config_hash`` of the configuration in force, computed once per configuration object (a config is
    immutable; a reload makes a new one). Stored with every result: the hash in force when it was recorded."""
    if _LAST and _LAST[0][0] is cfg:
        return _LAST[0][1]
    value = config_hash(cfg)
    _LAST[:] = [(cfg, value)]
    return value
