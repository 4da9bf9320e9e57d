"""The cost of the DR posture, the pure part: the monthly cost model over a location's price table
(:class:`drwatch.storage.prices.PriceTable`) and the copies under a verification policy with their cost.

Prices are configuration, never built in: docs/verification.md lists published list prices of the big clouds as
examples to copy, with their date. One GB here is 2^30 bytes (how S3 bills), one month 30 days.

Monthly cost of one copy:

- ``storage``: bytes by storage class x ``storage_gb_month[class]`` (``default`` for classes not listed);
- ``egress``: the verification read pace of the copy (bytes per day) x 30 x ``egress_gb``;
- ``requests``: requests per day by operation (listing, HEADs of the metadata pass, GETs of the reads)
  x 30 / 1000 x ``requests_per_1000[operation]`` (``default`` for operations not listed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from drwatch.config.model import Config
from drwatch.storage.prices import PriceTable
from drwatch.validators.copies.ledger import PRODUCTION, CopySummary

GB = 2**30
MONTH_DAYS = 30
COST_KINDS = ("storage", "egress", "requests")


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


def verified_copies(cfg: Config, summaries: Mapping[tuple[str, str], CopySummary], assets: Iterable[str]
                    ) -> Iterator[tuple[str, str, CopySummary, tuple[dict[str, float], str] | None]]:
    """(asset, copy, summary, costs) of each configured copy of ``assets`` under a verification policy that has a
    ledger summary, copies in name order (production too, when it is verified against a seal: its cost is the
    verification's egress and requests, not storage). ``costs``: monthly cost by kind and the currency, when the
    copy's location has a price table."""
    for asset in assets:
        acfg = cfg.assets.get(asset)
        if acfg is None or acfg.verification is None:
            continue
        for copy in sorted({PRODUCTION, *(c.label for c in acfg.copies)}):
            summary = summaries.get((asset, copy))
            if summary is None:
                continue
            costs = copy_costs(cfg, summary)
            if costs is not None and copy == PRODUCTION:
                costs = ({k: v for k, v in costs[0].items() if k != "storage"}, costs[1])
            yield asset, copy, summary, costs
