"""The discriminated union of validator configs and the list of kinds, derived from the plugin tuple
(:data:`drwatch.validators.PLUGINS`: add a kind there, not here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from drwatch.validators import PLUGINS
from drwatch.validators.base import ValidatorConfigBase

if TYPE_CHECKING:
    # For the type checker every validator config is its base (a validator reads its own model after an
    # isinstance check); pydantic gets the union below, tagged by ``kind``.
    ValidatorConfig = ValidatorConfigBase
else:
    ValidatorConfig = Annotated[Union[tuple(p.config for p in PLUGINS)], Field(discriminator="kind")]  # noqa: UP007

VALIDATOR_KINDS: frozenset[str] = frozenset(p.kind for p in PLUGINS)
if len(VALIDATOR_KINDS) != len(PLUGINS):
    raise RuntimeError("two validator plugins share a kind")
