"""A location's price table (configuration of the location; the cost model is :mod:`drwatch.state.pricing`).

Prices are configuration, never built in: docs/verification.md lists published list prices of the big clouds as
examples to copy, with their date.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

OPERATIONS = ("list", "head", "get", "bucket")  # request operations counted (bounded label values)


class PriceTable(BaseModel):
    """``pricing: {storage_gb_month: {STANDARD: 0.023}, egress_gb: 0.09, requests_per_1000: {get: 0.0004}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = "USD"
    storage_gb_month: dict[str, float] = Field(default_factory=dict)  # storage class (or "default") -> $/GB-month
    egress_gb: float = Field(default=0.0, ge=0)
    requests_per_1000: dict[str, float] = Field(default_factory=dict)  # operation (or "default") -> $/1000

    @field_validator("storage_gb_month", "requests_per_1000")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for key, price in value.items():
            if price < 0:
                raise ValueError(f"price for {key!r} cannot be negative")
        return value

    @field_validator("requests_per_1000")
    @classmethod
    def _known_operations(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - {*OPERATIONS, "default"})
        if unknown:
            raise ValueError(f"unknown request operation(s) {unknown} (known: {', '.join(OPERATIONS)}, default)")
        return value
