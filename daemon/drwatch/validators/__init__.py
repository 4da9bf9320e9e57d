"""Validators: one plugin per kind, listed explicitly in :data:`PLUGINS` (no import strings, no registration by
import side effect). Everything per kind is derived from that tuple: the config union and the list of kinds
(:mod:`drwatch.validators.config`), the registry below, the metric families each kind projects from its results
(:mod:`drwatch.metrics.collector`), the start-up sweeps (:mod:`drwatch.engine.daemon`), the orphan clean-ups of
the sandbox sweep (:data:`ORPHANS`) and the tests' lists of kinds (fault matrix, config fuzzing). Adding a kind:
docs/development.md, "How to add a validator"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drwatch.validators import consistency_group, file_freshness, immutability_probe, s3_replication
from drwatch.validators.base import Validator
from drwatch.validators.copies import dataset, replica
from drwatch.validators.dependencies import validator as recovery_dependencies
from drwatch.validators.model import weights
from drwatch.validators.plugin import Plugin
from drwatch.validators.postgres import rds_snapshot, replica_lag
from drwatch.validators.postgres import restore as postgres_restore
from drwatch.validators.redisdb import restore as redis_restore
from drwatch.validators.terraform import validator as terraform_state
from drwatch.validators.vector import restore as vector_restore

PLUGINS: tuple[Plugin, ...] = (
    replica.PLUGIN,
    dataset.PLUGIN,
    immutability_probe.PLUGIN,
    postgres_restore.PLUGIN,
    replica_lag.PLUGIN,
    rds_snapshot.PLUGIN,
    consistency_group.PLUGIN,
    vector_restore.PLUGIN,
    weights.PLUGIN,
    file_freshness.PLUGIN,
    redis_restore.PLUGIN,
    s3_replication.PLUGIN,
    terraform_state.PLUGIN,
    recovery_dependencies.PLUGIN,
)

# The plugins' orphan clean-ups (each once), for the sandbox sweep at start (engine.daemon, cli check).
ORPHANS = tuple(dict.fromkeys(p.orphans for p in PLUGINS if p.orphans is not None))

# kind -> factory (a dict tests may patch to run a probe validator in a real daemon)
REGISTRY: dict[str, Callable[[Any], Validator]] = {p.kind: p.factory for p in PLUGINS}


def build(cfg: Any) -> Validator:
    """Instantiate the validator for a validated config."""
    return REGISTRY[cfg.kind](cfg)
