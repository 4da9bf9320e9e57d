"""The cost of the DR posture, the pure part: a per-location price table and the monthly cost model.

Prices are configuration, never built in: docs/verification.md lists published list prices of the big clouds as
examples to copy, with their date. One GB here is 2^30 bytes (how S3 bills), one month 30 days.

Monthly cost of one copy:

- ``storage``: bytes by storage class x ``storage_gb_month[class]`` (``default`` for classes not listed);
- ``egress``: the verification read pace of the copy (bytes per day) x 30 x ``egress_gb``;
- ``requests``: requests per day by operation (listing, HEADs of the metadata pass, GETs of the reads)
  x 30 / 1000 x ``requests_per_1000[operation]`` (``default`` for operations not listed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from drwatch.config.model import Config
    from drwatch.validators.copies.ledger import CopySummary

GB = 2**30
MONTH_DAYS = 30
COST_KINDS = ("storage", "egress", "requests")
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


def _price(table: Mapping[str, float], key: str) -> float:
    return table.get(key, table.get("default", 0.0))


def monthly_cost(prices: PriceTable, bytes_by_class: Mapping[str, int], egress_bytes_per_day: float,
                 requests_per_day: Mapping[str, float]) -> dict[str, float]:
    """Dollars (or the table's currency) per month for one copy, by kind (storage, egress, requests)."""
    storage = sum(n / GB * _price(prices.storage_gb_month, cls) for cls, n in bytes_by_class.items())
    egress = egress_bytes_per_day * MONTH_DAYS / GB * prices.egress_gb
    requests = sum(n * MONTH_DAYS / 1000 * _price(prices.requests_per_1000, op) for op, n in requests_per_day.items())
    return {"storage": storage, "egress": egress, "requests": requests}


def copy_costs(cfg: Config, summary: CopySummary) -> tuple[dict[str, float], str] | None:
    """Monthly cost by kind and the currency, when the copy's location has a price table."""
    loc = cfg.locations.get(summary.location)
    prices = getattr(loc, "pricing", None) if loc is not None else None
    if prices is None:
        return None
    return monthly_cost(prices, summary.bytes_by_class, summary.egress_bytes_per_day,
                        summary.requests_per_day), prices.currency
