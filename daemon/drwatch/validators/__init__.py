"""Validators: one module per kind, mapped explicitly (no import strings, no registration by side effect)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drwatch.validators.base import Validator
from drwatch.validators.replica import ReplicaValidator


def _replica(cfg: Any) -> Validator:
    return ReplicaValidator(cfg)


REGISTRY: dict[str, Callable[[Any], Validator]] = {
    "replica": _replica,
}


def build(cfg: Any) -> Validator:
    """Instantiate the validator for a validated config."""
    return REGISTRY[cfg.kind](cfg)
