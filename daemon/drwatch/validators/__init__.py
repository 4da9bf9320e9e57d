"""Validators: one module per kind, mapped explicitly (no import strings, no registration by side effect)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drwatch.validators.base import Validator
from drwatch.validators.immutability_probe import ImmutabilityProbeValidator
from drwatch.validators.replica import ReplicaValidator


def _replica(cfg: Any) -> Validator:
    return ReplicaValidator(cfg)


def _immutability_probe(cfg: Any) -> Validator:
    return ImmutabilityProbeValidator(cfg)


REGISTRY: dict[str, Callable[[Any], Validator]] = {
    "replica": _replica,
    "immutability_probe": _immutability_probe,
}


def build(cfg: Any) -> Validator:
    """Instantiate the validator for a validated config."""
    return REGISTRY[cfg.kind](cfg)
