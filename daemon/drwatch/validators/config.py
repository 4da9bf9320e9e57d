"""The discriminated union of validator configs (explicit list; add new validators here)."""

from __future__ import annotations

from drwatch.validators.replica import ReplicaConfig

# One entry per validator kind. With a single kind pydantic needs no discriminator; once there are
# several this becomes ``Annotated[A | B, Field(discriminator="kind")]``.
ValidatorConfig = ReplicaConfig
VALIDATOR_KINDS: frozenset[str] = frozenset({"replica"})
