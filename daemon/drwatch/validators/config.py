"""The discriminated union of validator configs (explicit list; add new validators here)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from drwatch.validators.immutability_probe import ImmutabilityProbeConfig
from drwatch.validators.postgres_replica_lag import PostgresReplicaLagConfig
from drwatch.validators.postgres_restore import PostgresRestoreConfig
from drwatch.validators.rds_snapshot import RdsSnapshotConfig
from drwatch.validators.replica import ReplicaConfig

ValidatorConfig = Annotated[ReplicaConfig | ImmutabilityProbeConfig | PostgresRestoreConfig
                            | PostgresReplicaLagConfig | RdsSnapshotConfig, Field(discriminator="kind")]
VALIDATOR_KINDS: frozenset[str] = frozenset({"replica", "immutability_probe", "postgres_restore",
                                             "postgres_replica_lag", "rds_snapshot"})
