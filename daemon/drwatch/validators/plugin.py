"""What one validator kind exports: a :class:`Plugin` (its config model, its factory and, optionally, the metric
families it projects from its own results, its start-up sweep and its orphan clean-up).

``drwatch.validators.PLUGINS`` is the tuple of every kind's plugin; the config union, the list of kinds, the
registry, the per-kind metric families and the start-up sweeps are all derived from it, so that adding a kind is
one module, one test file and one line in that tuple (see docs/development.md, "How to add a validator").

A plugin's metric families are declared here as plain data (:class:`Family`) and filled by its ``project``
function from the latest stored result of each of its validators (:class:`Latest`): ``drwatch.metrics`` turns
them into Prometheus families, so nothing outside the plugin branches on its kind and no validator imports
prometheus-client (``drwatch check`` never loads it).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from drwatch.core.model import Result
from drwatch.core.sandbox import OrphanStopper
from drwatch.validators.base import Validator, ValidatorConfigBase


@dataclass(frozen=True)
class Family:
    """A gauge family a plugin fills from its results. Every sample carries the ``asset`` label first (a
    plugin's series belong to one asset each: ``/metrics`` renders and caches them asset by asset)."""

    name: str  # drwatch_ prefix, base units
    help: str
    labels: tuple[str, ...]  # bounded by the configuration ("asset" first)


class Latest(NamedTuple):
    """The latest stored result of one configured validator of the plugin's kind."""

    asset: str
    config: Any  # the plugin's own config model
    result: Result


Sample = tuple[str, tuple[str, ...], float]  # (family name, label values in the family's order, value)
Project = Callable[[Sequence[Latest]], Iterable[Sample]]
# A start-up sweep: (config, logger, budget in seconds) -> whatever it removed. Runs in the background at daemon
# start; it never raises for the systems it sweeps (a run sweeps again) and ends within the budget.
Sweep = Callable[[Any, Any, float], Coroutine[Any, Any, object]]


@dataclass(frozen=True)
class Plugin:
    """One validator kind. ``config`` is its pydantic model, whose ``kind: Literal[...]`` names the kind."""

    config: type[ValidatorConfigBase]
    factory: Callable[[Any], Validator]  # config -> validator (called once per run)
    families: tuple[Family, ...] = ()  # rendered in this order, present (maybe empty) whatever the results
    project: Project | None = None  # the samples of ``families``, from the latest results of its validators
    sweep: Sweep | None = None  # removes what crashed runs of this kind left outside this host
    orphans: OrphanStopper | None = None  # stops what a crashed run of this kind left running in its sandbox

    @property
    def kind(self) -> str:
        return kind_of(self.config)


def kind_of(model: type[ValidatorConfigBase]) -> str:
    """The value of the ``kind: Literal["..."]`` field of a validator config model."""
    field = model.model_fields["kind"]
    args = typing.get_args(field.annotation)
    if typing.get_origin(field.annotation) is not typing.Literal or len(args) != 1 or not isinstance(args[0], str):
        raise TypeError(f"{model.__name__}.kind must be a Literal of one string")
    return args[0]
