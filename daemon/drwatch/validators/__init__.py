"""Validators: one module per kind, mapped explicitly (no import strings, no registration by side effect)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drwatch.validators.base import Validator
from drwatch.validators.consistency_group import ConsistencyGroupValidator
from drwatch.validators.copies.dataset import DatasetValidator
from drwatch.validators.copies.replica import ReplicaValidator
from drwatch.validators.immutability_probe import ImmutabilityProbeValidator
from drwatch.validators.model.weights import ModelWeightsValidator
from drwatch.validators.postgres.rds_snapshot import RdsSnapshotValidator
from drwatch.validators.postgres.replica_lag import PostgresReplicaLagValidator
from drwatch.validators.postgres.restore import PostgresRestoreValidator
from drwatch.validators.vector.restore import VectorRestoreValidator


def _replica(cfg: Any) -> Validator:
    return ReplicaValidator(cfg)


def _immutability_probe(cfg: Any) -> Validator:
    return ImmutabilityProbeValidator(cfg)


def _postgres_restore(cfg: Any) -> Validator:
    return PostgresRestoreValidator(cfg)


def _postgres_replica_lag(cfg: Any) -> Validator:
    return PostgresReplicaLagValidator(cfg)


def _rds_snapshot(cfg: Any) -> Validator:
    return RdsSnapshotValidator(cfg)


def _consistency_group(cfg: Any) -> Validator:
    return ConsistencyGroupValidator(cfg)


def _vector_restore(cfg: Any) -> Validator:
    return VectorRestoreValidator(cfg)


def _dataset(cfg: Any) -> Validator:
    return DatasetValidator(cfg)


def _model_weights(cfg: Any) -> Validator:
    return ModelWeightsValidator(cfg)


REGISTRY: dict[str, Callable[[Any], Validator]] = {
    "replica": _replica,
    "dataset": _dataset,
    "immutability_probe": _immutability_probe,
    "postgres_restore": _postgres_restore,
    "postgres_replica_lag": _postgres_replica_lag,
    "rds_snapshot": _rds_snapshot,
    "consistency_group": _consistency_group,
    "vector_restore": _vector_restore,
    "model_weights": _model_weights,
}


def build(cfg: Any) -> Validator:
    """Instantiate the validator for a validated config."""
    return REGISTRY[cfg.kind](cfg)
