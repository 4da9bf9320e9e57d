"""The discriminated union of validator configs (explicit list; add new validators here)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from drwatch.validators.consistency_group import ConsistencyGroupValidatorConfig
from drwatch.validators.copies.dataset import DatasetConfig
from drwatch.validators.copies.replica import ReplicaConfig
from drwatch.validators.immutability_probe import ImmutabilityProbeConfig
from drwatch.validators.model.weights import ModelWeightsConfig
from drwatch.validators.postgres.rds_snapshot import RdsSnapshotConfig
from drwatch.validators.postgres.replica_lag import PostgresReplicaLagConfig
from drwatch.validators.postgres.restore import PostgresRestoreConfig
from drwatch.validators.vector.restore import VectorRestoreConfig

ValidatorConfig = Annotated[ReplicaConfig | DatasetConfig | ImmutabilityProbeConfig | PostgresRestoreConfig
                            | PostgresReplicaLagConfig | RdsSnapshotConfig | ConsistencyGroupValidatorConfig
                            | VectorRestoreConfig | ModelWeightsConfig, Field(discriminator="kind")]
VALIDATOR_KINDS: frozenset[str] = frozenset({"replica", "dataset", "immutability_probe", "postgres_restore",
                                             "postgres_replica_lag", "rds_snapshot", "consistency_group",
                                             "vector_restore", "model_weights"})
