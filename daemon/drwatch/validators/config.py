"""The discriminated union of validator configs (explicit list; add new validators here)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from drwatch.validators.immutability_probe import ImmutabilityProbeConfig
from drwatch.validators.replica import ReplicaConfig

ValidatorConfig = Annotated[ReplicaConfig | ImmutabilityProbeConfig, Field(discriminator="kind")]
VALIDATOR_KINDS: frozenset[str] = frozenset({"replica", "immutability_probe"})
