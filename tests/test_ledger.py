"""The verification ledger: the pure planner and cost model, the policy's config errors, and the store's
ledger tables on both backends (real SQLite file, real PostgreSQL server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from drwatch.config import parse_config
from drwatch.errors import ConfigError
from drwatch.ledger import (
    CopySummary,
    LedgerRow,
    Totals,
    VerificationPolicy,
    composite_matches,
    daily_allowance,
    parse_size,
    select_reads,
    shortfall,
)
from drwatch.pricing import GB, PriceTable, monthly_cost
from drwatch.store import open_store
from drwatch.store.verify import LedgerBatch
from tests.helpers import basic_config


def policy(read_every: str = "30d", **budget: Any) -> VerificationPolicy:
    return VerificationPolicy.model_validate({"read_every": read_every, "budget": budget})


def test_sizes_parse_decimal_and_binary_units() -> None:
    """Budgets accept bytes or text with decimal (MB) and binary (MiB) units; nonsense is refused."""
    assert parse_size(1024) == 1024
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1.5 GiB") == int(1.5 * 2**30)
    for bad in ("-1", "12 parsecs", True, -5):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_allowance_catches_up_then_keeps_the_pace() -> None:
    """Due bytes are read at once within the budget; once all is fresh the pace total/read_every remains;
    what was read earlier today counts towards the day."""
    p = policy("10d", egress_bytes_per_day=500)
    assert daily_allowance(p, Totals(10, 1000, due_bytes=1000)) == 500  # capped by the budget
    assert daily_allowance(p, Totals(10, 1000, due_bytes=0)) == 100  # the pace
    assert daily_allowance(p, Totals(10, 1000, due_bytes=300), spent_today=100) == 400
    assert daily_allowance(policy("10d"), Totals(10, 1000, due_bytes=1000)) == 1000  # no budget


def test_select_reads_takes_least_recently_read_first_and_stops_at_the_first_misfit() -> None:
    """Rows come least recently read first; the plan stops at the first row that does not fit (a large
    object is never starved by smaller ones behind it) and charges reference reads once per key."""
    rows = [LedgerRow("a", "k1", 100, None), LedgerRow("b", "k1", 100, None), LedgerRow("a", "k2", 300, 5.0),
            LedgerRow("a", "k3", 10, 6.0)]
    plan = select_reads(rows, 250, None)
    assert list(plan.reads) == [("a", "k1"), ("b", "k1")] and plan.egress_bytes == 200
    plan = select_reads(rows, 300, None, reference_read=True)
    assert list(plan.reads) == [("a", "k1"), ("b", "k1")] and plan.egress_bytes == 300 and plan.requests == 3
    plan = select_reads(rows, None, 2)
    assert list(plan.reads) == [("a", "k1"), ("b", "k1")]


def test_shortfall_says_what_full_coverage_would_take() -> None:
    """None when the budget suffices; else the bytes and requests per day needed and the days a full read
    takes at the budget."""
    totals = Totals(objects=3000, bytes=30 * GB, due_bytes=0)
    assert shortfall(policy("30d", egress_bytes_per_day=GB), totals, 0) is None
    gap = shortfall(policy("30d", egress_bytes_per_day=GB // 2), totals, 0)
    assert gap is not None and gap.bytes_short and not gap.requests_short
    assert gap.needed_bytes_per_day == GB and gap.days_for_full_read == 60
    gap = shortfall(policy("30d", requests_per_day=150), totals, metadata_requests_per_day=100)
    assert gap is not None and gap.requests_short and gap.needed_requests_per_day == 200
    assert gap.days_for_full_read == 60  # 3000 GETs at 50 spare requests a day


def test_composite_checksums_compare_only_with_equal_part_layouts() -> None:
    """Equal composite values with the same part count prove equality; different values or part counts
    prove nothing (another layout of the same bytes), never a mismatch."""
    assert composite_matches("abc=-3", "abc=-3") is True
    assert composite_matches("abc=-3", "xyz=-3") is None
    assert composite_matches("abc=-3", "abc=-4") is None
    assert composite_matches("abc=", "abc=") is None  # full-object values are compared elsewhere


def test_monthly_cost_by_kind() -> None:
    """Storage by class (default for others), egress at the pace, requests by operation."""
    prices = PriceTable(storage_gb_month={"STANDARD": 0.023, "default": 0.01}, egress_gb=0.09,
                        requests_per_1000={"get": 0.0004, "default": 0.005})
    cost = monthly_cost(prices, {"STANDARD": 10 * GB, "GLACIER": 100 * GB}, egress_bytes_per_day=GB / 3,
                        requests_per_day={"get": 1000, "list": 10})
    assert cost["storage"] == pytest.approx(0.23 + 1.0)
    assert cost["egress"] == pytest.approx(10 * 0.09)
    assert cost["requests"] == pytest.approx(30 * 0.0004 + 0.3 * 0.005)


def _config_errors(tmp: Path, mutate: Any) -> list[tuple[str, str]]:
    cfg = basic_config(tmp)
    mutate(cfg)
    with pytest.raises(ConfigError) as exc:
        parse_config(yaml.safe_dump(cfg), str(tmp / "drwatch.yaml"))
    return [(p.path, p.message) for p in exc.value.problems]


def test_policy_and_price_table_errors_name_the_field(tmp_path: Path) -> None:
    """A wrong policy or price table is refused at load with the path of the offending field."""
    errs = _config_errors(tmp_path, lambda c: c["assets"]["data"].update(
        verification={"read_every": "12h", "budget": {"egress_bytes": 5}}))
    assert ("assets.data.verification.read_every", "read_every must be at least 1d (the budget is per day)") in errs
    assert ("assets.data.verification.budget.egress_bytes", "unknown key (not allowed here)") in errs
    errs = _config_errors(tmp_path, lambda c: c["assets"]["data"].update(
        verification={"budget": {"egress_bytes_per_day": "lots"}}))
    assert errs[0][0] == "assets.data.verification.budget.egress_bytes_per_day", errs
    errs = _config_errors(tmp_path, lambda c: c["locations"]["copy1"].update(
        pricing={"egress_gb": -1, "requests_per_1000": {"post": 1}}))
    assert {p for p, _ in errs} == {"locations.copy1.pricing.egress_gb", "locations.copy1.pricing.requests_per_1000"}
    ok = basic_config(tmp_path)
    ok["assets"]["data"]["verification"] = {"read_every": "30d", "budget": {"egress_bytes_per_day": "2GB",
                                                                           "requests_per_day": 100000}}
    ok["locations"]["copy1"]["pricing"] = {"storage_gb_month": {"default": 0.02}, "egress_gb": 0.09}
    cfg = parse_config(yaml.safe_dump(ok), str(tmp_path / "drwatch.yaml"))
    assert cfg.assets["data"].verification is not None
    assert cfg.assets["data"].verification.budget.egress_bytes_per_day == 2 * 10**9


async def test_store_ledger_tables(store_config: dict[str, Any], tmp_path: Path) -> None:
    """Both backends: batched upserts and deletes in one transaction, pages in code-point key order, the
    queue least recently read first (never read first), today's spending kept and yesterday's before it
    pruned, counters that add up, and summaries that load_state hands back."""
    cfg = parse_config(yaml.safe_dump(basic_config(tmp_path, store=store_config)), str(tmp_path / "d.yaml"))
    store = open_store(cfg)
    await store.open()
    try:
        keys = ["b/1", "B", "a", "é", "z"]
        rows = [("c1", k, 10 * (i + 1), f"etag:{i}", "STANDARD", "etag", f"{i}", 100.0,
                 None if k in ("z", "B") else 50.0 + i) for i, k in enumerate(keys)]
        await store.ledger_write(LedgerBatch("data", rows, [], day=10, egress_bytes=70, requests=3,
                                             counters={("loc", "requests:get"): 3, ("loc", "egress_bytes"): 70}))
        page = await store.ledger_page("data", "c1", "", 1000)
        assert [e.key for e in page] == sorted(keys)  # code points: "B" < "a" < "b/1" < "z" < "é"
        assert (await store.ledger_page("data", "c1", "b/1", 2))[0].key == "z"
        queue = await store.ledger_queue("data", 10, 0)
        assert [r.key for r in queue] == ["B", "z", "b/1", "a", "é"]
        totals = await store.ledger_totals("data", stale_before=52.0)
        assert totals["c1"] == Totals(5, 150, due_bytes=20 + 50 + 10)  # B, z never read; b/1 read before 52
        await store.ledger_write(LedgerBatch("data", [], [("c1", "é")], day=10, egress_bytes=30, requests=1,
                                             counters={("loc", "requests:get"): 1}))
        assert await store.ledger_spent("data", 10) == (100, 4)
        await store.ledger_write(LedgerBatch("data", [], [], day=12, egress_bytes=5, requests=1))
        assert await store.ledger_spent("data", 10) == (0, 0)  # older than yesterday: pruned
        assert await store.ledger_spent("data", 12) == (5, 1)
        base = CopySummary(location="loc", egress_bytes_per_day=7.0, requests_per_day={"get": 2.0},
                           period=100.0, computed_at=150.0)
        summary = await store.ledger_summary("data", "c1", since=52.0, base=base)
        assert summary.objects == 4 and summary.bytes == 110
        assert summary.bytes_by_evidence == {"read": 30, "checksum": 0, "etag": 110}  # "a" read at 52
        assert summary.oldest_read == 0.0  # some object was never read
        state = await store.load_state()
        assert state.verify[("data", "c1")] == summary
        assert state.verify_counters == {("loc", "requests:get"): 4, ("loc", "egress_bytes"): 70}
        assert json.loads(json.dumps(summary.to_dict())) == summary.to_dict()
    finally:
        await store.close()
